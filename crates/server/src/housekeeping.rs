//! The housekeeping role: the platform-wide periodic clean-ups. At start, job rows of jobs that
//! ended while no scheduler ran are marked down (they would show as alive forever); every
//! `--blob-gc-interval` (1 h), blobs no artifact names and older than `--blob-gc-grace` are
//! deleted. Clean-ups of one role's own directory run with that role (the builder's repos of
//! deleted apps, the registry's stale uploads); old slugs are trimmed by each push
//! (`slug.keep`).
//!
//! Needs: the controller's store and the scheduler; the blob store for its collection.

use crate::Config;
use slipway_blobstore::BlobStore;
use std::sync::Arc;

pub struct HousekeepingDeps<'a> {
    pub store: Arc<dyn slipway_store::Store>,
    pub scheduler: &'a slipway_scheduler::Scheduler,
    pub blobs: Option<Arc<dyn BlobStore>>,
}

pub async fn start(config: &Config, deps: HousekeepingDeps<'_>) {
    match deps.scheduler.mark_lost_rows().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("marked {n} job(s) no host reports as down"),
        Err(e) => tracing::warn!("cannot check job rows against the hosts: {e:#}"),
    }
    if let Some(blobs) = deps.blobs {
        spawn_blob_gc(config, deps.store, blobs);
    }
}

fn spawn_blob_gc(config: &Config, store: Arc<dyn slipway_store::Store>, blobs: Arc<dyn BlobStore>) {
    let (interval, grace) = (config.args.blob_gc_interval, config.args.blob_gc_grace);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let listed = async || store.list_artifacts().await.map_err(|e| e.to_string());
            // Registry manifests, tags and uploads, stored git repositories: in use too.
            let kept = async || store.shared_state_blobs().await.map_err(|e| e.to_string());
            match slipway_blobstore::gc::collect_keeping(
                &*blobs,
                listed,
                kept,
                grace,
                std::time::SystemTime::now(),
            )
            .await
            {
                Ok(r) if r.deleted.is_empty() => {
                    tracing::debug!(scanned = r.scanned, "blob collection: nothing to delete")
                }
                Ok(r) => tracing::info!(
                    deleted = r.deleted.len(),
                    freed_bytes = r.freed_bytes,
                    kept = r.referenced + r.young,
                    "blob collection"
                ),
                Err(e) => tracing::warn!("blob collection failed: {e}"),
            }
        }
    });
}
