//! The builder role: the git receiver and build pipeline — `git push` to `<url>/APP.git` builds
//! the pushed commit in a `build` job on the app's stack and deploys it. Repos in
//! `<data>/repos` (copies: each push stores its repo in the blob store, and a controller whose
//! copy is missing or stale restores it first), build caches and scratch dirs in
//! `<data>/build`, slugs in the blob store. The build job itself runs on any host: its source,
//! buildpacks and cache go to it through the blob store and its `/app` and new cache come back
//! the same way (docs/build.md), so every host needs `--blob-store`.
//! Its own housekeeping (repos and caches of deleted apps) runs with it.
//!
//! Needs: the controller's store and URL (the pre-receive hook calls back into it with the API
//! key), the scheduler (build jobs), the blob store (slugs, and the build jobs' files). Gives: the routes it serves on the
//! controller's port.

use crate::Config;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct BuilderDeps<'a> {
    pub store: Arc<dyn slipway_store::Store>,
    pub scheduler: &'a slipway_scheduler::Scheduler,
    /// Where build jobs run: the scheduler, through the leader's controller when another
    /// process's scheduler leads (`crate::build_jobs`).
    pub jobs: Arc<dyn slipway_builder::JobRunner>,
    pub blobs: Arc<dyn slipway_blobstore::BlobStore>,
    pub api_key: &'a str,
    /// The controller's URL as this machine reaches it.
    pub local_url: &'a str,
}

pub fn start(config: &Config, deps: BuilderDeps<'_>) -> Result<axum::Router> {
    let data_dir = &config.data_dir;
    // No build outlives the process that ran it: whatever a killed server left in the build
    // scratch dirs (mounted build dirs and caches, checkouts) goes before anything is served,
    // and the build jobs it left running are stopped once their hosts report them.
    let build_dir = data_dir.join("build");
    slipway_builder::scratch::sweep_at_start(&build_dir);
    let owner = slipway_builder::owner::Owner::open(&build_dir)
        .with_context(|| format!("cannot read the builder's id in {}", build_dir.display()))?;
    let scheduler = deps.scheduler.clone();
    slipway_builder::owner::spawn_stop_stale(
        owner.clone(),
        move || scheduler.jobs(),
        deps.jobs.clone(),
    );
    let build = slipway_builder::BuildContext {
        blobs: deps.blobs,
        jobs: deps.jobs,
        data_dir: build_dir,
        buildpacks_dir: buildpacks_dir(data_dir)?,
        limits: Default::default(),
        caches: Some(deps.store.clone()),
        owner: Some(owner),
    };
    let pusher = Arc::new(slipway_builder::push::Pusher {
        store: deps.store.clone(),
        build,
        default_stack: deps.scheduler.config().stack.clone(),
    });
    let cfg = slipway_builder::receiver::ReceiverConfig {
        repos_dir: data_dir.join("repos"),
        hook_exe: std::env::current_exe().context("cannot find the slipway binary")?,
        server_url: deps.local_url.to_string(),
        api_key: deps.api_key.to_string(),
    };
    let receiver = slipway_builder::receiver::Receiver::new(cfg, deps.store, pusher);
    receiver.spawn_housekeeping();
    Ok(receiver.router())
}

/// The buildpacks build jobs detect over: `$SLIPWAY_BUILDPACKS_DIR`, else the bundled ones
/// (embedded in the binary) written to `<data>/buildpacks` at start.
fn buildpacks_dir(data_dir: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("SLIPWAY_BUILDPACKS_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let dir = data_dir.join("buildpacks");
    slipway_builder::bundled::install(&dir)
        .with_context(|| format!("cannot write the bundled buildpacks to {}", dir.display()))?;
    Ok(dir)
}
