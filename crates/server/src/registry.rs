//! The registry role: the registry v2 endpoint (`/v2/…`, repository = app) — `docker push`,
//! `skopeo copy` and `slipway image push` deploy images through it. Layers go into the blob
//! store; upload state, manifests and tags are rows in the controller's store (shared by every
//! controller), whose stale uploads its own cleaner removes; `<data>/registry` holds only a cache
//! of layers already verified.
//!
//! Needs: the controller's store, the blob store. Gives: the routes it serves on the
//! controller's port.

use crate::Config;
use anyhow::{Context, Result};
use std::sync::Arc;

pub fn start(
    config: &Config,
    store: Arc<dyn slipway_store::Store>,
    blobs: Arc<dyn slipway_blobstore::BlobStore>,
) -> Result<axum::Router> {
    let registry = slipway_registry::Registry::open(store, blobs, config.data_dir.join("registry"))
        .context("cannot open the registry's directory")?;
    registry.spawn_cleaner();
    Ok(slipway_registry::router(registry))
}
