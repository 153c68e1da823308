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

/// Writes `pid` and its start time, atomically. The temporary file is created anew, never
/// opened through what is at its path: `--pid-file` may be in a directory others can write to
/// (`/tmp`), where a symlink planted at the temporary name would have had root write through it.
pub fn write_pid(path: &Path, pid: u32) -> Result<()> {
    use std::io::Write;
    let started = crate::router::handoff::start_time(pid).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    // A leftover (or a planted symlink) goes: the link itself, not what it names.
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{pid}\n{started}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// The live process a pid file names (same start time: not a recycled pid), if any; with
/// `what` in its command line. Its pid and start time.
pub fn live_pid(path: &Path, what: &str) -> Option<(u32, u64)> {
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
    has.then_some((pid, started))
}

/// Whether `pid` is alive (and not a zombie) and still the process that started at `started`.
pub fn alive(pid: u32, started: u64) -> bool {
    crate::router::handoff::start_time(pid) == Some(started)
}

/// SIGTERMs `pid` (not our child: a previous supervisor's, started at `started`), waits `grace`
/// for it to go, then SIGKILLs it. Once it has exited its pid may be another process's: that
/// one is neither waited for nor signalled.
pub async fn stop_orphan(pid: u32, started: u64, what: &str, grace: Duration) {
    if !alive(pid, started) {
        return;
    }
    tracing::warn!(
        "supervise: a {what} (pid {pid}) left by a previous supervisor runs: stopping it"
    );
    signal(pid, "TERM");
    let deadline = tokio::time::Instant::now() + grace;
    while alive(pid, started) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_ignoring_term() -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap()
    }

    /// A symlink at the temporary name (a pid file in `/tmp`, another user's plant) is not
    /// written through: before, `std::fs::write` followed it and root overwrote its target.
    #[test]
    fn a_symlink_at_the_pid_files_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        let pid_file = dir.path().join("slipway.pid");
        std::os::unix::fs::symlink(&target, pid_file.with_extension("tmp")).unwrap();
        write_pid(&pid_file, std::process::id()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        let text = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            text.starts_with(&format!("{}\n", std::process::id())),
            "{text}"
        );
        assert!(!std::fs::symlink_metadata(&pid_file).unwrap().is_symlink());
    }

    /// The orphan exits, and its pid is another process's by then (here: the recorded start
    /// time is not this process's): it is neither waited for nor SIGKILLed. Before, any process
    /// with the pid counted as the orphan, and got SIGKILL after the grace.
    #[tokio::test]
    async fn an_orphan_whose_pid_is_another_process_now_is_not_signalled() {
        let mut child = spawn_ignoring_term();
        let pid = child.id();
        let started = loop {
            // Started once `sh` has become `sleep` (the trap set).
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.starts_with(b"sleep") {
                break crate::router::handoff::start_time(pid).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let t = std::time::Instant::now();
        stop_orphan(pid, started + 1, "server", Duration::from_millis(300)).await;
        assert!(t.elapsed() < Duration::from_millis(300), "waited for it");
        assert!(child.try_wait().unwrap().is_none(), "it was signalled");
        // The orphan itself, ignoring SIGTERM: SIGKILL after the grace.
        stop_orphan(pid, started, "server", Duration::from_millis(300)).await;
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
