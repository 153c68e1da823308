//! The host's layer cache: blob-store layers (slugs, image layers) fetched, verified and
//! unpacked once per host into `<data>/layers/<hex>`, then mounted read-only by every job that
//! names them.
//!
//! - **Once per digest.** A per-digest lock makes concurrent jobs wait for one fetch; the second
//!   job finds the directory and reuses it (a cache hit). An unpack goes to
//!   `<data>/layers/tmp/` and is renamed into place, so a crash never leaves a half layer under
//!   its digest; `tmp/` is emptied when the cache is opened.
//! - **Verified.** The blob is streamed to a temp file while hashing and unpacked only if its
//!   digest matches: a corrupt or substituted blob is never unpacked.
//! - **Hostile-safe unpacking** ([`unpack`]). Layers come from users (`image push`, buildpacks),
//!   so a tarball must not write outside its directory: leading `/` is stripped (absolute paths
//!   become relative to the layer, as Docker and GNU tar do); an entry with a `..` component
//!   refuses the whole layer; nothing is written through a symlink (an entry whose parent is a
//!   symlink refuses the layer; an existing symlink at the entry's own path is replaced, never
//!   followed); hard links must name a regular file an earlier entry of the same layer wrote;
//!   device nodes and fifos are skipped with a warning. Ownership and mode bits (setuid
//!   included) are kept: they only matter inside the container.
//! - **Whiteouts.** OCI/AUFS whiteouts become overlayfs ones: `.wh.NAME` → a 0:0 character
//!   device `NAME`, `.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use slipway_blobstore::{BlobStore, Digest, Hasher};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deepest entry a layer may have (path components). Deeper trees are refused: nothing needs
/// them, and every walk over a tree (here, in the build, in the kernel's path lookup) costs in
/// proportion to its depth. The build refuses source and slugs deeper than this too.
pub const MAX_DEPTH: usize = 1000;

/// A fetch that makes no progress for this long fails instead of holding the job forever.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Cache counters, reported in the host status (`layer_cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCacheStats {
    /// Layers a job needed that were already unpacked (including ones another job was
    /// unpacking at the time).
    pub hits: u64,
    /// Layers fetched and unpacked.
    pub misses: u64,
    /// Fetches or unpacks that failed.
    pub failures: u64,
}

/// The layer cache of one host.
pub struct LayerCache {
    dir: PathBuf,
    blobs: Option<Arc<dyn BlobStore>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
}

