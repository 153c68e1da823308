//! An in-memory [`Runtime`] for scheduler tests and simulations: jobs "run" until signalled or
//! until the exit the test scripted for them. No root, no processes, thousands of jobs per second.
//! The Runtime conformance suite (`crates/host/tests/it/runtime`) runs the same cases on it and
//! on runc, so what the scheduler learns from it (exit statuses, signals, logs, errors, what a
//! restarted agent recovers) is what it would learn from real containers.
//!
//! Scripting, by the job's args:
//! - `exit N`: exits with N after the milliseconds in `FAKE_RUN_MS` (env, default: at once);
//! - `env`: prints the environment runc would give the job, one `K=V` a line, and exits 0;
//! - `oom`: uses more memory than its limit, so the OOM killer ends it after `FAKE_RUN_MS`;
//! - `fail-start`: never starts (as a missing command on runc);
//! - anything else runs until a signal ends it.
//!
//! Output: the lines of `FAKE_STDOUT` and `FAKE_STDERR` (env, `\n`-separated) are printed at
//! start; a job given neither prints `started: ARGS`.
//!
//! Signals take their default action, as on runc where the init forwards them to the job:
//! SIGCHLD, SIGCONT, SIGURG, SIGWINCH are ignored and the stop signals stop nothing here; any
//! other ends the job with 128 + signal. `FAKE_IGNORE_TERM=1` ignores SIGTERM (then SIGKILL
//! ends it), `FAKE_TERM_EXIT=N` traps it and exits with N.

use crate::logs::LineSplitter;
use crate::runtime::{Recovered, Runtime, Started};
use crate::types::{ExitStatus, HostJob, LogLine};
use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

struct FakeJob {
    job: HostJob,
    ip: Option<Ipv4Addr>,
    exit: watch::Sender<Option<ExitStatus>>,
}

/// Log lines by job id; kept after cleanup, like the real runtime's log files.
type Logs = Arc<Mutex<HashMap<String, Vec<LogLine>>>>;

#[derive(Default)]
pub struct FakeRuntime {
    jobs: Mutex<HashMap<String, FakeJob>>,
    next_ip: Mutex<u32>,
    logs: Logs,
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
            finish(&j.exit, exit_status(&j.job, code, None));
        }
    }
}

/// How runc reports an exit: the shim adds the job's memory limit to every exit status.
fn exit_status(job: &HostJob, code: i32, signal: Option<i32>) -> ExitStatus {
    ExitStatus {
        signal,
        memory_limit: Some(job.resources.memory()),
        ..ExitStatus::code(code)
    }
}

/// Sets the exit status unless the job has already exited.
fn finish(tx: &watch::Sender<Option<ExitStatus>>, status: ExitStatus) {
    tx.send_if_modified(|e| {
        let first = e.is_none();
        if first {
            *e = Some(status);
        }
        first
    });
}

/// Appends `text` to a job's log as `stream` lines, split as the shim splits them: `text` and
/// a newline, as `echo` prints it (nothing for an empty `text`).
fn print(logs: &Logs, id: &str, stream: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    let mut split = LineSplitter::default();
    let mut emit = |l: &[u8]| {
        lines.push(LogLine {
            ts: time::OffsetDateTime::now_utc(),
            stream: stream.into(),
            msg: String::from_utf8_lossy(l).into_owned(),
        })
    };
    split.feed(text.as_bytes(), &mut emit);
    split.feed(b"\n", &mut emit);
    logs.lock()
        .expect("logs")
        .entry(id.into())
        .or_default()
        .extend(lines);
}

/// The host's hard limit of open files, which runc clamps `max_fd` to.
fn nofile_ceiling() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid rlimit we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_max
}

