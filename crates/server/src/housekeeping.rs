//! The housekeeping role: the platform-wide periodic clean-ups. At start, job rows of jobs that
//! ended while no scheduler ran are marked down (they would show as alive forever); every
//! `--blob-gc-interval` (1 h), blobs no artifact names and older than `--blob-gc-grace` are
//! deleted. Clean-ups of one role's own directory run with that role (the builder's repos of
//! deleted apps, the registry's stale uploads); old slugs are trimmed by each push
//! (`slug.keep`).
//!
//! With a discovery (in-process or `--discovery-url`) the periodic work runs on one process at
//! a time: the leader of `slipway-housekeeping`; and the job rows are checked by the scheduler
//! leader when it takes over (it is the one that may write them).
//!
//! Needs: the controller's store and the scheduler; the blob store for its collection.

use crate::Config;
use slipway_blobstore::BlobStore;
use std::sync::Arc;

pub struct HousekeepingDeps<'a> {
    pub store: Arc<dyn slipway_store::Store>,
    pub scheduler: &'a slipway_scheduler::Scheduler,
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Where to campaign for `slipway-housekeeping`; `None`: this process is the only one.
    pub registry: Option<Arc<dyn slipway_discovery::Registry>>,
}

pub async fn start(config: &Config, deps: HousekeepingDeps<'_>) -> anyhow::Result<()> {
    let Some(registry) = deps.registry else {
        match deps.scheduler.mark_lost_rows().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("marked {n} job(s) no host reports as down"),
            Err(e) => tracing::warn!("cannot check job rows against the hosts: {e:#}"),
        }
        if let Some(blobs) = deps.blobs {
            tokio::spawn(blob_gc(config, deps.store, blobs));
        }
        return Ok(());
    };
    let Some(blobs) = deps.blobs else {
        return Ok(());
    };
    let url = format!("http://{}", config.args.listen);
    let service = slipway_scheduler::leader::HOUSEKEEPING_SERVICE;
    let election = crate::scheduler::campaign(config, registry, service, &url).await?;
    let leadership = election.watch();
    let (interval, grace) = (config.args.blob_gc_interval, config.args.blob_gc_grace);
    let store = deps.store;
    tokio::spawn(async move {
        // The election lives as long as this task: the process's candidacy.
        let _election = election;
        slipway_scheduler::leader::while_leading(leadership, move |_| {
            blob_gc_every(interval, grace, store.clone(), blobs.clone())
        })
        .await
    });
    Ok(())
}

fn blob_gc(
    config: &Config,
    store: Arc<dyn slipway_store::Store>,
    blobs: Arc<dyn BlobStore>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    blob_gc_every(
        config.args.blob_gc_interval,
        config.args.blob_gc_grace,
        store,
        blobs,
    )
}

/// Deletes unused blobs every `interval` (the first time one interval from now).
async fn blob_gc_every(
    interval: std::time::Duration,
    grace: std::time::Duration,
    store: Arc<dyn slipway_store::Store>,
    blobs: Arc<dyn BlobStore>,
) {
    {
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
    }
}