impl LayerCache {
    /// Opens the cache in `dir` (normally `<host data>/layers`), removing unfinished unpacks.
    pub fn open(dir: impl Into<PathBuf>, blobs: Option<Arc<dyn BlobStore>>) -> Result<Self> {
        let dir = dir.into();
        let tmp = dir.join("tmp");
        if tmp.exists() {
            remove_tree(&tmp).with_context(|| format!("cannot clean {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(LayerCache {
            dir,
            blobs,
            locks: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Where the layer with this digest is (or will be) unpacked.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn stats(&self) -> LayerCacheStats {
        LayerCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// The unpacked directory of layer `digest`, fetching and unpacking it first if needed.
    pub async fn resolve(&self, digest: &str) -> Result<PathBuf> {
        let d: Digest = digest
            .parse()
            .map_err(|e| anyhow::anyhow!("cannot fetch layer {digest}: {e}"))?;
        let dest = self.path(&d);
        // Under the digest's lock, so `prune` cannot remove it between the check and the touch.
        let lock = self.lock(d.hex());
        let _held = lock.lock().await;
        if dest.is_dir() {
            touch(&dest);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(dest);
        }
        match self.fetch_and_unpack(&d, &dest).await {
            Ok(warnings) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                for w in warnings {
                    tracing::warn!(layer = %d, "{w}");
                }
                tracing::info!(layer = %d, "layer unpacked");
                Ok(dest)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn lock(&self, hex: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("layer locks")
            .entry(hex.to_string())
            .or_default()
            .clone()
    }

    /// Removes unpacked layers that no job in `in_use` (digests) needs and that no job
    /// resolved for `idle`; returns their digests. A job starting meanwhile either touched the
    /// layer first (it is kept) or finds it gone and fetches it again.
    pub async fn prune(&self, in_use: &HashSet<String>, idle: Duration) -> Result<Vec<String>> {
        let keep: HashSet<&str> = in_use
            .iter()
            .map(|d| d.strip_prefix("sha256:").unwrap_or(d))
            .collect();
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(d) = Digest::from_hex(&name) else {
                continue;
            };
            if keep.contains(name.as_str()) {
                continue;
            }
            let lock = self.lock(&name);
            let Ok(_held) = lock.try_lock() else {
                continue;
            };
            let used = std::fs::metadata(e.path())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok());
            if used.is_none_or(|u| u < idle) {
                continue;
            }
            // Out of its name first, so nothing ever sees a half-removed layer.
            let doomed = self
                .dir
                .join("tmp")
                .join(format!("{name}-pruned-{}", uuid::Uuid::new_v4().simple()));
            std::fs::rename(e.path(), &doomed)?;
            let _ = tokio::task::spawn_blocking(move || remove_tree(&doomed)).await;
            tracing::info!(layer = %d, "removed an unused layer");
            removed.push(d.to_string());
        }
        Ok(removed)
    }

    async fn fetch_and_unpack(&self, d: &Digest, dest: &Path) -> Result<Vec<String>> {
        let Some(blobs) = &self.blobs else {
            bail!("cannot fetch layer {d}: this host has no blob store configured");
        };
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let blob_path = self.dir.join("tmp").join(format!("{}-{tag}.blob", d.hex()));
        let unpack_dir = self.dir.join("tmp").join(format!("{}-{tag}", d.hex()));
        let res = async {
            fetch(&**blobs, d, &blob_path).await?;
            let (b, u) = (blob_path.clone(), unpack_dir.clone());
            let warnings = tokio::task::spawn_blocking(move || unpack_file(&b, &u))
                .await
                .context("the unpack task failed")?
                .with_context(|| format!("cannot unpack layer {d}"))?;
            std::fs::rename(&unpack_dir, dest)
                .with_context(|| format!("cannot move layer {d} into {}", dest.display()))?;
            Ok(warnings)
        }
        .await;
        let _ = std::fs::remove_file(&blob_path);
        if res.is_err() && unpack_dir.exists() {
            let _ = remove_tree(&unpack_dir);
        }
        res
    }
}

/// Marks a layer as just used (its mtime), for `prune`.
fn touch(dir: &Path) {
    if let Err(e) =
        std::fs::File::open(dir).and_then(|f| f.set_modified(std::time::SystemTime::now()))
    {
        tracing::debug!("cannot touch {}: {e}", dir.display());
    }
}

/// Streams blob `d` into `path`, verifying its digest.
async fn fetch(blobs: &dyn BlobStore, d: &Digest, path: &Path) -> Result<()> {
    let got = tokio::time::timeout(STALL_TIMEOUT, blobs.get(d))
        .await
        .map_err(|_| anyhow::anyhow!("cannot fetch layer {d}: the blob store did not answer"))?
        .with_context(|| format!("cannot fetch layer {d}"))?;
    let Some((_, mut body)) = got else {
        bail!("cannot fetch layer {d}: not in the blob store");
    };
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(STALL_TIMEOUT, body.read(&mut buf))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot fetch layer {d}: the download stalled for {STALL_TIMEOUT:?}"
                )
            })?
            .with_context(|| format!("cannot fetch layer {d}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
    }
    file.flush().await?;
    let actual = hasher.finish();
    if actual != *d {
        bail!("cannot fetch layer {d}: the blob store sent content with digest {actual}");
    }
    Ok(())
}

/// How a layer blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Unpacks the (possibly compressed) tarball at `blob` into the new directory `dest`.
pub fn unpack_file(blob: &Path, dest: &Path) -> Result<Vec<String>> {
    let mut f = std::fs::File::open(blob)?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head)?;
    f.rewind()?;
    let f = BufReader::with_capacity(256 * 1024, f);
    match detect_compression(&head[..n]) {
        Compression::Gzip => unpack(flate2::read::MultiGzDecoder::new(f), dest),
        Compression::Zstd => unpack(zstd::stream::read::Decoder::with_buffer(f)?, dest),
        Compression::None => unpack(f, dest),
    }
}

/// uid and gid to give an entry (only when unpacking as root).
type Owner = Option<(u32, u32)>;

/// Unpacks an uncompressed tar stream into the new directory `dest` (see the module docs for
/// what is refused). Returns warnings (skipped entries).
pub fn unpack(reader: impl Read, dest: &Path) -> Result<Vec<String>> {
    std::fs::create_dir(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut archive = tar::Archive::new(reader);
    let mut warnings = Vec::new();
    // Regular files this layer wrote (hard link targets must be among them).
    let mut files: HashSet<PathBuf> = HashSet::new();
    // Directories with their mode and owner, applied last (a 0555 dir must stay writable
    // while its entries are unpacked).
    let mut dirs: Vec<(PathBuf, u32, Owner)> = Vec::new();
    for entry in archive.entries().context("not a tar archive")? {
        let mut entry = entry.context("the tarball is corrupt or truncated")?;
        let raw = entry.path().context("bad entry path")?.into_owned();
        let Some(rel) = normalize(&raw)? else {
            continue;
        };
        if rel.components().count() > MAX_DEPTH {
            bail!(
                "entry {} is more than {MAX_DEPTH} directories deep: refusing the layer",
                short(&raw)
            );
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let owner = match (root, header.uid(), header.gid()) {
            (true, Ok(u), Ok(g)) => Some((u as u32, g as u32)),
            _ => None,
        };
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        ensure_dirs(dest, &parent)?;
        if name == ".wh..wh..opq" {
            setxattr(&dest.join(&parent), "trusted.overlay.opaque", b"y")
                .with_context(|| format!("cannot mark {} opaque", parent.display()))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden.is_empty() {
                bail!("entry {} is a whiteout of nothing", raw.display());
            }
            let target = parent.join(hidden);
            clear(dest, &target, &mut files)?;
            mknod(&dest.join(&target), libc::S_IFCHR, 0)
                .with_context(|| format!("cannot create the whiteout for {}", target.display()))?;
            continue;
        }
        let path = dest.join(&rel);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        clear(dest, &rel, &mut files)?;
                        std::fs::create_dir(&path)?;
                    }
                    Err(_) => std::fs::create_dir(&path)?,
                }
                dirs.push((path, mode, owner));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                clear(dest, &rel, &mut files)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", rel.display()))?;
                std::io::copy(&mut entry, &mut f).with_context(|| {
                    format!("cannot unpack {}: truncated tarball?", rel.display())
                })?;
                // chown clears setuid bits: owner first, then the mode.
                if let Some((u, g)) = owner {
                    std::os::unix::fs::fchown(&f, Some(u), Some(g))?;
                }
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                files.insert(rel);
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .context("bad symlink target")?
                    .context("symlink without a target")?
                    .into_owned();
                clear(dest, &rel, &mut files)?;
                // The target is only ever resolved inside the container.
                std::os::unix::fs::symlink(&target, &path)
                    .with_context(|| format!("cannot create symlink {}", rel.display()))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&path, Some(u), Some(g))?;
                }
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .context("bad hard link target")?
                    .context("hard link without a target")?
                    .into_owned();
                let Some(target_rel) = normalize(&target)? else {
                    bail!("hard link {} points at the layer root", raw.display());
                };
                if !files.contains(&target_rel) {
                    bail!(
                        "hard link {} -> {} does not point at a file an earlier entry of this \
                         layer wrote",
                        raw.display(),
                        target.display()
                    );
                }
                clear(dest, &rel, &mut files)?;
                std::fs::hard_link(dest.join(&target_rel), &path)
                    .with_context(|| format!("cannot create hard link {}", rel.display()))?;
                files.insert(rel);
            }
            T::Char | T::Block | T::Fifo => {
                warnings.push(format!(
                    "skipped {} (device nodes and fifos are not unpacked)",
                    raw.display()
                ));
            }
            other => {
                warnings.push(format!(
                    "skipped {} (unsupported entry type {other:?})",
                    raw.display()
                ));
            }
        }
    }
    for (path, mode, owner) in dirs.into_iter().rev() {
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&path, Some(u), Some(g))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    // The rename that publishes the layer must not precede its content on disk.
    let d = std::fs::File::open(dest)?;
    // SAFETY: syncfs on a descriptor `d` owns and keeps open for the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(std::io::Error::last_os_error()).context("syncfs");
    }
    Ok(warnings)
}

