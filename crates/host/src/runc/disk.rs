//! Every job's writable layer is a filesystem of its own: a sparse ext4 image of the job's disk
//! limit (`<container dir>/disk.img`), loop-mounted at `bundle/disk`, holding the overlay's
//! `upper/` and `work/`. A job that writes past its limit gets `ENOSPC` ("No space left on
//! device") from the kernel, wherever in its rootfs it writes (`/app`, `/var`, `/tmp`…), and the
//! host's disk holds at most the image's size for it.
//!
//! Why an image per job and not project quota on one shared filesystem: ext4 project quota needs
//! the kernel's `CONFIG_QFMT_V2` (this one refuses a `quota,project` filesystem read-write
//! without it), XFS quota needs `CONFIG_XFS_QUOTA`, and both would answer `EDQUOT` ("Disk quota
//! exceeded") instead of the plain `ENOSPC` programs expect. A per-job image needs neither, keeps
//! no state shared between jobs or agents (nothing to set up at agent start, nothing to adopt
//! after a restart: a running job's mount stays where it is), and costs about 10 ms per job:
//! `mkfs.ext4` on a sparse file writes ~150 KiB (no journal, lazy inode tables), and the loop
//! device is configured with two ioctls and mounted with mount(2).

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The image file of a job, in its container dir.
pub fn image_path(container_dir: &Path) -> PathBuf {
    container_dir.join("disk.img")
}

/// Where the image is mounted: next to the overlay's mount point, never inside it.
pub fn mount_point(container_dir: &Path) -> PathBuf {
    container_dir.join("bundle/disk")
}

/// The job's disk limit: its image's size.
pub fn limit(container_dir: &Path) -> Option<u64> {
    std::fs::metadata(image_path(container_dir))
        .ok()
        .map(|m| m.len())
}

