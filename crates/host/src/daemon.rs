//! The whole host agent in one call: runc runtime + agent (+ HTTP API when asked). This is what
//! `slipway host daemon` runs and what `slipway server` embeds.

use crate::agent::{Agent, AgentConfig};
use crate::api::HostApi;
use crate::runc::{RuncConfig, RuncRuntime};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;

/// A running host agent.
pub struct Host {
    pub agent: Agent,
    /// Where the HTTP API listens, if it was asked for.
    pub addr: Option<SocketAddr>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// `<data dir>/agent.lock`, held while this is kept (see [`start`]): keep it as long as
    /// the agent runs.
    _lock: std::fs::File,
}

impl Host {
    /// The agent as the host API (what the scheduler holds in embedded mode).
    pub fn api(&self) -> Arc<dyn HostApi> {
        Arc::new(self.agent.clone())
    }
    /// Waits for the HTTP server (forever, unless it fails).
    pub async fn serve_forever(self) -> Result<()> {
        match self.server {
            Some(s) => Ok(s.await??),
            None => std::future::pending().await,
        }
    }
}

/// Starts the runc runtime (preflight, network), the agent (re-adopting jobs left running by a
/// previous process) and, with `listen`, the HTTP API for holders of the cluster token given
/// with it. `listen` may use port 0.
pub async fn start(
    runc: RuncConfig,
    agent: AgentConfig,
    listen: Option<(SocketAddr, String)>,
) -> Result<Host> {
    // One agent per data dir: a second one's host setup would empty the running agent's bridge
    // filter, and its start-up sweep would take the jobs that agent is starting for leftovers.
    std::fs::create_dir_all(&runc.data_dir)
        .with_context(|| format!("creating {}", runc.data_dir.display()))?;
    let lock_path = runc.data_dir.join("agent.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another host agent runs on {} ({} is locked); stop it first",
            runc.data_dir.display(),
            lock_path.display()
        ),
        // A filesystem without locks: nothing to tell by.
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!("cannot lock {}: {e}", lock_path.display())
        }
    }
    let runtime = tokio::task::spawn_blocking(move || RuncRuntime::new(runc)).await??;
    let agent = Agent::start(agent, Arc::new(runtime)).await?;
    let (addr, server) = match listen {
        Some((l, token)) => {
            let listener = tokio::net::TcpListener::bind(l)
                .await
                .with_context(|| format!("listening on {l} for the host API"))?;
            let addr = listener.local_addr()?;
            let api: Arc<dyn HostApi> = Arc::new(agent.clone());
            (
                Some(addr),
                Some(tokio::spawn(async move {
                    crate::http::serve(api, listener, &token).await
                })),
            )
        }
        None => (None, None),
    };
    Ok(Host {
        agent,
        addr,
        server,
        _lock: lock,
    })
}
