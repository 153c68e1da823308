//! The host role: the local host agent (runc) in-process, followed by the scheduler, its jobs
//! registered in discovery and their lines read by the log aggregator. Builds the busybox stack
//! on first start (<1 s), since releases without artifacts run on it.
//!
//! Needs: the scheduler and discovery in the same process (`roles::check` refuses the split
//! otherwise); the router's ports when it runs here (jobs may reach them); the logs role and
//! the blob store when they run here.

use crate::Config;
use crate::discovery::Discovery;
use anyhow::{Context, Result};
use std::sync::Arc;

pub struct HostDeps<'a> {
    pub scheduler: &'a slipway_scheduler::Scheduler,
    pub discovery: &'a Discovery,
    /// The router's ports on this host, which jobs may connect to (empty without a router).
    pub published_tcp: Vec<(u16, u16)>,
    pub logs: Option<&'a slipway_logs::Aggregator>,
    pub blobs: Option<Arc<dyn slipway_blobstore::BlobStore>>,
}

pub async fn start(config: &Config, deps: HostDeps<'_>) -> Result<()> {
    let host_dir = config.data_dir.join("host");
    let mut runc = config.args.runtime.config(&host_dir)?;
    // Jobs reach the host's router (an app calling another by its public name), nothing else
    // the host listens on but the gateway's DNS.
    runc.published_tcp = deps.published_tcp;
    // Discovery's DNS on the jobs' bridge: the agent's containers resolve through it.
    runc.dns = deps.discovery.start_dns(Some(&runc.network)).await;
    let stacks = runc.stacks_dir.clone();
    let stack = deps.scheduler.config().stack.clone();
    tokio::task::spawn_blocking(move || slipway_host::stack::build(&stacks, &stack, false))
        .await?
        .context("cannot build the default stack")?;
    let mut agent = slipway_host::AgentConfig::new(&host_dir);
    agent.tags = config.args.host_tags.iter().cloned().collect();
    agent.blobs = deps.blobs;
    let host = slipway_host::daemon::start(runc, agent, None)
        .await
        .context("cannot start the local host agent (use --no-host to run without one)")?;
    let id = deps.scheduler.add_host(host.api()).await?;
    deps.discovery.follow_host(host.api());
    if let Some(logs) = deps.logs {
        slipway_logs::follow_host(logs.clone(), host.api());
    }
    tracing::info!(host = %id, "local host agent ready");
    Ok(())
}
