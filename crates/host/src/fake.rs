//! An in-memory [`Runtime`] for scheduler tests and simulations: jobs "run" until signalled or
//! until the exit the test scripted for them. No root, no processes, thousands of jobs per second.
//!
//! Scripting: a job whose first arg is `exit` exits with the code in its second arg after the
//! milliseconds in `FAKE_RUN_MS` (env, default: immediately); `fail-start` never starts.
//! Any other job runs until it gets a signal: SIGTERM/SIGINT/SIGKILL end it with 128 + signal,
//! unless its env has `FAKE_IGNORE_TERM=1` (then only SIGKILL does).

use crate::runtime::{Recovered, Runtime, Started};
use crate::types::{ExitStatus, HostJob, LogLine};
use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use tokio::sync::watch;

struct FakeJob {
    job: HostJob,
    exit: watch::Sender<Option<ExitStatus>>,
}

#[derive(Default)]
pub struct FakeRuntime {
    jobs: Mutex<HashMap<String, FakeJob>>,
    next_ip: Mutex<u32>,
    /// Kept after cleanup, like the real runtime's log files.
    logs: Mutex<HashMap<String, Vec<LogLine>>>,
    /// Ids of jobs started so far, in order (for assertions).
    pub started: Mutex<Vec<String>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of jobs holding resources (started, not cleaned up).
    pub fn live(&self) -> usize {
        self.jobs.lock().expect("jobs").len()
    }
    /// Makes a running job exit with `code` (a crash, as seen by the scheduler).
    pub fn exit(&self, id: &str, code: i32) {
        if let Some(j) = self.jobs.lock().expect("jobs").get(id) {
            j.exit.send_if_modified(|e| {
                if e.is_none() {
                    *e = Some(ExitStatus::code(code));
                    true
                } else {
                    false
                }
            });
        }
    }
}

fn line(msg: String) -> LogLine {
    LogLine {
        ts: time::OffsetDateTime::now_utc(),
        stream: "stdout".into(),
        msg,
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, job: &HostJob) -> Result<Started> {
        let args = &job.config.args;
        if args.first().map(String::as_str) == Some("fail-start") {
            bail!("fake runtime: job {} asked to fail at start", job.id);
        }
        let ip = {
            let mut n = self.next_ip.lock().expect("ip");
            *n += 1;
            Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 100, 0, 1)) + *n)
        };
        let (tx, _) = watch::channel(None);
        {
            let mut jobs = self.jobs.lock().expect("jobs");
            if jobs.contains_key(&job.id) {
                bail!("job {} already exists on this host", job.id);
            }
            jobs.insert(
                job.id.clone(),
                FakeJob {
                    job: job.clone(),
                    exit: tx.clone(),
                },
            );
        }
        self.logs.lock().expect("logs").insert(
            job.id.clone(),
            vec![line(format!("started: {}", args.join(" ")))],
        );
        self.started.lock().expect("started").push(job.id.clone());
        if args.first().map(String::as_str) == Some("exit") {
            let code = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let ms: u64 = job
                .config
                .env
                .get("FAKE_RUN_MS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                tx.send_if_modified(|e| {
                    let first = e.is_none();
                    if first {
                        *e = Some(ExitStatus::code(code));
                    }
                    first
                });
            });
        }
        Ok(Started {
            ip: (!job.config.host_network).then_some(ip),
            pid: None,
            warnings: vec![],
        })
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let jobs = self.jobs.lock().expect("jobs");
        let Some(j) = jobs.get(id) else {
            bail!("no running job {id}");
        };
        let ignores = j.job.config.env.get("FAKE_IGNORE_TERM").map(String::as_str) == Some("1");
        let fatal = match signal {
            libc::SIGKILL => true,
            libc::SIGTERM | libc::SIGINT => !ignores,
            _ => false,
        };
        if fatal {
            j.exit.send_if_modified(|e| {
                let first = e.is_none();
                if first {
                    *e = Some(ExitStatus {
                        code: 128 + signal,
                        signal: Some(signal),
                        ..ExitStatus::code(0)
                    });
                }
                first
            });
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let mut rx = {
            let jobs = self.jobs.lock().expect("jobs");
            let Some(j) = jobs.get(id) else {
                bail!("no running job {id}");
            };
            j.exit.subscribe()
        };
        let st = rx.wait_for(|e| e.is_some()).await?;
        Ok(st.clone().expect("set"))
    }

    async fn cleanup(&self, id: &str) -> Result<()> {
        self.jobs.lock().expect("jobs").remove(id);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<(String, Recovered)>> {
        let jobs = self.jobs.lock().expect("jobs");
        Ok(jobs
            .keys()
            .map(|id| (id.clone(), Recovered::Running { ip: None }))
            .collect())
    }

    fn logs(&self, id: &str, _follow: bool) -> BoxStream<'static, LogLine> {
        let lines = self
            .logs
            .lock()
            .expect("logs")
            .get(id)
            .cloned()
            .unwrap_or_default();
        Box::pin(futures_util::stream::iter(lines))
    }

    fn forget(&self, id: &str) {
        self.logs.lock().expect("logs").remove(id);
    }

    async fn teardown(&self) -> Result<()> {
        Ok(())
    }
}