/// The entry's path relative to the layer root: leading `/` and `.` dropped; `..` refused.
/// `None` for the root itself.
fn normalize(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => bail!(
                "entry {} contains '..': refusing a layer that writes outside its directory",
                p.display()
            ),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Creates the missing directories of `rel` under `root`, refusing to go through anything that
/// is not a real directory (a symlink `a -> /etc` must not let `a/passwd` reach /etc).
fn ensure_dirs(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => bail!(
                "entry under {} would be written through a symlink: refusing the layer",
                cur.strip_prefix(root).unwrap_or(&cur).display()
            ),
            Ok(_) => bail!(
                "entry under {} needs it to be a directory, but an earlier entry made it a file",
                cur.strip_prefix(root).unwrap_or(&cur).display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur)?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes whatever an earlier entry put at `rel` (never following a symlink there).
fn clear(root: &Path, rel: &Path, files: &mut HashSet<PathBuf>) -> Result<()> {
    let path = root.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            remove_tree(&path)?;
            files.retain(|f| !f.starts_with(rel));
        }
        Ok(_) => {
            std::fs::remove_file(&path)?;
            files.remove(rel);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The first 200 bytes of a path, for error messages (a hostile one can be megabytes long).
fn short(p: &Path) -> String {
    let s = p.to_string_lossy();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}

/// `rm -rf` for trees users made (layers, build dirs, caches), whatever their depth: iterative
/// (an explicit list, no recursion: a 100,000-deep tree must not overflow the caller's stack,
/// nor hold a file descriptor per level like `std::fs::remove_dir_all`), never following a
/// symlink (a symlink is removed, not its target). A directory whose path grows past
/// [`REMOVE_REHOME_BYTES`] is first moved up to the top of the tree, so no path handed to the
/// kernel nears `PATH_MAX`. Meant for trees nothing else writes to meanwhile. A missing `top` is
/// not an error.
pub fn remove_tree(top: &Path) -> std::io::Result<()> {
    use std::io::ErrorKind::NotFound;
    match std::fs::symlink_metadata(top) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return std::fs::remove_file(top),
        Err(e) if e.kind() == NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    // (dir, its entries were listed): a dir is removed when it comes up the second time.
    let mut todo: Vec<(PathBuf, bool)> = vec![(top.to_path_buf(), false)];
    let mut moved = 0u64;
    while let Some((dir, listed)) = todo.pop() {
        if listed {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != NotFound => return Err(e),
                _ => continue,
            }
        }
        todo.push((dir.clone(), true));
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let p = e.path();
            if !e.file_type()?.is_dir() {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != NotFound => return Err(e),
                    _ => continue,
                }
            }
            if p.as_os_str().len() > REMOVE_REHOME_BYTES && dir != top {
                moved += 1;
                let up = top.join(format!(".slipway-rm-{moved}-{}", std::process::id()));
                std::fs::rename(&p, &up)?;
                todo.push((up, false));
            } else {
                todo.push((p, false));
            }
        }
    }
    Ok(())
}

