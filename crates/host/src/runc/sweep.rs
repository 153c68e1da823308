//! The start-up sweep: whatever a previous agent process of this data dir left on the host that
//! no live job uses is removed before the agent serves (after a crash at any point of a job's
//! start or stop, or a reboot).
//!
//! What is "ours" is told by name, never guessed: every host-global name carries the agent's
//! identity (its bridge name for netns and veths, its cgroup parent for cgroups, its data dir
//! for runc state, container dirs and mounts), so two agents on one machine (tests) never sweep
//! each other's things. What is "live" is what [`super::RuncRuntime::recover`] re-adopted: a
//! job whose shim is still the process it started (same boot, same pid and start time, not a
//! zombie). Everything else of ours goes, in an order that lets it go: processes in stale
//! cgroups are killed, runc's state is deleted, mounts are unmounted (deepest first) before
//! their directories are removed, netns files are unmounted and unlinked (their veth pairs end
//! with them), and stray veths on our bridge are deleted.
//!
//! Every listing is bounded ([`MAX_ENTRIES`]) and nothing recurses into a tree a job controls:
//! container dirs are removed with [`crate::layers::remove_tree`] (iterative, never follows a
//! symlink), cgroups to a fixed depth.

use super::mount::unmount;
use super::network::{self, NETNS_DIR, NetworkConfig};
use super::{RuncConfig, check_id};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Entries looked at per listing: far above any real host, a bound on a hostile or broken one.
const MAX_ENTRIES: usize = 100_000;
/// Job cgroups have no children of their own; a job that made some gets this many levels.
const MAX_CGROUP_DEPTH: usize = 4;
/// How long the processes of a stale cgroup get to die after SIGKILL before it is given up.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// What the live jobs use: kept.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub ids: HashSet<String>,
    /// Host-side veth names of the live jobs (legacy names of jobs adopted across an upgrade).
    pub veths: HashSet<String>,
}

/// What a sweep removed, for the agent's log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub runc_states: usize,
    pub containers: usize,
    pub mounts: usize,
    pub netns: usize,
    pub veths: usize,
    pub cgroups: usize,
    /// Processes killed in stale cgroups.
    pub killed: usize,
    /// Things of ours that could not be removed (still mounted, busy): said in the log.
    pub left: Vec<String>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runc states, {} container dirs, {} mounts, {} netns, {} veths, {} cgroups \
             ({} processes killed)",
            self.runc_states,
            self.containers,
            self.mounts,
            self.netns,
            self.veths,
            self.cgroups,
            self.killed
        )?;
        if !self.left.is_empty() {
            write!(f, "; could not remove: {}", self.left.join(", "))?;
        }
        Ok(())
    }
}

/// Removes everything of the agent configured by `cfg` that `live` does not use. `rebooted`:
/// runc's state of the old boot is not trusted (its pids may be reused), it is removed as files.
pub(super) fn sweep(cfg: &RuncConfig, live: &Live, rebooted: bool) -> Swept {
    let mut out = Swept::default();
    // Processes first: a stale container's processes hold its netns, mounts and cgroup.
    sweep_cgroups(&cfg.cgroup_parent, &live.ids, &mut out);
    sweep_runc_states(cfg, &live.ids, rebooted, &mut out);
    sweep_mounts(&cfg.data_dir.join("containers"), &live.ids, &mut out);
    sweep_container_dirs(&cfg.data_dir.join("containers"), &live.ids, &mut out);
    sweep_netns(&cfg.network, &live.ids, &mut out);
    sweep_veths(&cfg.network, &live.veths, &mut out);
    // A container's cgroup may come back while runc deletes it; look once more.
    sweep_cgroups(&cfg.cgroup_parent, &live.ids, &mut out);
    out
}

/// The entries of `dir` (none if it cannot be read), at most [`MAX_ENTRIES`].
fn entries(dir: &Path) -> Vec<(String, PathBuf, std::fs::FileType)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| {
            let t = e.file_type().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), e.path(), t))
        })
        .collect()
}

/// Job cgroups below the agent's cgroup parent, in every (real, not symlinked) controller.
fn sweep_cgroups(parent: &str, live: &HashSet<String>, out: &mut Swept) {
    sweep_cgroups_in(Path::new("/sys/fs/cgroup"), parent, live, out);
}