/// Signals whose default action does not end a process (ignore, or stop/continue).
fn survives(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, job: &HostJob) -> Result<Started> {
        crate::runc::check_id(&job.id)?;
        let args = &job.config.args;
        let verb = args.first().map(String::as_str);
        if verb == Some("fail-start") {
            bail!("fake runtime: job {} asked to fail at start", job.id);
        }
        if self.jobs.lock().expect("jobs").contains_key(&job.id) {
            bail!("job {} already exists on this host", job.id);
        }
        let ip = (!job.config.host_network).then(|| {
            let mut n = self.next_ip.lock().expect("ip");
            *n += 1;
            Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 100, 0, 1)) + *n)
        });
        let env = |k: &str| job.config.env.get(k).map(String::as_str);
        // A new job starts a new log, as runc's log dir of a cleaned-up id is gone with it.
        self.logs.lock().expect("logs").remove(&job.id);
        let mut warnings = Vec::new();
        let ceiling = nofile_ceiling();
        if job.resources.max_fd() > ceiling {
            let msg = format!(
                "max_fd {} is above the host's hard limit of open files ({ceiling}); using \
                 {ceiling}",
                job.resources.max_fd()
            );
            print(&self.logs, &job.id, "init", &format!("warning: {msg}"));
            warnings.push(msg);
        }
        match (env("FAKE_STDOUT"), env("FAKE_STDERR")) {
            (None, None) if verb != Some("env") => print(
                &self.logs,
                &job.id,
                "stdout",
                &format!("started: {}", args.join(" ")),
            ),
            (out, err) => {
                for (stream, text) in [("stdout", out), ("stderr", err)] {
                    if let Some(text) = text {
                        print(&self.logs, &job.id, stream, text);
                    }
                }
            }
        }
        let (tx, _) = watch::channel(None);
        self.jobs.lock().expect("jobs").insert(
            job.id.clone(),
            FakeJob {
                job: job.clone(),
                ip,
                exit: tx.clone(),
            },
        );
        self.started.lock().expect("started").push(job.id.clone());
        let run_ms: u64 = env("FAKE_RUN_MS").and_then(|v| v.parse().ok()).unwrap_or(0);
        let ends = match verb {
            Some("exit") => Some(exit_status(
                job,
                args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                None,
            )),
            Some("env") => {
                let vars: Vec<String> = crate::runc::spec::job_env(job)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                print(&self.logs, &job.id, "stdout", &vars.join("\n"));
                Some(exit_status(job, 0, None))
            }
            // The OOM killer ends the job's process; the init reports it as 128 + SIGKILL.
            Some("oom") => Some(ExitStatus {
                oom_killed: true,
                ..exit_status(job, 128 + libc::SIGKILL, None)
            }),
            _ => None,
        };
        if let Some(status) = ends {
            let (logs, id) = (self.logs.clone(), job.id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(run_ms)).await;
                if status.oom_killed && tx.borrow().is_none() {
                    let msg =
                        format!("FATAL: the job was {status}: it used all the memory it may use");
                    print(&logs, &id, "init", &msg);
                }
                finish(&tx, status);
            });
        }
        Ok(Started {
            ip,
            pid: None,
            warnings,
        })
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let jobs = self.jobs.lock().expect("jobs");
        let Some(j) = jobs.get(id) else {
            bail!("no running job {id}");
        };
        if j.exit.borrow().is_some() {
            bail!("could not signal job {id}: it has exited");
        }
        let env = |k: &str| j.job.config.env.get(k).map(String::as_str);
        let status = match signal {
            // Sent to the init itself, which cannot catch it.
            libc::SIGKILL => exit_status(&j.job, 128 + signal, Some(signal)),
            _ if survives(signal) => return Ok(()),
            libc::SIGTERM if env("FAKE_IGNORE_TERM") == Some("1") => return Ok(()),
            libc::SIGTERM if env("FAKE_TERM_EXIT").is_some() => exit_status(
                &j.job,
                env("FAKE_TERM_EXIT")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                None,
            ),
            // The init forwards the signal, the job dies of it, the init exits 128 + signal.
            _ => exit_status(&j.job, 128 + signal, None),
        };
        finish(&j.exit, status);
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
            .iter()
            .map(|(id, j)| {
                let rec = match j.exit.borrow().clone() {
                    Some(status) => Recovered::Exited(status),
                    None => Recovered::Running { ip: j.ip },
                };
                (id.clone(), rec)
            })
            .collect())
    }

    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, LogLine> {
        let exit = follow
            .then(|| {
                let jobs = self.jobs.lock().expect("jobs");
                jobs.get(id).map(|j| j.exit.subscribe())
            })
            .flatten();
        let (logs, id) = (self.logs.clone(), id.to_string());
        // Lines are written before the exit is set, so once the exit is seen, every line is.
        Box::pin(futures_util::stream::unfold(
            (0usize, exit),
            move |(i, mut exit)| {
                let (logs, id) = (logs.clone(), id.clone());
                async move {
                    loop {
                        let exited = exit.as_ref().is_none_or(|rx| rx.borrow().is_some());
                        let line = logs
                            .lock()
                            .expect("logs")
                            .get(&id)
                            .and_then(|l| l.get(i).cloned());
                        if let Some(line) = line {
                            return Some((line, (i + 1, exit)));
                        }
                        if exited {
                            return None;
                        }
                        let rx = exit.as_mut().expect("not exited");
                        if rx.changed().await.is_err() {
                            // Cleaned up while followed: it has ended.
                            exit = None;
                        }
                    }
                }
            },
        ))
    }

    fn forget(&self, id: &str) {
        self.logs.lock().expect("logs").remove(id);
    }

    async fn teardown(&self) -> Result<()> {
        Ok(())
    }
}
