//! Host-level job types: what the scheduler (or a debugging command) hands to a host agent, and
//! what the agent reports back. They are deliberately independent of `slipway-types`'s shapes so
//! the host layer can be used and tested on its own (only shared rules, such as the disk limit's
//! bounds, come from there); the scheduler maps its `Job` onto [`HostJob`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Flynn's default memory limit: 1 GiB.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default size of a job's writable layer (its disk limit): 1 GiB.
pub const DEFAULT_DISK: u64 = 1 << 30;
/// The disk limit's bounds are the API's: one rule, so a limit `slipway limit set` accepts is one
/// the agent runs. (The image is sparse, but its metadata grows with its size.)
pub use slipway_types::{MAX_DISK, MIN_DISK};
/// Flynn's default CPU: 1000 milli-CPU (= 1024 shares).
pub const DEFAULT_CPU_MILLI: u64 = 1000;
/// Flynn's default `max_fd`.
pub const DEFAULT_MAX_FD: u64 = 10_000;
/// A fork bomb must not take the host down, so jobs get a pids limit (processes and threads)
/// unless they ask otherwise. Heroku gives 256 to a 512 MB dyno and 512 to a 1 GB one; the
/// default job has 1 GiB. The agent also caps all jobs together (`--jobs-max-procs`).
pub const DEFAULT_MAX_PROCS: i64 = 512;
/// The uid and gid a job on a stack runs as when it names no user: the build's user, who owns
/// the slug's `/app` (as on Heroku, where the slug's files belong to the dyno's user).
pub const DEFAULT_JOB_UID: u32 = 1000;
/// Flynn's (and Heroku's) stop grace period.
pub const DEFAULT_STOP_GRACE_MS: u64 = 30_000;
/// Port a web process listens on when nothing else is asked.
pub const DEFAULT_WEB_PORT: u16 = 8080;

/// A job as the host sees it: everything needed to run one container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostJob {
    /// Unique job id; also the runc container id, so `[A-Za-z0-9_.-]` only.
    pub id: String,
    /// App/release/process metadata; exported into the environment as `SLIPWAY_*`.
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub app_name: String,
    #[serde(default)]
    pub release_id: String,
    #[serde(default)]
    pub process_type: String,
    /// Free-form metadata, kept with the job and shown by `ps`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub config: JobConfig,
    #[serde(default)]
    pub resources: Resources,
}

/// How the container's process runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobConfig {
    pub args: Vec<String>,
    /// Release env, then process env (later entries win).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Stack name (resolved in the stacks dir only; never a path): the bottom layer.
    pub stack: String,
    /// Artifact layers (directories), bottom first; mounted read-only above the stack.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// Share the host's network namespace instead of getting an own IP.
    #[serde(default)]
    pub host_network: bool,
    /// Only the host (router, health checks) and jobs of the same app (`app_id`) may connect
    /// to this job: the app is network-isolated (app meta `network=isolated`). Default: the flat
    /// network, where every job reaches every other (Flynn's: apps reach resources such as
    /// databases that run as other apps).
    #[serde(default)]
    pub isolated: bool,
    /// Ports the job listens on. The first one is exported as `PORT`.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Time between SIGTERM and SIGKILL when the job is stopped.
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
    /// Bind-mount the host CA bundle and point pip/npm/openssl at it (needed for HTTPS here).
    #[serde(default = "yes")]
    pub ca_bundle: bool,
    /// Blob-store layers (slugs, image layers), bottom first: the agent fetches each once into
    /// its layer cache (by digest) and mounts it read-only above the stack, below `layers`.
    #[serde(default)]
    pub layer_refs: Vec<LayerRef>,
    /// Host directories bind-mounted into the container (a build's source, cache and env dirs).
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// Directories that come from (and go back to) the blob store, so the job can run on any
    /// host: see [`crate::job_files`]. A host without a blob store refuses a job naming any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<JobFiles>,
    /// User to run as, resolved in the container's rootfs: `name`, `uid`, `name:group` or
    /// `uid:gid` (an image's `User`). `uid`/`gid`, when set, win.
    #[serde(default)]
    pub user: Option<String>,
    /// An attached one-off job (`slipway run`): its stdin (or a pty) and output are served on
    /// the attach socket (see [`crate::attach`]). `None`: stdin is `/dev/null`.
    #[serde(default)]
    pub attach: Option<crate::attach::AttachConfig>,
}