fn sweep_cgroups_in(root: &Path, parent: &str, live: &HashSet<String>, out: &mut Swept) {
    // Everything below the parent is taken for a job's: a parent that is empty, absolute or
    // climbs (`""`, `/`, `..`) would name the machine's own cgroups (or `/`), not the agent's.
    let below = Path::new(parent)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if parent.is_empty() || !below {
        out.left.push(format!(
            "cgroups (the cgroup parent {parent:?} is not a relative path below the controllers: not swept)"
        ));
        return;
    }
    for (_, ctrl, t) in entries(root) {
        if !t.is_dir() {
            continue; // `cpu` -> `cpu,cpuacct` and the like: seen through their target
        }
        for (name, cg, t) in entries(&ctrl.join(parent)) {
            if t.is_dir() && !live.contains(&name) {
                remove_cgroup(&cg, 0, out);
            }
        }
    }
}

/// Kills the processes in `cg` and its children (to [`MAX_CGROUP_DEPTH`]) and removes them.
fn remove_cgroup(cg: &Path, depth: usize, out: &mut Swept) {
    if depth < MAX_CGROUP_DEPTH {
        for (_, child, t) in entries(cg) {
            if t.is_dir() {
                remove_cgroup(&child, depth + 1, out);
            }
        }
    }
    let procs = |cg: &Path| -> Vec<i32> {
        std::fs::read_to_string(cg.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .take(MAX_ENTRIES)
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&p: &i32| p > 1 && p as u32 != std::process::id())
            .collect()
    };
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = procs(cg);
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            out.left
                .push(format!("{} ({} processes)", cg.display(), pids.len()));
            return;
        }
        for pid in pids {
            // SAFETY: plain syscall. The pid is in our stale cgroup now (the kernel's list).
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                out.killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The kernel refuses (EBUSY) for a moment after the last process died.
    for _ in 0..50 {
        match std::fs::remove_dir(cg) {
            Ok(()) => {
                out.cgroups += 1;
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    out.left.push(cg.display().to_string());
}

/// runc's state dirs (`<data>/runc/<id>`) of containers no live job is.
fn sweep_runc_states(cfg: &RuncConfig, live: &HashSet<String>, rebooted: bool, out: &mut Swept) {
    let root = cfg.data_dir.join("runc");
    for (id, dir, t) in entries(&root) {
        if live.contains(&id) {
            continue;
        }
        if t.is_dir() && !rebooted && check_id(&id).is_ok() {
            // Same boot: runc checks the init's start time before it kills anything, and
            // removes the container's cgroups.
            let _ = std::process::Command::new(&cfg.runc)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .stdin(std::process::Stdio::null())
                .output();
        }
        if std::fs::symlink_metadata(&dir).is_ok()
            && let Err(e) = crate::layers::remove_tree(&dir)
        {
            out.left.push(format!("{} ({e})", dir.display()));
            continue;
        }
        out.runc_states += 1;
    }
}

/// Mount points at or below `dir` (mountinfo's field 5, octal escapes undone); the builder's
/// start-up sweep uses it too.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .take(MAX_ENTRIES)
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts in container dirs of jobs that are not live (rootfs overlays, disk images), the
/// deepest first; a mount that will not go is detached.
fn sweep_mounts(containers: &Path, live: &HashSet<String>, out: &mut Swept) {
    let mut stale: Vec<PathBuf> = mounts_below(containers)
        .into_iter()
        .filter(|m| {
            m.strip_prefix(containers)
                .ok()
                .and_then(|rel| rel.components().next())
                .is_some_and(|c| !live.contains(&*c.as_os_str().to_string_lossy()))
        })
        .collect();
    stale.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    stale.dedup();
    for m in stale {
        unmount(&m);
        out.mounts += 1;
    }
}

/// Container dirs of jobs that are not live, once nothing is mounted in them.
fn sweep_container_dirs(containers: &Path, live: &HashSet<String>, out: &mut Swept) {
    for (id, dir, t) in entries(containers) {
        if live.contains(&id) {
            continue;
        }
        if t.is_dir() && !mounts_below(&dir).is_empty() {
            out.left.push(format!("{} (still mounted)", dir.display()));
            continue;
        }
        // A symlink or file is removed itself, never followed.
        match crate::layers::remove_tree(&dir) {
            Ok(()) => out.containers += 1,
            Err(e) => out.left.push(format!("{} ({e})", dir.display())),
        }
    }
}

/// Whether `rest` is a job hash as our names end with: 10 lowercase hex digits.
fn is_job_hash(rest: &str) -> bool {
    rest.len() == 10 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `/run/netns/slw-<bridge>-<hash>` of jobs that are not live.
fn sweep_netns(net: &NetworkConfig, live: &HashSet<String>, out: &mut Swept) {
    let prefix = network::netns_prefix(net);
    let keep: HashSet<String> = live.iter().map(|id| network::netns_name(net, id)).collect();
    for (name, path, _) in entries(Path::new(NETNS_DIR)) {
        let ours = name.strip_prefix(&prefix).is_some_and(is_job_hash);
        if ours && !keep.contains(&name) {
            network::remove_netns_file(&path);
            out.netns += 1;
        }
    }
}

/// Veths named by this agent (`v<bridge hash><job hash>`, on our bridge or on none) and legacy
/// `vsw<hash>` veths on our bridge, that no live job has.
fn sweep_veths(net: &NetworkConfig, live: &HashSet<String>, out: &mut Swept) {
    let prefix = network::veth_prefix(net);
    for (name, path, _) in entries(Path::new("/sys/class/net")) {
        if live.contains(&name) {
            continue;
        }
        let master = std::fs::read_link(path.join("master"))
            .ok()
            .and_then(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()));
        let on_ours = master.as_deref() == Some(net.bridge.as_str());
        let named_ours = name.strip_prefix(&prefix).is_some_and(is_job_hash);
        let legacy = name.strip_prefix("vsw").is_some_and(is_job_hash);
        if (named_ours && (on_ours || master.is_none())) || (legacy && on_ours) {
            network::remove_link(&name);
            out.veths += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every directory below the cgroup parent is taken for a job's cgroup, its processes
    /// SIGKILLed: a parent that is not a plain relative path (`--cgroup-parent ""` or `/`) would
    /// make that every service of the machine (`system.slice`, `user.slice`, …), or any empty
    /// directory under `/`. Such a parent is not swept at all.
    #[test]
    fn a_cgroup_parent_that_is_not_below_the_controllers_is_not_swept() {
        let root = tempfile::tempdir().unwrap();
        let services = root.path().join("memory/system.slice/ssh.service");
        std::fs::create_dir_all(&services).unwrap();
        let job = root.path().join("memory/slipway/stale-job");
        std::fs::create_dir_all(&job).unwrap();
        for parent in ["", "/", ".", "..", "../memory", "slipway/..", "/slipway"] {
            let mut out = Swept::default();
            sweep_cgroups_in(root.path(), parent, &HashSet::new(), &mut out);
            assert!(
                services.is_dir(),
                "{parent:?}: the machine's cgroups were swept"
            );
            assert!(job.is_dir(), "{parent:?}");
            assert_eq!(out.cgroups, 0, "{parent:?}");
            assert!(!out.left.is_empty(), "{parent:?}: not said");
        }
        let mut out = Swept::default();
        sweep_cgroups_in(root.path(), "slipway", &HashSet::new(), &mut out);
        assert!(!job.exists() && services.is_dir());
        assert_eq!(out.cgroups, 1);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c\134d"), r"/a b/c\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn only_our_names_with_a_job_hash_are_ours() {
        assert!(is_job_hash("0123456789"));
        assert!(!is_job_hash("012345678"));
        assert!(!is_job_hash("x-01234567"));
        let net = NetworkConfig {
            bridge: "slws38".into(),
            ..Default::default()
        };
        let other = NetworkConfig {
            bridge: "slws38-x".into(),
            ..Default::default()
        };
        let theirs = network::netns_name(&other, "job");
        // `slw-slws38-` is a prefix of the other agent's names: the hash rule tells them apart.
        assert!(theirs.starts_with(&network::netns_prefix(&net)));
        assert!(
            !theirs
                .strip_prefix(&network::netns_prefix(&net))
                .is_some_and(is_job_hash)
        );
    }
}
