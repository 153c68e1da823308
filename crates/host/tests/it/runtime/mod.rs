//! The Runtime conformance suite: every case runs on real runc and on the fake runtime, so the
//! fake that the scheduler tests and the simulation use behaves as runc does (exit statuses,
//! signals, logs, errors, what a restarted agent recovers). A case describes what its job's
//! program does ([`Prog`]); each backend turns that into a command it runs: a busybox command
//! line on runc, the fake's scripting (`slipway_host::fake`) on the fake.

mod cases;

use crate::harness::{Names, busybox, job};
use slipway_host::HostJob;
use slipway_host::fake::FakeRuntime;
use slipway_host::runc::RuncRuntime;
use slipway_host::runtime::Runtime;
use std::path::Path;
use std::sync::Arc;

/// What a job's program does.
pub enum Prog<'a> {
    /// Exits with `code` after `ms` milliseconds.
    Exit { code: i32, ms: u64 },
    /// Runs until a signal ends it; every signal has its default action. Prints `ready`.
    Serve,
    /// Ignores SIGTERM; prints `ready` once it does.
    IgnoreTerm,
    /// Exits with the code on SIGTERM; prints `ready` once it traps it.
    TrapTerm(i32),
    /// Prints lines to stdout and stderr, then exits with `code` after `ms`.
    Print {
        out: &'a [&'a str],
        err: &'a [&'a str],
        ms: u64,
        code: i32,
    },
    /// Prints its environment (`env`, on both).
    Env,
    /// Takes memory until the OOM killer stops it.
    Oom,
    /// A command that does not exist.
    Missing,
}

enum Kind {
    Fake(Arc<FakeRuntime>),
    Runc {
        names: Names,
        dir: tempfile::TempDir,
    },
}

/// A runtime under test and what a restart of its agent needs.
pub struct Backend {
    pub rt: Arc<dyn Runtime>,
    kind: Kind,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl Backend {
    pub fn fake() -> Backend {
        let fake = Arc::new(FakeRuntime::new());
        Backend {
            rt: fake.clone(),
            kind: Kind::Fake(fake),
        }
    }

    pub async fn runc() -> Backend {
        busybox();
        let dir = tempfile::Builder::new()
            .prefix("slipway-runtime-suite")
            .tempdir()
            .unwrap();
        let names = Names::new();
        let rt = open_runc(&names, dir.path()).await;
        Backend {
            rt,
            kind: Kind::Runc { names, dir },
        }
    }

    pub fn is_runc(&self) -> bool {
        matches!(self.kind, Kind::Runc { .. })
    }

    /// The runtime a restarted agent gets: a new `RuncRuntime` over the same data dir; the
    /// fake's containers live in the fake itself, which outlives the agent.
    pub async fn reopen(&self) -> Arc<dyn Runtime> {
        match &self.kind {
            Kind::Fake(f) => f.clone(),
            Kind::Runc { names, dir } => open_runc(names, dir.path()).await,
        }
    }

    /// The runtime's data dir (runc only).
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Fake(_) => None,
            Kind::Runc { dir, .. } => Some(dir.path()),
        }
    }

    /// A job (unique id starting with `prefix`) running `prog` on this backend.
    pub fn job(&self, prefix: &str, prog: Prog) -> HostJob {
        let runc = self.is_runc();
        let mut j = job(prefix, &[]);
        let env = &mut j.config.env;
        let sh = |script: String| vec!["sh".to_string(), "-c".into(), script];
        let args: Vec<String> = match prog {
            Prog::Exit { code, ms } if runc => sh(format!("sleep {}; exit {code}", secs(ms))),
            Prog::Exit { code, ms } => {
                env.insert("FAKE_RUN_MS".into(), ms.to_string());
                vec!["exit".into(), code.to_string()]
            }
            // `ready` once the init's child runs: a signal sent earlier may be lost on runc
            // (the init forwards it to the child's process group, which may not exist yet).
            Prog::Serve if runc => sh("echo ready; exec sleep 1000".into()),
            Prog::Serve => {
                env.insert("FAKE_STDOUT".into(), "ready".into());
                vec!["serve".into()]
            }
            Prog::IgnoreTerm if runc => {
                sh("trap '' TERM; echo ready; while true; do sleep 0.1; done".into())
            }
            Prog::IgnoreTerm => {
                env.insert("FAKE_IGNORE_TERM".into(), "1".into());
                env.insert("FAKE_STDOUT".into(), "ready".into());
                vec!["serve".into()]
            }
            Prog::TrapTerm(code) if runc => sh(format!(
                "trap 'exit {code}' TERM; echo ready; while true; do sleep 0.1; done"
            )),
            Prog::TrapTerm(code) => {
                env.insert("FAKE_TERM_EXIT".into(), code.to_string());
                env.insert("FAKE_STDOUT".into(), "ready".into());
                vec!["serve".into()]
            }
            Prog::Print { out, err, ms, code } if runc => {
                let mut script = String::new();
                for l in out {
                    script += &format!("echo {}; ", shell_quote(l));
                }
                for l in err {
                    script += &format!("echo {} >&2; ", shell_quote(l));
                }
                sh(format!("{script}sleep {}; exit {code}", secs(ms)))
            }
            Prog::Print { out, err, ms, code } => {
                env.insert("FAKE_STDOUT".into(), out.join("\n"));
                env.insert("FAKE_STDERR".into(), err.join("\n"));
                env.insert("FAKE_RUN_MS".into(), ms.to_string());
                vec!["exit".into(), code.to_string()]
            }
            Prog::Env => vec!["env".into()],
            Prog::Oom if runc => sh("x=0123456789; while true; do x=$x$x; done".into()),
            Prog::Oom => vec!["oom".into()],
            Prog::Missing if runc => vec!["/no/such/binary".into()],
            Prog::Missing => vec!["fail-start".into()],
        };
        j.config.args = args;
        j
    }
}

