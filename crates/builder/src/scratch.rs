//! The builder's start-up sweep of its scratch dirs.
//!
//! A build lives only as long as the process that runs it: its output reaches the pusher
//! through the pre-receive hook's HTTP stream, which this process serves, and its job is
//! waited for, collected and turned into a slug by the future in this process
//! ([`crate::pipeline::build`]). When the process dies (`kill -9`, a crash, a reboot), the push
//! fails with it, and nothing will ever finish or clean up the builds it was running. So when
//! the builder starts, everything in the build scratch dirs is stale:
//!
//! - `builds/<id>`: the build dir, a loop-mounted ext4 image of the disk limit
//!   (`slipway_host::runc::disk::mount_bounded_dir`), with the app's cache image loop-mounted at
//!   `builds/<id>/cache` ([`crate::cache`]);
//! - `builds/<id>.xfer`: the build's transfer files ([`crate::transfer`]);
//! - `sources/push-*`: pushed checkouts and their submodules' scratch repos.
//!
//! [`sweep_at_start`] unmounts everything below `builds/` and `sources/`, deepest first (so the
//! cache before the build dir holding it; lazily if busy), detaches loop devices still backed
//! by a file of the build data dir (the loop devices are made with autoclear, so an unmount
//! normally detaches them), and removes every entry, without following symlinks. It runs before
//! the builder serves, so no build of this process exists yet. It relies on one process per
//! data dir (`slipway supervise` and the roles' rules keep it so): a second builder on the same
//! data dir would lose its running builds.

use slipway_host::runc::sweep::mounts_below;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What [`sweep_at_start`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Build dirs (`builds/<id>`) and their transfer dirs (`builds/<id>.xfer`).
    pub builds: usize,
    /// Checkouts in `sources/`.
    pub sources: usize,
    /// Mounts below `builds/` and `sources/`.
    pub mounts: usize,
    /// Loop devices still attached to a file below the build data dir after the unmounts.
    pub loops: usize,
    /// What could not be removed (still mounted, or an I/O error), with the reason.
    pub left: Vec<String>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

/// Removes every build's scratch of `data_dir` (the builder's data dir, `<data>/build`): see
/// the module doc. Blocking; call it before the builder serves. Never fails: what cannot be
/// removed is reported in [`Swept::left`] (and logged), and a later build's own sweep tries
/// again.
pub fn sweep_at_start(data_dir: &Path) -> Swept {
    let mut swept = Swept::default();
    let roots = [data_dir.join("builds"), data_dir.join("sources")];
    // Deepest first, again while anything is left (mounts can be stacked).
    for _ in 0..8 {
        let mut mounts: Vec<PathBuf> = roots
            .iter()
            .flat_map(|r| mounts_below(r).into_iter().filter(move |m| m != r))
            .collect();
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if unmount(&m) {
                swept.mounts += 1;
            }
        }
    }
    swept.loops = detach_loops(data_dir);
    let still: Vec<PathBuf> = roots.iter().flat_map(|r| mounts_below(r)).collect();
    for (root, count) in [
        (&roots[0], &mut swept.builds),
        (&roots[1], &mut swept.sources),
    ] {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if still.iter().any(|m| m.starts_with(&p)) {
                swept.left.push(format!("{}: still mounted", p.display()));
                continue;
            }
            match crate::tree::remove_tree(&p) {
                // A build dir and its transfer dir count as one build.
                Ok(()) if p.extension().is_some_and(|x| x == "xfer") => {}
                Ok(()) => *count += 1,
                Err(e) => swept.left.push(format!("{}: {e}", p.display())),
            }
        }
    }
    if !swept.is_empty() {
        tracing::info!(
            "build start-up sweep removed what no build uses: {} build dirs, {} checkouts, \
             {} mounts, {} loop devices{}",
            swept.builds,
            swept.sources,
            swept.mounts,
            swept.loops,
            if swept.left.is_empty() {
                String::new()
            } else {
                format!("; left: {}", swept.left.join(", "))
            }
        );
    }
    swept
}

/// umount(2), lazily when busy; whether it went.
fn unmount(target: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(t) = std::ffi::CString::new(target.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; umount2 does not keep the pointer.
    let ok = unsafe {
        libc::umount2(t.as_ptr(), 0) == 0 || libc::umount2(t.as_ptr(), libc::MNT_DETACH) == 0
    };
    if !ok {
        tracing::warn!(
            "cannot unmount {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    ok
}

/// Loop devices (`/sys/block/loopN/loop/backing_file`) backed by a file below `dir`.
fn loops_backed_under(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let f = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            // A deleted backing file reads `<path> (deleted)`.
            let f = f.trim_end_matches('\n');
            let f = f.strip_suffix(" (deleted)").unwrap_or(f);
            Path::new(f).starts_with(dir).then_some(name)
        })
        .collect()
}

/// Detaches loop devices backed by a file below `dir` that the unmounts did not detach
/// (autoclear detaches a device at its last close, a moment after its unmount). Returns how
/// many were detached here.
fn detach_loops(dir: &Path) -> usize {
    // Autoclear runs at the unmount's last close: measured immediate here, 250 ms is ample.
    let deadline = Instant::now() + Duration::from_millis(250);
    let mut left = loops_backed_under(dir);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = loops_backed_under(dir);
    }
    let mut n = 0;
    for dev in left {
        let out = std::process::Command::new("losetup")
            .arg("-d")
            .arg(format!("/dev/{dev}"))
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => n += 1,
            Ok(o) => tracing::warn!(
                "cannot detach /dev/{dev}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("cannot run losetup -d /dev/{dev}: {e}"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without mounts (any user): every build dir, transfer dir and checkout goes, a symlink
    /// out of a build dir is removed without being followed, and the cache dir stays.
    #[test]
    fn every_build_dir_and_checkout_goes_and_nothing_outside() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("build");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        for d in [
            "builds/a/app/x",
            "builds/a.xfer",
            "builds/b",
            "sources/push-1/src",
        ] {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(&outside, data.join("builds/a/app/link")).unwrap();
        std::fs::write(data.join("builds/stray"), "x").unwrap();
        std::fs::create_dir_all(data.join("build-cache")).unwrap();
        std::fs::write(data.join("build-cache/app.img"), "img").unwrap();
        let swept = sweep_at_start(&data);
        assert_eq!((swept.builds, swept.sources), (3, 1), "{swept:?}");
        assert!(swept.left.is_empty(), "{swept:?}");
        assert_eq!(std::fs::read_dir(data.join("builds")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(data.join("sources")).unwrap().count(), 0);
        assert!(outside.join("keep").exists());
        assert!(data.join("build-cache/app.img").exists());
        // Nothing there: nothing to say.
        assert!(sweep_at_start(&data).is_empty());
        assert!(sweep_at_start(&t.path().join("none")).is_empty());
    }
}
