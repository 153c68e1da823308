//! The router role: the HTTP(S)/TCP reverse proxy on `--http-port`, `--https-port` and the
//! TCP-route ports, with its admin endpoint (`/metrics`, `/backends/…`). A port that is taken does not stop
//! the server: that listener is skipped with a warning saying which flag picks another port.
//!
//! Needs: routes — the controller's store in the same process, or a controller's HTTP API
//! ([`follow`]: its routes and their events) — and backends: a registry, in-process or
//! discovery's HTTP API. Gives: the ports the local host's jobs may reach (`published_tcp`),
//! the TCP-route checks the controller asks, and the scheduler's gate ([`gate`]) over every
//! router of the cluster. Each router registers itself in discovery ([`gate::ROUTER_SERVICE`],
//! its admin address) so that every scheduler's gate knows whom to wait for.

pub mod follow;
pub mod gate;
pub mod handoff;

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
    /// This router's instance id in discovery's [`gate::ROUTER_SERVICE`], for the life of
    /// the process: the gate of this process asks its own router directly, not over HTTP.
    pub id: String,
    /// The address its TCP-route listeners bind.
    ip: IpAddr,
    /// The router's ports (HTTP, HTTPS, the TCP-route range) that the local host's jobs may
    /// connect to on the host: an app calls another by its public name through the router.
    pub published_tcp: Vec<(u16, u16)>,
    /// The task keeping this router registered in discovery, and that registry: the
    /// registration is ended and removed first when it drains, so that no gate waits for it.
    registration: Option<(tokio::task::JoinHandle<()>, Arc<dyn Registry>)>,
    /// A router process's data dir, where its pidfile is ([`handoff`]).
    pid_dir: Option<std::path::PathBuf>,
    /// `--router-drain-timeout`.
    drain_timeout: std::time::Duration,
}

/// Starts the router. `max_connections`: its cap (see [`crate::router_connection_cap`]).
/// `api_key`: with the cluster token, what may ask its admin endpoint which backends it has.
pub async fn start(
    config: &Config,
    routes: Routes,
    backends: Arc<dyn Registry>,
    max_connections: usize,
    api_key: &str,
) -> Result<RouterRole> {
    let args = &config.args.routing;
    let mut tokens = vec![api_key.to_string()];
    tokens.extend(config.cluster_token.clone());
    // A router process (the router role alone) hands over from the one before it.
    let router_process = handoff::is_router_process(&config.roles);
    let predecessor = match router_process {
        true => {
            handoff::enable_migrate_req(config.root);
            handoff::predecessor(&config.data_dir)
        }
        false => None,
    };
    if let Some(p) = predecessor {
        tracing::info!("router: taking over the ports of router process {}", p.pid);
    }
    let mut router_config = router_config(args, max_connections, tokens)?;
    router_config.takeover = predecessor.is_some();
    let router = slipway_router::Router::new(router_config)?;
    let id = gate::router_id();
    let registration = match serve_admin(&router, args.router_admin, predecessor.is_some()).await {
        Some(admin) => register(config, &backends, &id, admin).map(|t| (t, backends.clone())),
        None => None,
    };
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
    if router_process {
        wait_loaded(&router, predecessor).await;
    }
    let mut published_tcp = listen(&router, http, https).await?;
    published_tcp.push((*args.tcp_ports.start(), *args.tcp_ports.end()));
    let pid_dir = router_process.then(|| config.data_dir.clone());
    if let Some(dir) = &pid_dir {
        // Accepting now: the predecessor can stop.
        if let Some(p) = predecessor {
            handoff::terminate(p);
            router.end_takeover();
        }
        handoff::write_own_pid(dir)
            .with_context(|| format!("cannot write {}", handoff::pid_file(dir).display()))?;
    }
    Ok(RouterRole {
        router,
        id,
        ip: args.router_ip,
        published_tcp,
        registration,
        pid_dir,
        drain_timeout: args.router_drain_timeout,
    })
}

