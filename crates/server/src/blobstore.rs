//! The blob store role (slugs, image layers and configs): content-addressed files in
//! `<data>/blobs`, served at `/blobs/{digest}` on the controller's port behind the API key
//! (remote hosts fetch layers there), shared by the local host agent, the builder and the
//! registry. Its garbage collection is the housekeeping role's.
//!
//! Needs: the controller's store (a delete is refused while an artifact names the blob).

use crate::Config;
use anyhow::{Context, Result};
use slipway_blobstore::BlobStore;
use std::sync::Arc;

pub fn start(config: &Config) -> Result<Arc<dyn BlobStore>> {
    let dir = config.data_dir.join("blobs");
    Ok(Arc::new(
        slipway_blobstore::FsBlobStore::open(&dir)
            .with_context(|| format!("cannot open the blob store in {}", dir.display()))?,
    ))
}

/// `/blobs/{digest}`, its deletes guarded by the artifacts in the store.
pub fn http(blobs: Arc<dyn BlobStore>, store: Arc<dyn slipway_store::Store>) -> axum::Router {
    slipway_blobstore::http::router_guarded(
        blobs,
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.list_artifacts().await.map_err(|e| e.to_string()) })
        }),
    )
}
