//! A job's files that travel through the blob store ([`crate::types::JobFiles`]): a build job
//! gets its source, buildpacks and cache this way and hands back its `/app` and new cache, so it
//! can run on any host — no directory of the controller's machine is bind-mounted into it.
//!
//! - **Inputs.** Each entry is a directory of `<data>/job-files/<job id>/<index>/d`, bind-mounted
//!   at the entry's target. Its blob is fetched to `<data>/job-files/tmp/` while hashed (a blob
//!   larger than the entry's bound, or whose content does not match its digest, is refused) and
//!   unpacked with the layer rules ([`crate::layers::unpack`]: nothing outside the directory,
//!   nothing through a symlink, no device nodes). Directory names come from the index, never
//!   from the job's words.
//! - **Bounded.** The job's entries share one filesystem of the job's disk limit; an entry with
//!   `max_bytes` gets its own filesystem of that size. A job writing past it gets ENOSPC, not
//!   the host's disk.
//! - **Owned by the job.** The top of a writable entry belongs to the job's uid/gid (what is
//!   inside keeps the owners the tarball names: the host unpacks as root).
//! - **Outputs.** After the job exits, each `collect` entry is packed (gzip; symlinks stay
//!   symlinks, special files are left out) and put into the blob store; the digests are
//!   reported in [`crate::types::JobInfo::outputs`], keyed by target, before the job is seen
//!   as ended.
//! - **No blob store, no such job.** A host started without `--blob-store` refuses a job that
//!   names files, saying so.

use crate::types::{BindMount, HostJob, JobFiles};
use anyhow::{Context, Result, bail};
use slipway_blobstore::{BlobStore, Digest, Hasher};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fetch that makes no progress for this long fails instead of holding the job forever.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most entries a job may name (a build names seven).
pub const MAX_FILES: usize = 32;

/// The host's side of [`JobFiles`]: `<data>/job-files`.
pub struct JobFileStore {
    root: PathBuf,
    blobs: Option<Arc<dyn BlobStore>>,
}