/// Waits for the first routes and backends: [`handoff::LOAD_TIMEOUT`] at most, then the
/// router serves with what it has — unless a predecessor still serves: an empty router must
/// not replace a loaded one, so it waits on (saying so every [`handoff::LOAD_TIMEOUT`]) while
/// the predecessor lives.
async fn wait_loaded(router: &slipway_router::Router, predecessor: Option<handoff::Predecessor>) {
    let started = std::time::Instant::now();
    while !router.wait_loaded(handoff::LOAD_TIMEOUT).await {
        // The same process (start time), not whatever has its pid now.
        let Some(pid) = predecessor.filter(|p| p.alive()).map(|p| p.pid) else {
            tracing::warn!(
                "router: no routes or no backends yet after {:?} (controller or discovery away?); serving with what it has, and following them",
                started.elapsed()
            );
            return;
        };
        tracing::warn!(
            "router: no routes or no backends yet after {:?} (controller or discovery away?); router process {pid} keeps serving until they are loaded",
            started.elapsed()
        );
    }
}

/// The proxy's configuration from the flags: the default certificate is read here, so a
/// missing file stops the server with the flag's name.
fn router_config(
    args: &crate::args::RoutingArgs,
    max_connections: usize,
    admin_tokens: Vec<String>,
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
        admin_tokens,
        ..Default::default()
    })
}

/// The admin endpoint (`/metrics`, `/backends/…` for the gate); a taken port loses the
/// metrics, and the router is then not registered: no gate waits for it. Returns where it
/// listens.
async fn serve_admin(
    router: &slipway_router::Router,
    addr: SocketAddr,
    takeover: bool,
) -> Option<SocketAddr> {
    match bind_admin(addr, takeover) {
        Ok(l) => {
            let bound = l.local_addr().unwrap_or(addr);
            tracing::info!("router: admin (metrics) on http://{bound}");
            let r = router.clone();
            tokio::spawn(async move { r.serve_admin(l).await });
            Some(bound)
        }
        Err(e) => {
            tracing::warn!(
                "router: cannot listen on {addr} for metrics: {e}; use --router-admin (no traffic gate waits for this router meanwhile)"
            );
            None
        }
    }
}

/// The admin listener: `SO_REUSEPORT`, so that a successor router can bind it during a
/// handoff (`takeover`); otherwise after a plain bind that fails if another process holds it.
fn bind_admin(addr: SocketAddr, takeover: bool) -> std::io::Result<tokio::net::TcpListener> {
    if !takeover && addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let s = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(128)
}

