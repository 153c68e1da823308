//! A build's directories to and from the blob store: the build job runs on any host, which
//! gets its source, env, buildpacks and cache as blobs and hands back its `/app`, output and
//! new cache the same way (see `slipway_host::job_files`). Nothing of this machine is
//! bind-mounted into the job.

use crate::pipeline::{BuildContext, BuildError, JobExit};
use slipway_blobstore::{BlobStore, Digest};
use std::path::{Path, PathBuf};

fn internal(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(format!("{what}: {e:#}"))
}

fn failed(msg: impl Into<String>) -> BuildError {
    BuildError::Failed(msg.into())
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
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| internal(&format!("fetching the build job's {what}"), e))?;
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

/// Replaces the local build dir's `out`, `cache` and (if the job succeeded) `app` with what
/// the build job handed back through the blob store; adds lines for the user to `notes`. A job
/// that did not run hands back nothing.
pub(crate) async fn take_outputs(
    ctx: &BuildContext,
    xfer: &Xfer,
    exit: &JobExit,
    [out_dir, app_dir, cache_dir]: [&std::path::Path; 3],
    notes: &mut Vec<String>,
) -> Result<(), BuildError> {
    if exit.exit.is_none() {
        return Ok(());
    }
    let blobs = ctx.blobs.as_ref();
    let missing = |what: &str| {
        BuildError::Internal(format!(
            "the build job's {what} did not come back from its host{}",
            exit.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))
    };
    let disk = ctx.limits.disk_bytes;
    let out = exit
        .outputs
        .get("/slipway/out")
        .ok_or_else(|| missing("/slipway/out"))?;
    let _ = tokio::fs::remove_dir_all(out_dir).await;
    xfer.get_dir(blobs, out, out_dir, disk, "/slipway/out")
        .await?;
    // The new cache, kept whether the build failed or not (as when it was mounted). One the
    // host could not store (e.g. too deep a tree) is emptied: the next build starts afresh.
    let c = cache_dir.to_path_buf();
    tokio::task::spawn_blocking(move || clear_dir(&c))
        .await
        .map_err(|e| internal("emptying the build cache", e))?
        .map_err(|e| internal("emptying the build cache", e))?;
    if !exit.outputs.contains_key("/cache") {
        let why = exit.error.as_deref().unwrap_or("no reason given");
        notes.push(format!(
            "-----> The build cache could not be kept ({why}): the next build starts with an \
             empty one"
        ));
    }
    if let Some(cache) = exit.outputs.get("/cache") {
        fill_cache(ctx, xfer, cache, cache_dir).await?;
    }
    if exit.exit.as_ref().is_some_and(|s| s.code == 0) {
        let Some(app) = exit.outputs.get("/app") else {
            // The build's own doing (the host refuses to pack a tree it cannot walk).
            let err = exit.error.as_deref().unwrap_or_default();
            if let Some(at) = err.find("deeper than") {
                let why = err[at..].split(';').next().unwrap_or_default();
                return Err(failed(format!(
                    "The compiled slug cannot be made: the built app is {why}"
                )));
            }
            return Err(missing("/app"));
        };
        let a = app_dir.to_path_buf();
        tokio::task::spawn_blocking(move || crate::tree::remove_tree(&a))
            .await
            .map_err(|e| internal("emptying the build dir", e))?
            .map_err(|e| internal("emptying the build dir", e))?;
        xfer.get_dir(blobs, app, app_dir, disk, "/app").await?;
    }
    Ok(())
}

/// Unpacks cache blob `digest` into the (empty) cache dir.
async fn fill_cache(
    ctx: &BuildContext,
    xfer: &Xfer,
    digest: &str,
    cache_dir: &Path,
) -> Result<(), BuildError> {
    // A name the build cannot have chosen: the cache is unpacked there, then moved up.
    let incoming = cache_dir.join(format!(
        ".slipway-incoming-{}",
        uuid::Uuid::new_v4().simple()
    ));
    xfer.get_dir(
        ctx.blobs.as_ref(),
        digest,
        &incoming,
        ctx.limits.cache_bytes,
        "/cache",
    )
    .await?;
    let c = cache_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for e in std::fs::read_dir(&incoming)? {
            let e = e?;
            std::fs::rename(e.path(), c.join(e.file_name()))?;
        }
        std::fs::remove_dir(&incoming)
    })
    .await
    .map_err(|e| internal("keeping the build cache", e))?
    .map_err(|e| internal("keeping the build cache", e))
}

/// Removes everything inside `dir` (a mount point: it stays).
fn clear_dir(dir: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        crate::tree::remove_tree(&e?.path())?;
    }
    Ok(())
}

/// Where this machine notes which recorded cache its copy of an app's cache is (outside the
/// cache itself, which the build sees and hands back).
fn cache_marker(ctx: &BuildContext, app: slipway_types::Id) -> PathBuf {
    ctx.data_dir
        .join("build-cache")
        .join(format!("{app}.digest"))
}

/// Makes this machine's copy of the app's cache (mounted at `cache_dir`) the one the app's
/// last build left, wherever it ran (recorded in the store), unless it already is. A cache
/// that cannot be restored is emptied: the build starts afresh, as after a lost cache.
pub(crate) async fn restore_cache(
    ctx: &BuildContext,
    xfer: &Xfer,
    app: slipway_types::Id,
    cache_dir: &Path,
) {
    let Some(store) = ctx.caches.as_ref() else {
        return;
    };
    let recorded = match store.build_cache_digest(app).await {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%app, "cannot read the app's build cache digest (using this machine's copy): {e}");
            return;
        }
    };
    let marker = cache_marker(ctx, app);
    if tokio::fs::read_to_string(&marker).await.ok().as_deref() == Some(recorded.as_str()) {
        return;
    }
    let c = cache_dir.to_path_buf();
    let cleared = tokio::task::spawn_blocking(move || clear_dir(&c)).await;
    if !matches!(cleared, Ok(Ok(()))) {
        tracing::warn!(%app, "cannot empty the build cache to restore the recorded one");
        return;
    }
    match fill_cache(ctx, xfer, &recorded, cache_dir).await {
        Ok(()) => {
            let _ = tokio::fs::write(&marker, recorded.as_bytes()).await;
        }
        Err(e) => {
            tracing::warn!(%app, "cannot restore the app's recorded build cache (starting empty): {e}");
            let c = cache_dir.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || clear_dir(&c)).await;
        }
    }
}

/// Records the cache the build job handed back (and now in this machine's copy) as the app's,
/// for the next build anywhere.
pub(crate) async fn record_cache(ctx: &BuildContext, app: slipway_types::Id, exit: &JobExit) {
    let (Some(store), Some(cache)) = (ctx.caches.as_ref(), exit.outputs.get("/cache")) else {
        return;
    };
    match store.set_build_cache_digest(app, cache).await {
        Ok(()) => {
            let _ = tokio::fs::write(cache_marker(ctx, app), cache.as_bytes()).await;
        }
        Err(e) => {
            tracing::warn!(%app, "cannot record the app's build cache (the next build elsewhere starts without it): {e}")
        }
    }
}