/// A layer in the blob store. Compression (none, gzip, zstd) is detected from the content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRef {
    /// `sha256:<hex>`: the blob's digest, which the agent verifies while fetching.
    pub digest: String,
}

/// A directory of the job that the host fills from the blob store before it starts and, if
/// `collect`, packs back into the blob store after it exits ([`crate::job_files`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobFiles {
    /// Absolute path inside the container.
    pub target: String,
    /// `sha256:<hex>` of a tarball (plain, gzip or zstd) unpacked there; `None`: it starts empty.
    #[serde(default)]
    pub from: Option<String>,
    /// Pack it after the job exits and report its digest in [`JobInfo::outputs`].
    #[serde(default)]
    pub collect: bool,
    #[serde(default)]
    pub readonly: bool,
    /// Its own filesystem of this size; `None`: it shares one of the job's disk limit with the
    /// job's other entries.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

fn yes() -> bool {
    true
}

impl JobConfig {
    /// A job running `args` on `stack` with every other setting at its default.
    pub fn new(stack: &str, args: &[&str]) -> Self {
        JobConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            uid: None,
            gid: None,
            stack: stack.to_string(),
            layers: Vec::new(),
            host_network: false,
            isolated: false,
            ports: Vec::new(),
            stop_grace_ms: None,
            ca_bundle: true,
            layer_refs: Vec::new(),
            mounts: Vec::new(),
            files: Vec::new(),
            user: None,
            attach: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default = "tcp")]
    pub proto: String,
    #[serde(default)]
    pub check: Option<HealthCheck>,
}

fn tcp() -> String {
    "tcp".into()
}

/// Limits. `None` means the default (see the constants above).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// Size of the job's writable layer (its own filesystem: a write past it gets ENOSPC).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    pub cpu_milli: Option<u64>,
    pub max_fd: Option<u64>,
    pub max_procs: Option<i64>,
}

impl Resources {
    pub fn memory(&self) -> u64 {
        self.memory_bytes.unwrap_or(DEFAULT_MEMORY)
    }
    pub fn disk(&self) -> u64 {
        self.disk_bytes.unwrap_or(DEFAULT_DISK)
    }
    pub fn cpu_shares(&self) -> u64 {
        // 1000 milli-CPU = 1024 shares (Flynn); the kernel's minimum is 2.
        (self.cpu_milli.unwrap_or(DEFAULT_CPU_MILLI) * 1024 / 1000).max(2)
    }
    pub fn max_fd(&self) -> u64 {
        self.max_fd.unwrap_or(DEFAULT_MAX_FD)
    }
    pub fn max_procs(&self) -> i64 {
        self.max_procs.unwrap_or(DEFAULT_MAX_PROCS)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
}

/// A health check on one port (Flynn's defaults: interval 2 s, threshold 2, start timeout 10 s).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// HTTP path (http only).
    #[serde(default = "root_path")]
    pub path: String,
    /// Expected HTTP status (http only); any 2xx/3xx when unset.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default = "two_s")]
    pub interval_ms: u64,
    #[serde(default = "two")]
    pub threshold: u32,
    #[serde(default = "ten_s")]
    pub start_timeout_ms: u64,
    /// Kill the job when the check is down (never passed within the start timeout, or failed
    /// `threshold` times in a row after being up).
    #[serde(default)]
    pub kill_down: bool,
}

fn root_path() -> String {
    "/".into()
}
fn two_s() -> u64 {
    2000
}
fn two() -> u32 {
    2
}
fn ten_s() -> u64 {
    10_000
}

impl HealthCheck {
    pub fn tcp() -> Self {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: root_path(),
            status: None,
            interval_ms: two_s(),
            threshold: two(),
            start_timeout_ms: ten_s(),
            kill_down: false,
        }
    }
    pub fn http(path: &str) -> Self {
        HealthCheck {
            kind: CheckKind::Http,
            path: path.into(),
            ..Self::tcp()
        }
    }
}

/// Lifecycle of a job on a host (Flynn's statuses plus `stopping`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Starting,
    Running,
    Stopping,
    /// Exited 0, or exited after a stop was asked for.
    Done,
    /// Exited non-zero (or by a signal) without being asked to stop.
    Crashed,
    /// Never started, or was lost.
    Failed,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Crashed | JobStatus::Failed
        )
    }
}

/// How a job's process ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Shell-style exit code: the exit status, or 128 + signal.
    pub code: i32,
    /// Signal that killed the process, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The kernel's OOM killer fired in the job's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
    /// Memory limit in bytes, to explain OOM kills.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// The job failed with its writable layer full: it most likely failed for that (ENOSPC).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disk_full: bool,
    /// Disk limit in bytes, to explain `disk_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit: Option<u64>,
}