/// Creates the job's image of `bytes` (taken from `pool` when it has one of that size, else
/// formatted now), mounts it and returns the overlay's `(upper, work)` inside it. On error the
/// caller's cleanup unmounts and removes what was made.
pub fn create(
    container_dir: &Path,
    bytes: u64,
    pool: Option<&Arc<Pool>>,
) -> Result<(PathBuf, PathBuf)> {
    use crate::types::{MAX_DISK, MIN_DISK, human_bytes};
    if !(MIN_DISK..=MAX_DISK).contains(&bytes) {
        bail!(
            "the job's disk limit {} is outside {}..{}",
            human_bytes(bytes),
            human_bytes(MIN_DISK),
            human_bytes(MAX_DISK)
        );
    }
    let image = image_path(container_dir);
    let target = mount_point(container_dir);
    std::fs::create_dir_all(&target)?;
    if !pool.is_some_and(|p| p.take(bytes, &image)) {
        make_image(&image, bytes)?;
    }
    mount_loop(&image, &target)?;
    let (upper, work) = (target.join("upper"), target.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    Ok((upper, work))
}

/// Mounts a fresh filesystem of `bytes` at the empty directory `dir`, its image inside `dir`
/// (hidden by the mount, removed with the directory): a directory whose writers get ENOSPC past
/// `bytes`, e.g. a build's `/app`. Undo with [`unmount_dir`] before removing `dir`.
pub fn mount_bounded_dir(dir: &Path, bytes: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let image = dir.join(".disk.img");
    make_image(&image, bytes)?;
    mount_loop(&image, dir)?;
    let _ = std::fs::remove_dir(dir.join("lost+found"));
    Ok(())
}

/// Unmounts what [`mount_bounded_dir`] mounted at `dir`, if it is mounted.
pub fn unmount_dir(dir: &Path) {
    if super::is_mounted(dir) {
        super::unmount(dir);
    }
}

/// Whether the filesystem mounted at `dir` is (nearly) full: less than 1 MiB or 1 % left.
pub fn is_full_at(dir: &Path) -> bool {
    if !super::is_mounted(dir) {
        return false;
    }
    let Ok(p) = CString::new(dir.display().to_string()) else {
        return false;
    };
    // SAFETY: zeroed statvfs is valid; statvfs writes it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and pointer.
    if unsafe { libc::statvfs(p.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return false;
    }
    let free = st.f_bavail * st.f_frsize;
    let total = st.f_blocks * st.f_frsize;
    free < (1 << 20).max(total / 100)
}

/// Formatted, never-mounted images waiting for jobs, in `<data>/disk-pool/` (on the containers'
/// filesystem): taking one is a rename, so `mkfs.ext4` (a process and ~150 KiB of writes, 3–8 ms
/// here, a fifth of a job's start) runs off the start path, in a thread that tops the pool up
/// after each take. Each image is used once (it goes with its job's container dir), so nothing
/// a job wrote reaches another. The pool keeps [`Pool::DEPTH`] images of each of the last
/// [`Pool::SIZES`] sizes asked for (the default one always): ~150 KiB of disk each.
pub struct Pool {
    dir: PathBuf,
    default_bytes: u64,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Sizes kept besides the default, most recently asked for first.
    sizes: Vec<u64>,
    refilling: bool,
    /// A take came while the thread was filling: it looks again before it stops.
    again: bool,
    /// Names images uniquely.
    seq: u64,
}

impl Pool {
    pub const DEPTH: usize = 2;
    pub const SIZES: usize = 4;

    /// A pool in `dir` for jobs of `default_bytes` (and whatever sizes jobs ask for); images an
    /// earlier agent left whole are kept. Starts filling it in the background.
    pub fn start(dir: PathBuf, default_bytes: u64) -> Result<Arc<Pool>> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the disk image pool {}", dir.display()))?;
        // A half-formatted image of a killed agent is a `.tmp`, never taken.
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let pool = Arc::new(Pool {
            dir,
            default_bytes,
            state: Mutex::new(PoolState::default()),
        });
        pool.refill();
        Ok(pool)
    }

    /// Moves a pooled image of `bytes` to `dest`; false when there is none (the caller formats
    /// one). Tops the pool up in the background either way.
    pub fn take(self: &Arc<Pool>, bytes: u64, dest: &Path) -> bool {
        if bytes != self.default_bytes {
            let mut st = self.state.lock().expect("pool");
            st.sizes.retain(|&b| b != bytes);
            st.sizes.insert(0, bytes);
            st.sizes.truncate(Self::SIZES - 1);
        }
        let mut taken = false;
        for img in self.images(bytes) {
            match std::fs::rename(&img, dest) {
                Ok(()) => {
                    taken = true;
                    break;
                }
                // Another job took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!("cannot take the pooled disk image {}: {e}", img.display());
                    break;
                }
            }
        }
        self.refill();
        taken
    }

    /// The pooled images: `(bytes, path)` of every `<bytes>-<seq>.img`.
    fn all_images(&self) -> Vec<(u64, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let (bytes, rest) = name.to_str()?.split_once('-')?;
                rest.ends_with(".img").then_some(())?;
                Some((bytes.parse().ok()?, e.path()))
            })
            .collect()
    }

    fn images(&self, bytes: u64) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .all_images()
            .into_iter()
            .filter(|(b, _)| *b == bytes)
            .map(|(_, p)| p)
            .collect();
        v.sort();
        v
    }

    /// Starts the one thread that formats images until every kept size has [`Pool::DEPTH`],
    /// and removes those of sizes no longer kept.
    fn refill(self: &Arc<Pool>) {
        {
            let mut st = self.state.lock().expect("pool");
            if st.refilling {
                st.again = true;
                return;
            }
            st.refilling = true;
        }
        let pool = self.clone();
        std::thread::spawn(move || {
            loop {
                let (sizes, seq) = {
                    let mut st = pool.state.lock().expect("pool");
                    st.seq += 1;
                    let mut sizes = vec![pool.default_bytes];
                    sizes.extend(st.sizes.iter().copied());
                    (sizes, st.seq)
                };
                let have = pool.all_images();
                for (b, p) in &have {
                    if !sizes.contains(b) {
                        let _ = std::fs::remove_file(p);
                    }
                }
                let short = sizes
                    .iter()
                    .copied()
                    .find(|&b| have.iter().filter(|(h, _)| *h == b).count() < Self::DEPTH);
                let Some(bytes) = short else {
                    let mut st = pool.state.lock().expect("pool");
                    if std::mem::take(&mut st.again) {
                        continue;
                    }
                    st.refilling = false;
                    return;
                };
                let name = format!("{bytes}-{}-{}", std::process::id(), seq);
                let tmp = pool.dir.join(format!("{name}.tmp"));
                let made = make_image(&tmp, bytes).and_then(|()| {
                    Ok(std::fs::rename(&tmp, pool.dir.join(format!("{name}.img")))?)
                });
                if let Err(e) = made {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!("the disk image pool is not refilled: {e:#}");
                    pool.state.lock().expect("pool").refilling = false;
                    return;
                }
            }
        });
    }
}

