//! The job's rootfs mount: an overlay of the stack (and image layers) under the job's
//! writable layer, unmounted when the job is cleaned up.

use anyhow::{Result, bail};
use std::ffi::CString;
use std::path::{Path, PathBuf};

pub(super) fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let c = |s: &str| CString::new(s).expect("no NUL in paths");
    let (src, tgt, fs, d) = (
        c("overlay"),
        c(&target.display().to_string()),
        c("overlay"),
        c(&data),
    );
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            // A setuid file or device node a job left in its layer means nothing to the host
            // (inside the job, no_new_privileges and the device cgroup already see to it).
            libc::MS_NOSUID | libc::MS_NODEV,
            d.as_ptr().cast(),
        )
    };
    if r != 0 {
        bail!(
            "mounting the job's overlay rootfs at {} failed: {} (is the overlay module available?)",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

pub(super) fn unmount(target: &Path) {
    let Ok(t) = CString::new(target.display().to_string()) else {
        return;
    };
    // SAFETY: valid C string; umount2 does not keep the pointer.
    unsafe {
        if libc::umount2(t.as_ptr(), 0) != 0 {
            libc::umount2(t.as_ptr(), libc::MNT_DETACH);
        }
    }
}

pub(super) fn is_mounted(target: &Path) -> bool {
    let t = target.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(t.as_str())))
        .unwrap_or(false)
}
