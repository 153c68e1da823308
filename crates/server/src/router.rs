//! The router role: the HTTP(S)/TCP reverse proxy on `--http-port`, `--https-port` and the
//! TCP-route ports, with its admin endpoint (`/metrics`). A port that is taken does not stop
//! the server: that listener is skipped with a warning saying which flag picks another port.
//!
//! Needs: routes — the controller's store in the same process, or a controller's HTTP API
//! ([`follow`]: its routes and their events) — and backends: a registry, in-process or
//! discovery's HTTP API. Gives: the ports the local host's jobs may reach (`published_tcp`),
//! the TCP-route checks the controller asks, and the scheduler's gate ([`gate`]) when the
//! jobs' bridge runs in the same process.

pub mod follow;
pub mod gate;

use crate::Config;
use anyhow::{Context, Result};
use slipway_discovery::Registry;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Where the router takes its routes from.
pub enum Routes {
    /// The controller's store, in this process: reloaded after every route event.
    Store(Arc<dyn slipway_store::Store>),
    /// A controller elsewhere, over its HTTP API (`--controller-url`).
    Controller(slipway_client::Client),
}

pub struct RouterRole {
    router: slipway_router::Router,
    /// The address its TCP-route listeners bind.
    ip: IpAddr,
    /// The router's ports (HTTP, HTTPS, the TCP-route range) that the local host's jobs may
    /// connect to on the host: an app calls another by its public name through the router.
    pub published_tcp: Vec<(u16, u16)>,
}

/// Starts the router. `max_connections`: its cap (see [`crate::router_connection_cap`]).
pub async fn start(
    config: &Config,
    routes: Routes,
    backends: Arc<dyn Registry>,
    max_connections: usize,
) -> Result<RouterRole> {
    let args = &config.args.routing;
    let router = slipway_router::Router::new(router_config(args, max_connections)?)?;
    serve_admin(&router, args.router_admin).await;
    router.follow_registry(backends);
    match routes {
        Routes::Store(store) => {
            router
                .follow_store(store)
                .await
                .context("router: cannot load routes")?;
        }
        Routes::Controller(client) => {
            follow::follow_controller(router.clone(), client);
        }
    }
    let root = config.root;
    let http_port = args.http_port.unwrap_or(if root { 80 } else { 8080 });
    let https_port = args.https_port.unwrap_or(if root { 443 } else { 8443 });
    let http = SocketAddr::new(args.router_ip, http_port);
    let https = SocketAddr::new(args.router_ip, https_port);
    let mut published_tcp = listen(&router, http, https).await?;
    published_tcp.push((*args.tcp_ports.start(), *args.tcp_ports.end()));
    Ok(RouterRole {
        router,
        ip: args.router_ip,
        published_tcp,
    })
}

/// The proxy's configuration from the flags: the default certificate is read here, so a
/// missing file stops the server with the flag's name.
fn router_config(
    args: &crate::args::RoutingArgs,
    max_connections: usize,
) -> Result<slipway_router::Config> {
    let default_certificate = match (&args.router_cert, &args.router_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read_to_string(c)
                .with_context(|| format!("cannot read --router-cert {}", c.display()))?,
            std::fs::read_to_string(k)
                .with_context(|| format!("cannot read --router-key {}", k.display()))?,
        )),
        _ => None,
    };
    let mut limits = slipway_router::Limits::default();
    if let Some(t) = args.header_timeout {
        limits.header_read_timeout = t;
    }
    Ok(slipway_router::Config {
        tcp_bind: args.router_ip,
        default_certificate,
        access_log: args.access_log,
        max_connections,
        tcp_ports: args.tcp_ports.clone(),
        limits,
        ..Default::default()
    })
}

/// The admin endpoint (`/metrics`); a taken port only loses the metrics.
async fn serve_admin(router: &slipway_router::Router, addr: SocketAddr) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            match l.local_addr() {
                Ok(a) => tracing::info!("router: admin (metrics) on http://{a}"),
                Err(_) => tracing::info!("router: admin (metrics) on http://{addr}"),
            }
            let r = router.clone();
            tokio::spawn(async move { r.serve_admin(l).await });
        }
        Err(e) => {
            tracing::warn!("router: cannot listen on {addr} for metrics: {e}; use --router-admin")
        }
    }
}

/// HTTP and HTTPS: a runtime per core on both ports; when one of them is taken, what can be
/// served on this runtime, with a warning naming the flag that picks another port. Returns the
/// ports the router listens on, as `(first, last)` ranges for the host's jobs.
async fn listen(
    router: &slipway_router::Router,
    http: SocketAddr,
    https: SocketAddr,
) -> Result<Vec<(u16, u16)>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    match router.spawn_per_core(http, Some(https), threads) {
        Ok((h, s)) => {
            let s = s.unwrap_or(https);
            tracing::info!("router: HTTP on {h}");
            tracing::info!("router: HTTPS on {s}");
            return Ok(vec![(h.port(), h.port()), (s.port(), s.port())]);
        }
        Err(e) => tracing::warn!("router: cannot listen on {http} and {https}: {e}"),
    }
    let mut published = Vec::new();
    match tokio::net::TcpListener::bind(http).await {
        Ok(l) => {
            tracing::info!("router: HTTP on {}", l.local_addr()?);
            let p = l.local_addr()?.port();
            published.push((p, p));
            let r = router.clone();
            tokio::spawn(async move { r.serve_http(l).await });
        }
        Err(e) => {
            tracing::warn!(
                "router: cannot listen on {http}: {e}; HTTP routing is off (use --http-port)"
            )
        }
    }
    match tokio::net::TcpListener::bind(https).await {
        Ok(l) => {
            tracing::info!("router: HTTPS on {}", l.local_addr()?);
            let p = l.local_addr()?.port();
            published.push((p, p));
            let r = router.clone();
            tokio::spawn(async move {
                if let Err(e) = r.serve_https(l).await {
                    tracing::error!("router: HTTPS stopped: {e:#}");
                }
            });
        }
        Err(e) => tracing::warn!(
            "router: cannot listen on {https}: {e}; HTTPS routing is off (use --https-port)"
        ),
    }
    Ok(published)
}

impl RouterRole {
    /// Why the router could not listen on `port` now — another process holds it — if so.
    /// Asked before a TCP route is created (the port no route has yet), so that the route is
    /// refused at once rather than created with a listener that failed.
    pub fn tcp_port_taken(&self, port: u16) -> Option<String> {
        let addr = SocketAddr::new(self.ip, port);
        match std::net::TcpListener::bind(addr) {
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(format!(
                "port {port} is in use by another process on this host ({addr})"
            )),
            Err(e) => Some(format!("the router cannot listen on {addr}: {e}")),
        }
    }

    /// `listening` or `failed: REASON` for a TCP route's port.
    pub fn tcp_listener_state(&self, port: u16) -> Option<String> {
        self.router.tcp_listener_state(port)
    }

    /// For [`slipway_scheduler::Scheduler::set_traffic_gate`] when the jobs' bridge is in this
    /// process: deploys and `scale` count a job up once the router has it, and stops drain it
    /// from the router first.
    pub fn traffic_gate(
        &self,
        discovery: &crate::discovery::Discovery,
    ) -> Arc<dyn slipway_scheduler::TrafficGate> {
        gate::RouterGate::start(&self.router, discovery.bridge.clone())
    }
}
