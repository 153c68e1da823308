//! A router process hands its ports to its successor without refusing a connection
//! (`docs/router.md`, "Handoff"): the new process binds the same ports with `SO_REUSEPORT`,
//! loads its routes and backends, accepts, and only then tells the old one (named in
//! `<data dir>/router.pid`) to drain. The old one closes its listeners — with
//! `net.ipv4.tcp_migrate_req=1` the connections still in their accept queues move to the new
//! listeners instead of being reset — finishes what is in flight and exits.
//!
//! Only a process whose roles are the router alone does this ([`is_router_process`]): the
//! pidfile can only ever name such a process, and a pid is signalled only after checking
//! that it is still that process (same start time, a `slipway … server` whose roles are
//! `router`), never a recycled one.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// In the router process's data dir: its pid, then its start time (`/proc/PID/stat`'s
/// field 22, clock ticks since boot), one per line.
pub const PID_FILE: &str = "router.pid";
/// How long a starting router waits for its first routes and backends before it accepts.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The most read of a pidfile or a `/proc` file: none is legitimately longer.
const MAX_READ: u64 = 64 << 10;

/// Whether `roles` are the router's alone: the process a supervisor runs beside the server.
pub fn is_router_process(roles: &crate::Roles) -> bool {
    crate::Role::ALL
        .iter()
        .all(|r| roles.has(*r) == (*r == crate::Role::Router))
}

/// The pidfile's path in a router process's data dir.
pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PID_FILE)
}

/// A router process named in the pidfile: its pid and start time, which are checked again
/// before it is signalled (it may exit, and its pid be reused, while its successor loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    pub pid: u32,
    pub started: u64,
}

impl Predecessor {
    /// Whether it is still that process (alive, not a zombie, same start time).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.started)
    }
}

/// The router process named in the pidfile, if it is alive and still that process.
pub fn predecessor(data_dir: &Path) -> Option<Predecessor> {
    let text = read_bounded(&pid_file(data_dir))?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let started: u64 = lines.next()?.trim().parse().ok()?;
    if pid == std::process::id() || pid <= 1 {
        return None;
    }
    // A pid written by a process that has since exited may name another process now.
    let p = Predecessor { pid, started };
    if !p.alive() {
        return None;
    }
    let cmdline = read_bounded_bytes(&PathBuf::from(format!("/proc/{pid}/cmdline")))?;
    let environ = read_bounded_bytes(&PathBuf::from(format!("/proc/{pid}/environ")));
    is_router_cmdline(&cmdline, environ.as_deref()).then_some(p)
}

/// Whether a command line (NUL-separated, as in `/proc/PID/cmdline`) is a `slipway … server`
/// whose roles are `router` alone (`--roles router`, `--roles=router`, or `SLIPWAY_ROLES` in
/// its environment, NUL-separated too).
pub fn is_router_cmdline(cmdline: &[u8], environ: Option<&[u8]>) -> bool {
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let Some(argv0) = args.first() else {
        return false;
    };
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or(argv0);
    if !name.starts_with(b"slipway") || !args.iter().any(|a| *a == b"server") {
        return false;
    }
    let mut roles: Option<&[u8]> = None;
    for (i, a) in args.iter().enumerate() {
        if *a == b"--roles" {
            roles = args.get(i + 1).copied();
        } else if let Some(v) = a.strip_prefix(b"--roles=") {
            roles = Some(v);
        }
    }
    let roles = roles.or_else(|| {
        environ?
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"SLIPWAY_ROLES="))
    });
    roles.is_some_and(|r| r.trim_ascii() == b"router")
}

/// A process's start time (field 22 of `/proc/PID/stat`), `None` when it is gone or has
/// exited without being reaped yet (a zombie serves nothing).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = read_bounded(&PathBuf::from(format!("/proc/{pid}/stat")))?;
    // The command name (field 2) is in parentheses and may hold anything: count after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Writes this process's pid and start time, atomically (a reader sees the old file or the
/// new one).
pub fn write_own_pid(data_dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let started = start_time(pid).map_or(String::new(), |t| t.to_string());
    let path = pid_file(data_dir);
    let tmp = data_dir.join(format!("{PID_FILE}.{pid}.tmp"));
    std::fs::write(&tmp, format!("{pid}\n{started}\n"))?;
    std::fs::rename(&tmp, &path)
}

/// Removes the pidfile if it still names this process (a successor may have written its own).
pub fn remove_own_pid(data_dir: &Path) {
    let path = pid_file(data_dir);
    let own = read_bounded(&path)
        .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if own {
        let _ = std::fs::remove_file(path);
    }
}

