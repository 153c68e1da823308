//! The supervisor's processes: spawning a child of the binary, signalling with `kill(1)` (the
//! crate has no `unsafe`), pid files with start times (a pid alone may be recycled), and the
//! orphans a supervisor killed with SIGKILL left behind.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// Sends `signal` (`TERM`, `KILL`, `HUP`) to `pid`; false when `kill` failed.
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `pid` and its start time, atomically.
pub fn write_pid(path: &Path, pid: u32) -> Result<()> {
    let started = crate::router::handoff::start_time(pid).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid}\n{started}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// The live process a pid file names (same start time: not a recycled pid), if any; with
/// `what` in its command line.
pub fn live_pid(path: &Path, what: &str) -> Option<u32> {
    let mut text = String::new();
    use std::io::Read;
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let started: u64 = lines.next()?.trim().parse().ok()?;
    if pid <= 1 || pid == std::process::id() {
        return None;
    }
    if crate::router::handoff::start_time(pid)? != started {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let has = cmdline.split(|b| *b == 0).any(|a| a == what.as_bytes());
    has.then_some(pid)
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    crate::router::handoff::start_time(pid).is_some()
}

/// SIGTERMs `pid` (not our child: a previous supervisor's), waits `grace` for it to go, then
/// SIGKILLs it.
pub async fn stop_orphan(pid: u32, what: &str, grace: Duration) {
    tracing::warn!(
        "supervise: a {what} (pid {pid}) left by a previous supervisor runs: stopping it"
    );
    signal(pid, "TERM");
    let deadline = tokio::time::Instant::now() + grace;
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                "supervise: the old {what} (pid {pid}) is still running after {grace:?}: SIGKILL"
            );
            signal(pid, "KILL");
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spawns `exe` with `args`; stdout and stderr are the supervisor's (its log).
pub fn spawn(exe: &Path, args: &[String]) -> Result<tokio::process::Child> {
    tokio::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        // A child outlives the supervisor's end only when the supervisor is killed.
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}
