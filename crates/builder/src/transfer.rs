//! A build's directories to and from the blob store: the build job runs on any host, which
//! gets its source, env, buildpacks and cache as blobs and hands back its `/app`, output and
//! new cache the same way (see `slipway_host::job_files`). Nothing of this machine is
//! bind-mounted into the job.

use crate::pipeline::BuildError;
use slipway_blobstore::{BlobStore, Digest};
use std::path::{Path, PathBuf};

fn internal(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(format!("{what}: {e:#}"))
}

/// Temp files of one build's transfers (`<data>/builds/<id>.xfer`), outside its bounded build
/// dir (a packed tree and the tree would count twice there). Removed with the build.
pub(crate) struct Xfer {
    pub dir: PathBuf,
    n: std::sync::atomic::AtomicUsize,
}

impl Xfer {
    pub fn new(dir: PathBuf) -> Self {
        Xfer {
            dir,
            n: Default::default(),
        }
    }

    fn tmp(&self) -> PathBuf {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(n.to_string())
    }

    /// Packs `dir` (symlinks kept, owners and modes kept) and puts it into the blob store.
    pub async fn put_dir(
        &self,
        blobs: &dyn BlobStore,
        dir: &Path,
        what: &str,
    ) -> Result<String, BuildError> {
        let tmp = self.tmp();
        let (d, t) = (dir.to_path_buf(), tmp.clone());
        let res = async {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| internal(&format!("packing {what}"), e))?;
            tokio::task::spawn_blocking(move || slipway_host::job_files::pack(&d, &t))
                .await
                .map_err(|e| internal(&format!("packing {what}"), e))?
                .map_err(|e| internal(&format!("packing {what}"), e))?;
            let f = tokio::fs::File::open(&tmp)
                .await
                .map_err(|e| internal(&format!("packing {what}"), e))?;
            blobs
                .put(Box::new(f), None)
                .await
                .map(|i| i.digest.to_string())
                .map_err(|e| internal(&format!("storing {what} in the blob store"), e))
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        res
    }

    /// Fetches `digest` (verified, at most `max` bytes) and unpacks it into the new directory
    /// `dest` with the layer rules (the content was written by the build: nothing outside
    /// `dest`, nothing through a symlink, no device nodes).
    pub async fn get_dir(
        &self,
        blobs: &dyn BlobStore,
        digest: &str,
        dest: &Path,
        max: u64,
        what: &str,
    ) -> Result<(), BuildError> {
        let tmp = self.tmp();
        let res = async {
            let d: Digest = digest
                .parse()
                .map_err(|e| internal(&format!("the build job's {what}"), e))?;
            slipway_host::job_files::fetch(blobs, &d, &tmp, max)
                .await
                .map_err(|e| internal(&format!("fetching the build job's {what}"), e))?;
            let (t, dest) = (tmp.clone(), dest.to_path_buf());
            tokio::task::spawn_blocking(move || slipway_host::layers::unpack_file(&t, &dest))
                .await
                .map_err(|e| internal(&format!("unpacking the build job's {what}"), e))?
                .map_err(|e| internal(&format!("unpacking the build job's {what}"), e))
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        res.map(|_| ())
    }
}
