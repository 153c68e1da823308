//! Blobs on the local filesystem: `<dir>/sha256/<hex>`, written through `<dir>/tmp/`.
//!
//! A put streams the body into a temp file while hashing it, verifies the digest, fsyncs and
//! renames the file into place. The rename is atomic, so a reader never sees a partial blob, two
//! concurrent puts of the same content both succeed with the same file, and an interrupted put
//! leaves only a temp file, which [`FsBlobStore::open`] removes.

use crate::{BlobError, BlobInfo, BlobStore, Body, Digest, Hasher};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Copy buffer: big enough that syscalls don't dominate, small enough to keep memory flat.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating) a store in `dir` and removes temp files of interrupted uploads.
    /// One process owns a store directory: a put in flight in another process would lose its
    /// temp file.
    pub fn open(dir: impl AsRef<Path>) -> Result<FsBlobStore, BlobError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join("sha256"))?;
        let tmp = dir.join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(FsBlobStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join("sha256").join(d.hex())
    }

    fn info(d: &Digest, meta: &std::fs::Metadata) -> BlobInfo {
        BlobInfo {
            digest: d.clone(),
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Removes the temp file unless it was renamed into place (error, mismatch, cancelled future).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, mut body: Body, expected: Option<&Digest>) -> Result<BlobInfo, BlobError> {
        // Already stored: read nothing — the content is named by the digest.
        if let Some(d) = expected
            && self.head(d).await?.is_some()
        {
            // Someone is using it again: it is young again for garbage collection.
            let path = self.path(d);
            let touched = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&path)?.set_modified(std::time::SystemTime::now())
            })
            .await
            .map_err(std::io::Error::other)?;
            match touched {
                Ok(()) => {}
                // Deleted meanwhile: store it anew.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(info) = self.head(d).await? {
                return Ok(info);
            }
        }
        let tmp_path = self.dir.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let mut guard = TempGuard(Some(tmp_path.clone()));
        let mut file = tokio::fs::File::create(&tmp_path).await?;
        let mut hasher = Hasher::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = body.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
            size += n as u64;
        }
        let actual = hasher.finish();
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let dest = self.path(&actual);
        // Blobs are read-only: nothing ever rewrites one in place.
        tokio::fs::set_permissions(
            &tmp_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o444),
        )
        .await?;
        tokio::fs::rename(&tmp_path, &dest).await?;
        guard.0 = None;
        let meta = tokio::fs::metadata(&dest).await?;
        tracing::debug!(digest = %actual, size, "blob stored");
        Ok(Self::info(&actual, &meta))
    }

    async fn get(&self, d: &Digest) -> Result<Option<(BlobInfo, Body)>, BlobError> {
        match tokio::fs::File::open(self.path(d)).await {
            Ok(f) => {
                let meta = f.metadata().await?;
                Ok(Some((Self::info(d, &meta), Box::new(f))))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn head(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        match tokio::fs::metadata(self.path(d)).await {
            Ok(meta) => Ok(Some(Self::info(d, &meta))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, d: &Digest) -> Result<bool, BlobError> {
        match tokio::fs::remove_file(self.path(d)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(self.dir.join("sha256")).await?;
        while let Some(entry) = rd.next_entry().await? {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(d) = Digest::from_hex(&name) else {
                continue;
            };
            match entry.metadata().await {
                Ok(meta) => out.push(Self::info(&d, &meta)),
                // Deleted between read_dir and stat.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