impl JobFileStore {
    /// Opens `root`. Temporary files are of fetches and collections in flight, and none is at
    /// open (the agent is starting): whatever a killed agent left there is removed. Job dirs
    /// stay (a job may outlive its agent): [`JobFileStore::sweep`] removes the ones no job uses.
    pub fn open(root: impl Into<PathBuf>, blobs: Option<Arc<dyn BlobStore>>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", root.display()))?;
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten().take(100_000) {
                let _ = crate::layers::remove_tree(&e.path());
            }
        }
        Ok(JobFileStore { root, blobs })
    }

    /// Removes (unmounting first) the files of every job not in `keep`: at agent start, after
    /// the jobs that still run were re-adopted. Returns how many job dirs went.
    pub async fn sweep(&self, keep: &std::collections::HashSet<String>) -> usize {
        let mut stale = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("jobs")) {
            for e in rd.flatten().take(100_000) {
                let id = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&id) && crate::runc::check_id(&id).is_ok() {
                    stale.push(id);
                }
            }
        }
        for id in &stale {
            self.remove(id).await;
        }
        stale.len()
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.root.join("jobs").join(id)
    }

    /// Fetches and unpacks `job`'s files; returns the bind mounts that put them at their
    /// targets (none when the job names no files). On error nothing is left behind.
    pub async fn prepare(&self, job: &HostJob) -> Result<Vec<BindMount>> {
        let files = &job.config.files;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let Some(blobs) = self.blobs.clone() else {
            bail!(
                "this host has no blob store configured (start it with --blob-store URL), so it \
                 cannot run a job whose files come from the blob store (a build)"
            );
        };
        check(files)?;
        let res = self.prepare_in(&blobs, job).await;
        if res.is_err() {
            self.remove(&job.id).await;
        }
        res
    }

    async fn prepare_in(
        &self,
        blobs: &Arc<dyn BlobStore>,
        job: &HostJob,
    ) -> Result<Vec<BindMount>> {
        let dir = self.job_dir(&job.id);
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (d, bytes) = (dir.clone(), job.resources.disk());
        blocking(move || crate::runc::disk::mount_bounded_dir(&d, bytes)).await?;
        let mut mounts = Vec::new();
        for (i, f) in job.config.files.iter().enumerate() {
            let base = dir.join(i.to_string());
            tokio::fs::create_dir(&base).await?;
            let bound = match f.max_bytes {
                Some(b) => {
                    // A filesystem has a least size; the limit still bounds what is fetched.
                    let (base, size) = (base.clone(), b.max(crate::types::MIN_DISK));
                    blocking(move || crate::runc::disk::mount_bounded_dir(&base, size)).await?;
                    b
                }
                None => job.resources.disk(),
            };
            let content = base.join("d");
            match &f.from {
                Some(digest) => {
                    let d: Digest = digest
                        .parse()
                        .with_context(|| format!("files for {}: bad digest", f.target))?;
                    let tmp = self.root.join("tmp").join(format!("{}-{i}", job.id));
                    let fetched = fetch(blobs.as_ref(), &d, &tmp, bound).await;
                    let unpacked = match fetched {
                        Ok(()) => {
                            let (t, c) = (tmp.clone(), content.clone());
                            blocking(move || crate::layers::unpack_file(&t, &c)).await
                        }
                        Err(e) => Err(e),
                    };
                    let _ = tokio::fs::remove_file(&tmp).await;
                    unpacked.with_context(|| format!("cannot prepare {} of the job", f.target))?;
                }
                None => tokio::fs::create_dir(&content).await?,
            }
            if !f.readonly {
                let (uid, gid) = (job.config.uid, job.config.gid);
                std::os::unix::fs::lchown(&content, uid, gid)?;
            }
            mounts.push(BindMount {
                source: content,
                target: f.target.clone(),
                readonly: f.readonly,
            });
        }
        Ok(mounts)
    }

    /// Whether one of the job's file filesystems is (nearly) full: a job that failed then most
    /// likely failed for that (ENOSPC), as with a full writable layer.
    pub fn full(&self, job: &HostJob) -> bool {
        let dir = self.job_dir(&job.id);
        crate::runc::disk::is_full_at(&dir)
            || job.config.files.iter().enumerate().any(|(i, f)| {
                f.max_bytes.is_some() && crate::runc::disk::is_full_at(&dir.join(i.to_string()))
            })
    }

    /// Packs the job's `collect` entries and puts them into the blob store: target → digest,
    /// and the words for each entry that could not be stored (the others still are).
    /// Call after the job's process exited and before [`JobFileStore::remove`].
    pub async fn collect(&self, job: &HostJob) -> (BTreeMap<String, String>, Vec<String>) {
        let (mut out, mut errors) = (BTreeMap::new(), Vec::new());
        let Some(blobs) = &self.blobs else {
            return (out, errors);
        };
        let dir = self.job_dir(&job.id);
        for (i, f) in job.config.files.iter().enumerate() {
            if !f.collect {
                continue;
            }
            let content = dir.join(i.to_string()).join("d");
            let tmp = self.root.join("tmp").join(format!("{}-{i}.out", job.id));
            let (c, t) = (content.clone(), tmp.clone());
            let packed = blocking(move || pack(&c, &t)).await;
            let stored = match packed {
                Ok(()) => match tokio::fs::File::open(&tmp).await {
                    Ok(file) => blobs
                        .put(Box::new(file), None)
                        .await
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e),
            };
            let _ = tokio::fs::remove_file(&tmp).await;
            match stored {
                Ok(info) => {
                    out.insert(f.target.clone(), info.digest.to_string());
                }
                Err(e) => errors.push(format!(
                    "cannot store the job's {} in the blob store: {e:#}",
                    f.target
                )),
            }
        }
        (out, errors)
    }

    /// Unmounts and removes the job's files (idempotent).
    pub async fn remove(&self, id: &str) {
        let dir = self.job_dir(id);
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    crate::runc::disk::unmount_dir(&e.path());
                }
            }
            crate::runc::disk::unmount_dir(&dir);
            let _ = crate::layers::remove_tree(&dir);
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a blocking task panicked")?
}

