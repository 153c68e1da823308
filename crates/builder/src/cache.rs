//! An app's build cache (`$CACHE_DIR`, `/cache` in the build job) is a filesystem of the cache
//! limit: an ext4 image, `<data>/build-cache/<app id>.img`, loop-mounted at `<build dir>/cache`
//! for the length of one build.
//!
//! It was a plain directory on the server's disk, bind-mounted writable into the build job. The
//! job's disk limit bounds `/app` and its writable layer, not its bind mounts, so a build (any
//! dependency's install script) could fill the server's disk through `$CACHE_DIR`; emptying a
//! cache over its limit at the start of the *next* build came too late. Now a build that writes
//! past the limit gets ENOSPC, and the host's disk holds at most the image's size per app (a
//! sparse file: only the blocks the builds wrote).
//!
//! One build at a time uses an app's image (an `flock` on it, held until it is unmounted): the
//! git receiver already builds one push per app at a time, and any other build of the app gets
//! an empty cache rather than a second mount of the same filesystem.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The smallest cache image: ext4's metadata needs a few MiB, and a cache under this is no cache.
pub const MIN_CACHE_BYTES: u64 = 16 << 20;

/// Held while a build has the app's cache mounted; dropping it lets the next build mount it.
#[derive(Debug)]
pub struct CacheLock(#[allow(dead_code)] fs::File);

/// The image of app `app` (its id) under the build data dir.
pub fn image_path(data_dir: &Path, app: &str) -> PathBuf {
    data_dir.join("build-cache").join(format!("{app}.img"))
}

/// Mounts app `app`'s cache (an image of `bytes`, at least [`MIN_CACHE_BYTES`]; made, or remade
/// when the limit changed or it cannot be mounted) at `target`, an empty directory. `None` if
/// another build has it: `target` is then left as it is (an empty directory). Blocking.
pub fn mount(
    data_dir: &Path,
    app: &str,
    bytes: u64,
    target: &Path,
) -> io::Result<Option<CacheLock>> {
    let root = data_dir.join("build-cache");
    fs::create_dir_all(&root)?;
    // The plain directory caches were before: unbounded, so not carried over.
    let legacy = root.join(app);
    if fs::symlink_metadata(&legacy).is_ok() {
        crate::tree::remove_tree(&legacy)?;
    }
    let image = image_path(data_dir, app);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&image)?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(e);
    }
    let bytes = bytes.max(MIN_CACHE_BYTES);
    fs::create_dir_all(target)?;
    let fresh = file.metadata()?.len() != bytes;
    if fresh {
        format(&file, &image, bytes)?;
    }
    if let Err(e) = mount_image(&image, target) {
        if fresh {
            return Err(e);
        }
        tracing::warn!(
            "cannot mount the build cache {}: {e}; starting it afresh",
            image.display()
        );
        format(&file, &image, bytes)?;
        mount_image(&image, target)?;
    }
    if fresh {
        let _ = fs::remove_dir(target.join("lost+found"));
    }
    Ok(Some(CacheLock(file)))
}

/// Unmounts a cache [`mount`] mounted at `target` (if it is mounted); drop its lock after this.
pub fn unmount(target: &Path) {
    slipway_host::runc::disk::unmount_dir(target);
}

/// An empty ext4 filesystem of `bytes` in `image` (sparse; no journal: a cache lost in a crash
/// is remade, see [`mount`]).
fn format(file: &fs::File, image: &Path, bytes: u64) -> io::Result<()> {
    file.set_len(0)?;
    file.set_len(bytes)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-m", "0"])
        .args(["-O", "^has_journal,^resize_inode"])
        .args(["-E", "nodiscard,lazy_itable_init=1"])
        .arg(image)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 of the build cache failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn mount_image(image: &Path, target: &Path) -> io::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
        .arg(image)
        .arg(target)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mount: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
