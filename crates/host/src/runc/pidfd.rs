//! Processes the runtime does not parent (shims after an agent restart, containers' inits),
//! watched and signalled through pidfds: a pidfd is opened first and the process's start time
//! checked after, so a pid recycled by another process is never waited on or signalled.

use anyhow::Result;

/// Start time of `pid` (clock ticks after boot, `/proc/PID/stat` field 22): with the pid, names
/// one process for good.
pub(super) fn proc_start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)` which may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start` and is running: a recycled pid
/// has another start time; a zombie (`Z`) or dead (`X`) one has ended, whatever it was (a shim
/// whose parent does not reap it stays a zombie and must not be taken for alive).
pub(super) fn proc_alive(pid: u32, start: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = s.rfind(')').and_then(|i| s.get(i + 2..)) else {
        return false;
    };
    let mut fields = rest.split(' ');
    let state = fields.next().unwrap_or("X");
    let started = fields.nth(18).and_then(|f| f.parse::<u64>().ok());
    started == Some(start) && !matches!(state, "Z" | "X" | "x")
}

/// Whether the container's init (tini, `-g`) has a child in a process group of its own. tini
/// forwards a signal to its child's process group, which the child makes just after the fork:
/// a signal that comes before would be dropped ("child was dead when forwarding signal").
pub(crate) fn child_has_own_group(init: u32) -> bool {
    let Ok(children) = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")) else {
        return false;
    };
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .any(|c| process_group(c) == Some(c))
}

/// `/proc/PID/stat` field 5.
fn process_group(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok()
}

/// Sends `signal` to the container's init, as `runc kill` does, without starting runc (≈10-15 ms
/// on a busy machine, on the path of every stop and so of every deploy): through a pidfd opened
/// first and the start time checked after, so a recycled pid is never signalled. False when
/// that cannot be done (the init is gone, or another process has its pid): `runc kill` decides.
pub(super) fn signal_init(pid: u32, start: u64, signal: i32) -> bool {
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is a fresh pidfd we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if proc_start_time(pid) != Some(start) {
        return false;
    }
    // SAFETY: a valid pidfd, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Waits until the process `pid` (started at `start`) has exited, through a pidfd (which works
/// for processes that are not our children, i.e. shims adopted after a restart).
pub(super) async fn wait_pid_exit(pid: u32, start: u64) -> Result<()> {
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Ok(()); // already gone (and reaped)
    }
    // SAFETY: fd is a fresh pidfd we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if proc_start_time(pid) != Some(start) {
        return Ok(()); // the pid now belongs to someone else: our shim is gone
    }
    // SAFETY: the AsyncFd owns the pidfd, which stays open and valid until it is dropped.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("watching the shim's pidfd: {e}"))?;
    let _guard = afd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_only_the_process_that_started_at_the_recorded_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = proc_start_time(pid).expect("a running child has a start time");
        assert!(proc_alive(pid, start));
        assert!(
            !proc_alive(pid, start + 1),
            "a recycled pid is not our process"
        );
        // Another start time: a recycled pid. Nothing is sent.
        assert!(!signal_init(pid, start + 1, libc::SIGTERM));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child was signalled"
        );
        assert!(signal_init(pid, start, libc::SIGTERM));
        // Ended, not reaped yet: a zombie, with its pid and start time still in /proc.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while proc_alive(pid, start) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(proc_start_time(pid), Some(start), "not reaped yet");
        assert!(!proc_alive(pid, start), "a zombie is not alive");
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        // Gone (and reaped): nothing to signal, the caller falls back to `runc kill`.
        assert!(!signal_init(pid, start, libc::SIGTERM));
    }
}