/// Targets must be distinct, absolute, clean paths (no `.`, `..` or `//`) and not `/`.
fn check(files: &[JobFiles]) -> Result<()> {
    if files.len() > MAX_FILES {
        bail!(
            "the job names {} file entries; at most {MAX_FILES}",
            files.len()
        );
    }
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let p = Path::new(&f.target);
        let clean = f.target.starts_with('/')
            && f.target.len() > 1
            && !f.target.ends_with('/')
            && !f.target.contains("//")
            && !f.target.contains('\0')
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && !p
                .components()
                .any(|c| c.as_os_str() == "." || c.as_os_str() == "..");
        if !clean {
            bail!(
                "file target {:?} must be an absolute path without '.', '..' or '//' (and not /)",
                f.target
            );
        }
        if f.max_bytes.is_some_and(|b| b > crate::types::MAX_DISK) {
            bail!(
                "file entry {} asks for more than {} of disk",
                f.target,
                crate::types::human_bytes(crate::types::MAX_DISK)
            );
        }
        if !seen.insert(f.target.as_str()) {
            bail!("file target {} is named twice", f.target);
        }
    }
    Ok(())
}

/// Streams blob `d` into the new file `path`, verifying its digest; refuses one over `max`.
pub async fn fetch(blobs: &dyn BlobStore, d: &Digest, path: &Path, max: u64) -> Result<()> {
    let got = tokio::time::timeout(STALL_TIMEOUT, blobs.get(d))
        .await
        .map_err(|_| anyhow::anyhow!("cannot fetch {d}: the blob store did not answer"))?
        .with_context(|| format!("cannot fetch {d}"))?;
    let Some((info, mut body)) = got else {
        bail!("cannot fetch {d}: not in the blob store");
    };
    if info.size > max {
        bail!(
            "blob {d} has {} bytes, more than the limit of {max}",
            info.size
        );
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let (mut hasher, mut total) = (Hasher::new(), 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(STALL_TIMEOUT, body.read(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("cannot fetch {d}: the download stalled"))?
            .with_context(|| format!("cannot fetch {d}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            bail!("blob {d} is larger than the limit of {max} bytes");
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
    }
    file.flush().await?;
    let actual = hasher.finish();
    if actual != *d {
        bail!("cannot fetch {d}: the blob store sent content with digest {actual}");
    }
    Ok(())
}

/// Tars the tree at `dir` (gzip, fast) into the new file `out`: directories, regular files and
/// symlinks (never followed), with their modes and owners; special files are left out. The
/// tree may be hostile (a job wrote it): it is walked iteratively, at most
/// [`crate::layers::MAX_DEPTH`] deep. Blocking.
pub fn pack(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut todo: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((rel, depth)) = todo.pop() {
        let path = if rel.as_os_str().is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .collect::<std::io::Result<_>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let (p, r) = (e.path(), rel.join(e.file_name()));
            let md = std::fs::symlink_metadata(&p)?;
            let ft = md.file_type();
            if ft.is_dir() {
                if depth + 1 > crate::layers::MAX_DEPTH {
                    let s = r.to_string_lossy();
                    let at = match s.char_indices().nth(60) {
                        Some((i, _)) => format!("{}…", &s[..i]),
                        None => s.to_string(),
                    };
                    bail!("deeper than {} levels (at {at})", crate::layers::MAX_DEPTH);
                }
                tar.append_dir(&r, &p)?;
                todo.push((r, depth + 1));
            } else if ft.is_symlink() {
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&md);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &r, std::fs::read_link(&p)?)?;
            } else if ft.is_file() {
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)?;
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&f.metadata()?);
                tar.append_data(&mut h, &r, &mut f)?;
            }
        }
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}