/// Tells the predecessor to drain (SIGTERM, through `kill(1)`: this crate has no `unsafe`) if
/// it is still that process: one that exited meanwhile has nothing to drain, and its pid may be
/// another process's by now.
pub fn terminate(p: Predecessor) {
    let pid = p.pid;
    if !p.alive() {
        tracing::info!("router: router process {pid} exited before the takeover: not signalled");
        return;
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match sent {
        Ok(s) if s.success() => {
            tracing::info!("router: took over from router process {pid}; it drains and exits")
        }
        Ok(s) => tracing::warn!("router: cannot signal router process {pid}: kill {s}"),
        Err(e) => tracing::warn!("router: cannot signal router process {pid}: {e}"),
    }
}

/// The sysctl that moves connections queued on a closed `SO_REUSEPORT` listener to another
/// listener of the same group instead of resetting them (Linux 5.14+).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Sets `net.ipv4.tcp_migrate_req=1` (root only; a warning otherwise, as without it a
/// handoff may reset the few connections queued on the old listeners as they close).
pub fn enable_migrate_req(root: bool) {
    if std::fs::read_to_string(MIGRATE_REQ).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    let why = match root {
        true => match std::fs::write(MIGRATE_REQ, "1") {
            Ok(()) => {
                tracing::info!(
                    "router: set net.ipv4.tcp_migrate_req=1 (handoffs reset no queued connection)"
                );
                return;
            }
            Err(e) => e.to_string(),
        },
        false => "not root".to_string(),
    };
    tracing::warn!(
        "router: cannot set net.ipv4.tcp_migrate_req=1 ({why}): when a router hands over to another, connections queued on its listeners as they close may be reset; set it with sysctl"
    );
}

fn read_bounded_bytes(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_READ)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn read_bounded(path: &Path) -> Option<String> {
    String::from_utf8(read_bounded_bytes(path)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slipway_server_with_the_router_role_alone_is_a_predecessor() {
        let yes: [&[u8]; 3] = [
            b"/usr/bin/slipway\0server\0--roles\0router\0--data-dir\0/x\0",
            b"/tmp/new/slipway\0server\0--roles=router\0",
            b"slipway\0--verbose\0server\0--roles\0 router\0",
        ];
        for c in yes {
            assert!(is_router_cmdline(c, None), "{}", String::from_utf8_lossy(c));
        }
        let no: [&[u8]; 6] = [
            b"/usr/bin/slipway\0server\0",
            b"/usr/bin/slipway\0server\0--roles\0router,host\0",
            b"/usr/bin/slipway\0supervise\0--roles\0router\0",
            b"/usr/bin/nginx\0server\0--roles\0router\0",
            b"",
            b"/usr/bin/slipway\0server\0--roles\0",
        ];
        for c in no {
            assert!(
                !is_router_cmdline(c, None),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        let env = b"HOME=/root\0SLIPWAY_ROLES=router\0";
        assert!(is_router_cmdline(b"slipway\0server\0", Some(env)));
        // The flag wins over the environment.
        assert!(!is_router_cmdline(
            b"slipway\0server\0--roles\0host\0",
            Some(env)
        ));
    }

    #[test]
    fn the_pidfile_names_this_process_and_a_stale_or_foreign_pid_is_no_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(predecessor(dir.path()), None, "no file");
        write_own_pid(dir.path()).unwrap();
        let text = std::fs::read_to_string(pid_file(dir.path())).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), std::process::id().to_string());
        assert_eq!(
            lines.next().unwrap().parse::<u64>().ok(),
            start_time(std::process::id())
        );
        // This process: never its own predecessor.
        assert_eq!(predecessor(dir.path()), None);
        // A live process with another start time (a recycled pid): not signalled.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = start_time(child.id()).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let field22 = stat.rsplit(')').next().unwrap().split_whitespace().nth(19);
        assert_eq!(field22, Some(started.to_string().as_str()));
        std::fs::write(
            pid_file(dir.path()),
            format!("{}\n{}\n", child.id(), started + 1),
        )
        .unwrap();
        assert_eq!(predecessor(dir.path()), None);
        // The right start time but not a router (`sleep`): not signalled either.
        std::fs::write(pid_file(dir.path()), format!("{}\n{started}\n", child.id())).unwrap();
        assert_eq!(predecessor(dir.path()), None);
        child.kill().unwrap();
        // Dead but not reaped yet (a zombie): gone all the same.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while start_time(child.id()).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie counts as alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        std::fs::write(pid_file(dir.path()), "garbage\n").unwrap();
        assert_eq!(predecessor(dir.path()), None);
        // A pid but no start time: nothing to check it against, not a predecessor.
        std::fs::write(
            pid_file(dir.path()),
            format!("{}\n", std::process::id() + 1),
        )
        .unwrap();
        assert_eq!(predecessor(dir.path()), None);
        remove_own_pid(dir.path());
        assert!(pid_file(dir.path()).exists(), "names another: kept");
        write_own_pid(dir.path()).unwrap();
        remove_own_pid(dir.path());
        assert!(!pid_file(dir.path()).exists());
    }

    /// The predecessor is checked when the new router starts, and signalled only once the new
    /// one has loaded and accepts, seconds later (or much later, while the controller is away):
    /// by then it may have exited and its pid be another process's. That process is not
    /// signalled (before, `terminate` sent SIGTERM to whatever had the pid).
    #[test]
    fn a_predecessor_that_is_no_longer_the_same_process_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = start_time(child.id()).unwrap();
        let recycled = Predecessor {
            pid: child.id(),
            started: started + 1,
        };
        assert!(!recycled.alive());
        terminate(recycled);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "a recycled pid was signalled"
        );
        let same = Predecessor {
            pid: child.id(),
            started,
        };
        assert!(same.alive());
        terminate(same);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
    }
}
