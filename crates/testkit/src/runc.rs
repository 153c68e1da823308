//! Clean-up after a test's runc host agent, shared by the host and build crates' harnesses:
//! whatever a failed test left (containers, mounts, job cgroups) is removed best-effort.

use std::path::{Path, PathBuf};

/// Best-effort removal of what an agent with data dir `data_dir` and cgroup parent
/// `cgroup_parent` may have left: its runc containers, each container's netns (through
/// `remove_netns`, the host crate's, which this crate does not depend on), the mounts below
/// `data_dir` and the job cgroups. The caller tears down the agent's bridge and nft table.
pub fn remove_agent_leftovers(data_dir: &Path, cgroup_parent: &str, remove_netns: fn(&str)) {
    let root = data_dir.join("runc");
    if let Ok(out) = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .output();
        }
    }
    if let Ok(rd) = std::fs::read_dir(data_dir.join("containers")) {
        for e in rd.flatten() {
            remove_netns(&e.file_name().to_string_lossy());
        }
    }
    for m in mounts_under(data_dir) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(m)
            .status();
    }
    for c in cgroup_controllers() {
        let p = c.join(cgroup_parent);
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&p);
    }
}

/// The cgroup hierarchies' roots (one on cgroup v2).
pub fn cgroup_controllers() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.is_symlink() && p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect()
}
