//! Reboot detection: the kernel's boot id (`/proc/sys/kernel/random/boot_id`, new at every
//! boot) is recorded in the agent's data dir at each start. When the recorded one differs, the
//! machine rebooted: every container of the old boot is dead, whatever its runc state says, and
//! a pid in a state file may belong to any process of the new boot (start times, counted from
//! boot, may even match).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("boot-id")
}

/// This boot's id.
pub(super) fn current() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// True when the agent last started in another boot. No record (a new data dir, or one of an
/// agent before boot ids were recorded): not known to be a reboot, the shims' pid and start time
/// decide, as before.
pub(super) fn rebooted(data_dir: &Path) -> bool {
    let recorded = std::fs::read_to_string(file(data_dir)).ok();
    match (recorded, current()) {
        (Some(r), Some(c)) => r.trim() != c,
        _ => false,
    }
}

/// Records this boot's id (write and rename: never a half-written file).
pub(super) fn record(data_dir: &Path) -> Result<()> {
    let Some(id) = current() else {
        return Ok(());
    };
    let (tmp, path) = (data_dir.join("boot-id.tmp"), file(data_dir));
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("recording the boot id in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_boot_id_of_another_boot_is_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!rebooted(dir.path()), "no record: not known to be a reboot");
        record(dir.path()).unwrap();
        assert!(!rebooted(dir.path()));
        std::fs::write(file(dir.path()), "00000000-0000-0000-0000-000000000000\n").unwrap();
        assert!(rebooted(dir.path()));
    }
}