/// See [`remove_tree`]: well under `PATH_MAX` (4096) with room for one more name (255), and
/// short enough that each lookup of a path walks few components.
const REMOVE_REHOME_BYTES: usize = 512;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; mknod does not keep it.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn setxattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let c = cstr(p)?;
    let n = CString::new(name)?;
    // SAFETY: NUL-terminated `c` and `n` and the `value` slice with its own length, all alive for
    // the call; lsetxattr keeps none of the pointers.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A chain of `depth` directories `d/d/…` under `top`, made relative to a descriptor so
    /// it can go deeper than `PATH_MAX` (as a process inside a container can).
    fn deep_chain(top: &Path, depth: usize) {
        let c = cstr(top).unwrap();
        let d = CString::new("d").unwrap();
        // SAFETY: plain syscalls on descriptors this function owns.
        unsafe {
            let mut fd = OwnedFd::from_raw_fd(libc::open(c.as_ptr(), libc::O_DIRECTORY));
            for _ in 0..depth {
                use std::os::fd::AsRawFd;
                assert_eq!(libc::mkdirat(fd.as_raw_fd(), d.as_ptr(), 0o755), 0);
                let next = libc::openat(fd.as_raw_fd(), d.as_ptr(), libc::O_DIRECTORY);
                assert!(next >= 0);
                fd = OwnedFd::from_raw_fd(next);
            }
            let f = CString::new("f.txt").unwrap();
            use std::os::fd::AsRawFd;
            let file = libc::openat(
                fd.as_raw_fd(),
                f.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            );
            assert!(file >= 0);
            libc::close(file);
        }
    }

    #[test]
    fn remove_tree_removes_a_tree_deeper_than_path_max_on_a_small_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        std::fs::create_dir(&top).unwrap();
        deep_chain(&top, 5000);
        std::os::unix::fs::symlink(tmp.path(), top.join("up")).unwrap();
        std::fs::write(tmp.path().join("outside"), "kept").unwrap();
        // 64 KiB of stack: any recursion per level would overflow it.
        let t = top.clone();
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || remove_tree(&t).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert!(!top.exists());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("outside")).unwrap(),
            "kept",
            "the symlink was removed, not followed"
        );
        remove_tree(&top).unwrap();
    }

    #[test]
    fn a_layer_entry_deeper_than_1000_levels_refuses_the_layer() {
        let tar_of = |path: &str| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, path, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let tmp = tempfile::tempdir().unwrap();
        let ok = format!("{}f", "d/".repeat(999));
        unpack(&tar_of(&ok)[..], &tmp.path().join("ok")).unwrap();
        assert!(tmp.path().join("ok").join(&ok).is_file());
        let deep = format!("{}f", "d/".repeat(1000));
        let e = unpack(&tar_of(&deep)[..], &tmp.path().join("deep")).unwrap_err();
        assert!(
            format!("{e:#}").contains("more than 1000 directories deep"),
            "{e:#}"
        );
    }
}
