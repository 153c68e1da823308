//! The blob store role (slugs, image layers and configs): content-addressed files in
//! `<data>/blobs`, or, when `--database-url` is `postgres://…`, rows in that database
//! (`PgBlobStore`) so that every controller of a cluster serves the same blobs; served at `/blobs/{digest}` on the controller's port behind the API key
//! (remote hosts fetch layers there), shared by the local host agent, the builder and the
//! registry. Its garbage collection is the housekeeping role's.
//!
//! Needs: the controller's store (a delete is refused while an artifact names the blob).

use crate::Config;
use anyhow::{Context, Result};
use slipway_blobstore::BlobStore;
use std::sync::Arc;

pub async fn start(config: &Config) -> Result<Arc<dyn BlobStore>> {
    if let Some(url) = &config.args.database_url
        && is_postgres(url)
    {
        let store = slipway_blobstore::PgBlobStore::connect(url)
            .await
            .context("cannot open the blob store in PostgreSQL (--database-url)")?;
        tracing::info!("blob store in PostgreSQL");
        return Ok(Arc::new(store));
    }
    let dir = config.data_dir.join("blobs");
    Ok(Arc::new(
        slipway_blobstore::FsBlobStore::open(&dir)
            .with_context(|| format!("cannot open the blob store in {}", dir.display()))?,
    ))
}

/// `/blobs/{digest}`, its deletes guarded by the artifacts in the store and the blobs the
/// registry's and the git receiver's shared state names.
pub fn http(blobs: Arc<dyn BlobStore>, store: Arc<dyn slipway_store::Store>) -> axum::Router {
    let kept = store.clone();
    slipway_blobstore::http::router_guarded_keeping(
        blobs,
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.list_artifacts().await.map_err(|e| e.to_string()) })
        }),
        Arc::new(move || {
            let store = kept.clone();
            Box::pin(async move { store.shared_state_blobs().await.map_err(|e| e.to_string()) })
        }),
    )
}

/// Whether `url` names a PostgreSQL database (the blob store then lives there too).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