/// A sparse file of `bytes` (the host's blocks are used only as the job writes), formatted.
fn make_image(image: &Path, bytes: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .with_context(|| format!("creating the disk image {}", image.display()))?;
    f.set_len(bytes)?;
    drop(f);
    mkfs(image)
}

/// `mkfs.ext4` for a writable layer: no reserved blocks (root in the job gets the whole limit
/// too), no journal (the layer does not outlive a host crash anyway: the job is gone), no resize
/// inode, lazily initialised inode tables (so only the metadata is written), one inode per 8 KiB.
fn mkfs(image: &Path) -> Result<()> {
    let out = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-i",
            "8192",
            "-m",
            "0",
            "-O",
            "^has_journal,^resize_inode",
            "-E",
            "nodiscard,lazy_itable_init=1,root_owner=0:0",
        ])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running mkfs.ext4 for the job's disk (install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 of the job's disk image {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// The loop device lets go of its file on the last close after the unmount: unmounting the
/// image is all the cleanup it needs, and a failed mount leaves no device behind.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Binds `image` to a free loop device and mounts it at `target`. Agents and jobs race for free
/// devices: a device another process configured first answers EBUSY, and we take the next.
fn mount_loop(image: &Path, target: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (is the loop driver available?)")?;
    for _ in 0..64 {
        // SAFETY: ioctl on an open fd with no argument.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            bail!(
                "no free loop device for the job's disk: {}",
                std::io::Error::last_os_error()
            );
        }
        let path = format!("/dev/loop{n}");
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(d) => d,
            // devtmpfs creates the node a moment after the device.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("opening {path}")),
        };
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = file.as_raw_fd() as u32;
        cfg.info.flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        cfg.info.file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: valid fd and a pointer to a properly laid out loop_config.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            bail!("configuring {path} for the job's disk: {e}");
        }
        let c = |s: &str| CString::new(s).expect("no NUL in paths");
        let (src, tgt, fs, data) = (c(&path), c(&target.display().to_string()), c("ext4"), c(""));
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                fs.as_ptr(),
                // As the overlay: nothing in a job's layer is setuid or a device to the host.
                libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            bail!(
                "mounting the job's disk {} failed: {}",
                image.display(),
                std::io::Error::last_os_error()
            );
        }
        // Closing `dev` now is what makes the device go with the unmount (autoclear).
        return Ok(());
    }
    bail!("no free loop device for the job's disk after 64 tries")
}

/// Whether the job's disk is (nearly) full. Read after the job ended, it explains an exit
/// ("disk full") the way `oom_killed` explains a kill.
pub fn is_full(container_dir: &Path) -> bool {
    is_full_at(&mount_point(container_dir))
}
