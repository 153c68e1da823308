//! What the runtime needs from the host, checked and set up before any job: the tools and
//! kernel features (`preflight`) and the pids limit of all jobs together.

use super::RuncConfig;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Checks what the runtime needs and says what to install or change when something is missing.
pub fn preflight(cfg: &RuncConfig) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the host agent must run as root: it creates containers, mounts, cgroups and network \
             interfaces (run it with sudo, or as root)"
        );
    }
    let v = std::process::Command::new(&cfg.runc)
        .arg("--version")
        .output();
    if !matches!(&v, Ok(o) if o.status.success()) {
        bail!(
            "runc was not found or does not run ({}): install it with `apt-get install runc` \
             (or scripts/install-deps)",
            cfg.runc.display()
        );
    }
    if let Some(init) = &cfg.init
        && !init.is_file()
    {
        bail!(
            "the container init {} was not found: install it with `apt-get install tini` (or \
             scripts/install-deps); every job runs it as PID 1 to forward signals and reap zombies",
            init.display()
        );
    }
    for (tool, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        let ok = std::process::Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            bail!("`{tool}` was not found: install it with `apt-get install {pkg}`");
        }
    }
    let mem = Path::new("/sys/fs/cgroup/memory");
    if !mem.is_dir() {
        bail!(
            "the cgroup v1 memory controller is not mounted at /sys/fs/cgroup/memory; the runc \
             runtime needs cgroup v1 with the memory, cpu and pids controllers (boot with \
             systemd.unified_cgroup_hierarchy=0 or mount them)"
        );
    }
    let parent = mem.join(&cfg.cgroup_parent);
    std::fs::create_dir_all(&parent).with_context(|| {
        format!(
            "cannot create the cgroup {}: is /sys/fs/cgroup mounted read-write?",
            parent.display()
        )
    })?;
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("overlay") {
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .status();
        if !std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .contains("overlay")
        {
            bail!("the kernel has no overlay filesystem: load it with `modprobe overlay`");
        }
    }
    Ok(())
}

/// Three quarters of `kernel.pid_max`: jobs together cannot take the pids the host's own
/// daemons (and the agent, its shims and runc) need, even when every job is at its limit.
pub fn default_jobs_max_procs() -> u64 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768);
    (pid_max / 4 * 3).max(64)
}

/// The cgroup v1 pids controller's directory of the jobs' parent.
pub(super) fn pids_parent(cgroup_parent: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/pids").join(cgroup_parent)
}

/// Creates the jobs' pids cgroup parent and writes its `pids.max` (runc would create the parent
/// with no limit). Idempotent. `None` when the pids controller is not mounted.
pub(super) fn cap_jobs_pids(cgroup_parent: &str, max: u64) -> Result<Option<u64>> {
    if !Path::new("/sys/fs/cgroup/pids").is_dir() {
        tracing::warn!(
            "the cgroup v1 pids controller is not mounted at /sys/fs/cgroup/pids: jobs run \
             without a limit on their processes"
        );
        return Ok(None);
    }
    let dir = pids_parent(cgroup_parent);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
    std::fs::write(dir.join("pids.max"), max.to_string()).with_context(|| {
        format!(
            "cannot set {}/pids.max to {max} (the processes all jobs together may run)",
            dir.display()
        )
    })?;
    Ok(Some(max))
}