impl ExitStatus {
    pub fn code(code: i32) -> Self {
        ExitStatus {
            code,
            signal: None,
            oom_killed: false,
            memory_limit: None,
            disk_full: false,
            disk_limit: None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    /// e.g. `exit 137: killed, out of memory (limit 256 MiB)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.code)?;
        if self.oom_killed {
            write!(f, ": killed, out of memory")?;
            if let Some(l) = self.memory_limit {
                write!(f, " (limit {})", human_bytes(l))?;
            }
        } else if let Some(sig) = self.signal {
            write!(f, ": killed by {}", signal_name(sig))?;
        }
        if self.disk_full {
            write!(f, ", disk full")?;
            if let Some(l) = self.disk_limit {
                write!(f, " (limit {})", human_bytes(l))?;
            }
        }
        Ok(())
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {name}", b / size);
        }
    }
    format!("{b} B")
}

pub fn signal_name(sig: i32) -> String {
    match sig {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        3 => "SIGQUIT".into(),
        6 => "SIGABRT".into(),
        9 => "SIGKILL".into(),
        10 => "SIGUSR1".into(),
        12 => "SIGUSR2".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Parses `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Some(match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => return None,
    })
}

/// A job as reported by the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    pub job: HostJob,
    pub status: JobStatus,
    /// True while every health check passes (always false for jobs without checks).
    #[serde(default)]
    pub up: bool,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Why the job failed or was killed, in words for users.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stop_requested: bool,
    /// The job's collected files ([`JobFiles::collect`]): target → blob digest. Set before
    /// the job is reported as ended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Create,
    Start,
    Up,
    Down,
    Stop,
    Error,
    Cleanup,
}

/// One entry of the job event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobEvent {
    pub kind: EventKind,
    pub job_id: String,
    pub job: JobInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub cpus: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostStatus {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub runtime: String,
    pub capacity: Capacity,
    /// Jobs that are not finished.
    pub job_count: usize,
    /// Sum of the limits of the jobs that are not finished (what a scheduler places against).
    #[serde(default)]
    pub allocated: Allocated,
    /// Blob-store layers reused from / added to this host's layer cache.
    #[serde(default)]
    pub layer_cache: crate::layers::LayerCacheStats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Allocated {
    pub memory_bytes: u64,
    pub cpu_milli: u64,
}

/// One captured line of a job's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// `stdout`, `stderr` or `init` (messages from the host about the job, e.g. OOM kills).
    pub stream: String,
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_messages() {
        let oom = ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: true,
            memory_limit: Some(256 << 20),
            ..ExitStatus::code(0)
        };
        assert_eq!(
            oom.to_string(),
            "exit 137: killed, out of memory (limit 256 MiB)"
        );
        let term = ExitStatus {
            signal: Some(15),
            code: 143,
            ..ExitStatus::code(0)
        };
        assert_eq!(term.to_string(), "exit 143: killed by SIGTERM");
        assert_eq!(ExitStatus::code(3).to_string(), "exit 3");
        let full = ExitStatus {
            disk_full: true,
            disk_limit: Some(64 << 20),
            ..ExitStatus::code(1)
        };
        assert_eq!(full.to_string(), "exit 1, disk full (limit 64 MiB)");
    }

    #[test]
    fn limits_defaults_and_shares() {
        let r = Resources::default();
        assert_eq!(r.memory(), 1 << 30);
        assert_eq!(r.disk(), 1 << 30);
        assert_eq!(r.cpu_shares(), 1024);
        let half = Resources {
            cpu_milli: Some(500),
            ..Default::default()
        };
        assert_eq!(half.cpu_shares(), 512);
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("99"), None);
    }

    #[test]
    fn job_json_round_trip_uses_defaults() {
        let j: HostJob = serde_json::from_str(
            r#"{"id":"a","config":{"args":["sh"],"stack":"busybox","ports":[{"port":80,"check":{"kind":"http"}}]}}"#,
        )
        .unwrap();
        assert!(j.config.ca_bundle);
        let c = j.config.ports[0].check.as_ref().unwrap();
        assert_eq!(
            (c.interval_ms, c.threshold, c.start_timeout_ms),
            (2000, 2, 10_000)
        );
        assert_eq!(j.config.ports[0].proto, "tcp");
    }
}
