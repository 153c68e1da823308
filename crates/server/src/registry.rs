//! The registry role: the registry v2 endpoint (`/v2/…`, repository = app) — `docker push`,
//! `skopeo copy` and `slipway image push` deploy images through it. Layers go into the blob
//! store; upload state and tags live in `<data>/registry`, whose stale uploads its own cleaner
//! removes.
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