/// Whether everyone who reads this router's registration runs on this machine: discovery is
/// in this process (not on etcd), or reached on loopback (`--discovery-url`, every `--etcd`
/// URL). Only then is a loopback admin address worth registering: elsewhere a gate asking it
/// would ask its own machine and wait for nothing until its timeouts.
fn discovery_on_this_machine(config: &Config) -> bool {
    match (&config.args.etcd, &config.args.discovery_url) {
        (Some(urls), _) => urls.split(',').all(url_is_loopback),
        (None, Some(url)) if !config.has(crate::roles::Role::Discovery) => url_is_loopback(url),
        (None, _) => true,
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
fn url_is_loopback(url: &str) -> bool {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The address a router registers its admin endpoint at: `admin`, or with an unspecified IP
/// the `--advertise` one (none without it). `slipway supervise` allows exactly this address in
/// its server's discovery.
pub fn registered_admin(
    admin: SocketAddr,
    advertise: Option<&crate::args::Advertise>,
) -> Option<SocketAddr> {
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        match advertise {
            Some(crate::args::Advertise::Ip(ip)) => addr.set_ip(*ip),
            _ => return None,
        }
    }
    Some(addr)
}

/// Registers the router in discovery ([`gate::ROUTER_SERVICE`], its admin address), so that
/// every scheduler's gate waits for it, and keeps it registered for the life of the process
/// (a registration that fails is tried again, 2 s to 30 s apart). An admin endpoint on 0.0.0.0 is
/// registered under `--advertise`'s IP; with none, not at all (said once); a loopback one only
/// when discovery is on this machine ([`discovery_on_this_machine`]). Returns the task that
/// holds the registration (aborting it deregisters).
fn register(
    config: &Config,
    registry: &Arc<dyn Registry>,
    id: &str,
    admin: SocketAddr,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some(addr) = registered_admin(admin, config.args.advertise.as_ref()) else {
        tracing::warn!(
            "router: the admin endpoint listens on {admin}, which no gate can ask: give --advertise IP (or --router-admin IP:PORT); this router is not registered, and deploys do not wait for it"
        );
        return None;
    };
    if addr.ip().is_loopback() && !discovery_on_this_machine(config) {
        tracing::warn!(
            "router: the admin endpoint listens on {admin}, which the gates of other machines cannot ask: give --router-admin IP:PORT; this router is not registered, and deploys do not wait for it"
        );
        return None;
    }
    let (registry, id) = (registry.clone(), id.to_string());
    Some(tokio::spawn(async move {
        let new = slipway_discovery::NewInstance {
            addr: addr.to_string(),
            ..Default::default()
        };
        let mut backoff = std::time::Duration::from_secs(2);
        loop {
            match slipway_discovery::Registration::start(
                registry.clone(),
                gate::ROUTER_SERVICE,
                &id,
                new.clone(),
                slipway_discovery::DEFAULT_TTL,
            )
            .await
            {
                Ok(reg) => {
                    tracing::info!("router: registered in discovery as {id} ({addr})");
                    // Held (and heartbeated) until the process ends.
                    let _reg = reg;
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    tracing::warn!(
                        "router: cannot register in discovery as {id} ({addr}): {e}; gates do not wait for this router until it is (retrying in {backoff:?})"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    }))
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

    /// The router itself, for the gate of this process ([`gate::RoutersGate`]).
    pub fn router(&self) -> &slipway_router::Router {
        &self.router
    }

    /// Graceful stop (SIGTERM): deregisters from discovery (no gate waits for this router any
    /// more), then [`slipway_router::Router::drain`]s — listeners closed, idle connections
    /// closed, requests and TCP connections in flight finished — for at most
    /// `--router-drain-timeout` (30 s); a router process then removes its pidfile if it still
    /// names it. The caller exits after this.
    pub async fn drain(&self) {
        if let Some((task, registry)) = &self.registration {
            task.abort();
            // Now, not by the registration's drop: the process may exit before that runs.
            let gone = registry.deregister(gate::ROUTER_SERVICE, &self.id);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), gone).await;
        }
        let open = self.router.open_connections();
        tracing::info!("router: draining ({open} connection(s) open)");
        let started = std::time::Instant::now();
        match self.router.drain(self.drain_timeout).await {
            true => tracing::info!("router: drained in {:?}", started.elapsed()),
            false => tracing::warn!(
                "router: {} connection(s) still open after {:?}; closing them",
                self.router.open_connections(),
                self.drain_timeout
            ),
        }
        if let Some(dir) = &self.pid_dir {
            handoff::remove_own_pid(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_is_loopback_by_its_host() {
        for yes in [
            "http://127.0.0.1:1111",
            "http://localhost:2379/",
            "http://[::1]:1111/x",
            "127.0.0.2:80",
        ] {
            assert!(super::url_is_loopback(yes), "{yes}");
        }
        for no in [
            "http://10.0.0.5:1111",
            "https://discovery.example.com",
            "http://[fd00::1]:1111",
            "http://127.0.0.1.example.com:1111",
        ] {
            assert!(!super::url_is_loopback(no), "{no}");
        }
    }
}