async fn open_runc(names: &Names, dir: &Path) -> Arc<dyn Runtime> {
    let rc = names.runc_config(dir);
    let rt = tokio::task::spawn_blocking(move || RuncRuntime::new(rc))
        .await
        .unwrap()
        .expect("starting the runc runtime");
    Arc::new(rt)
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Kind::Runc { names, dir } = &self.kind {
            names.destroy(dir.path());
        }
    }
}

/// One named test per case per runtime: `runtime::fake::CASE` and `runtime::runc::CASE` (the
/// latter needs root, and is a counted skip without it).
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod fake {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = super::Backend::fake();
                    super::cases::$case(&b).await;
                }
            )*
        }
        mod runc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if crate::harness::skip_unless_root(concat!("runtime::runc::", stringify!($case))) {
                        return;
                    }
                    let b = super::Backend::runc().await;
                    super::cases::$case(&b).await;
                }
            )*
        }
    };
}

conformance!(
    exit_codes_are_reported,
    sigterm_ends_a_plain_job_with_143,
    sigterm_right_after_start_is_not_lost,
    sigkill_is_reported_as_the_signal,
    other_signals_take_their_default_action,
    an_ignored_sigterm_leaves_the_job_running_until_sigkill,
    a_trapped_sigterm_exits_with_the_traps_code,
    stdout_and_stderr_are_captured_apart,
    long_lines_are_split,
    follow_ends_only_when_the_job_exits,
    the_job_sees_its_env,
    a_job_past_its_memory_limit_is_oom_killed,
    every_exit_reports_the_memory_limit,
    max_fd_above_the_host_limit_is_clamped_with_a_warning,
    signalling_a_finished_job_is_an_error,
    wait_reports_the_same_exit_every_time,
    bad_ids_are_refused_and_leave_nothing,
    a_second_job_with_the_same_id_is_refused,
    a_failed_start_holds_nothing_and_frees_the_id,
    jobs_get_their_own_ips_unless_on_the_host_network,
    a_restarted_runtime_recovers_running_and_exited_jobs,
    unknown_jobs_are_errors,
);
