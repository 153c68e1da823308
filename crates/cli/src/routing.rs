//! `slipway server`'s discovery and router (embedded mode): an in-process registry (with its
//! HTTP/SSE API for debugging and future cluster members), the router following the Store's
//! routes and the registry's instances, and the bridge that registers the local host's jobs
//! in discovery once their health checks pass.

use anyhow::{Context, Result};
use slipway_discovery::{LocalRegistry, NewInstance, Registration, Registry};
use slipway_host::{EventKind, HostApi, JobInfo, JobStatus};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct RoutingArgs {
    /// The router's HTTP port (0: any free port). Default: 80 as root, 8080 otherwise.
    #[arg(long, env = "SLIPWAY_HTTP_PORT")]
    http_port: Option<u16>,
    /// The router's HTTPS port (0: any free port). Default: 443 as root, 8443 otherwise.
    #[arg(long, env = "SLIPWAY_HTTPS_PORT")]
    https_port: Option<u16>,
    /// Address the router's HTTP, HTTPS and TCP-route listeners bind.
    #[arg(long, env = "SLIPWAY_ROUTER_IP", default_value = "0.0.0.0")]
    router_ip: IpAddr,
    /// Address of discovery's HTTP API (`/services/…`, SSE watches).
    #[arg(
        long,
        env = "SLIPWAY_DISCOVERY_LISTEN",
        default_value = "127.0.0.1:1111"
    )]
    discovery_listen: SocketAddr,
    /// Where discovery's DNS listens, UDP and TCP (`SERVICE.discover.`,
    /// `leader.SERVICE.discover.`, SRV; other names forwarded to --dns-upstream). `auto`: the
    /// jobs' bridge address, port 53, and containers resolve through it (off without a local
    /// host agent); `none`: off, containers use the host's /etc/resolv.conf; `IP:PORT`: there
    /// (containers use it only if that is the bridge address, or 0.0.0.0, on port 53).
    #[arg(long, env = "SLIPWAY_DNS_LISTEN", default_value = "auto", value_parser = parse_dns_listen)]
    dns_listen: DnsListen,
    /// The resolver discovery's DNS forwards other names to (`IP` or `IP:PORT`). Default: the
    /// first `nameserver` of the host's /etc/resolv.conf (a loopback one such as 127.0.0.53
    /// works: the DNS runs on the host).
    #[arg(long, env = "SLIPWAY_DNS_UPSTREAM", value_parser = parse_upstream)]
    dns_upstream: Option<SocketAddr>,
    /// Default HTTPS certificate chain (PEM file), for names without a route certificate.
    /// Default: a self-signed certificate for `localhost`, generated at start.
    #[arg(long, env = "SLIPWAY_ROUTER_CERT", requires = "router_key")]
    router_cert: Option<std::path::PathBuf>,
    /// The private key (PEM file) of --router-cert.
    #[arg(long, env = "SLIPWAY_ROUTER_KEY", requires = "router_cert")]
    router_key: Option<std::path::PathBuf>,
    /// The router's admin endpoint: `GET /metrics` (Prometheus text).
    #[arg(long, env = "SLIPWAY_ROUTER_ADMIN", default_value = "127.0.0.1:1112")]
    router_admin: SocketAddr,
    /// One log line per proxied request (target `slipway_router::access`).
    #[arg(long, env = "SLIPWAY_ACCESS_LOG")]
    access_log: bool,
    /// Run no router (discovery still runs).
    #[arg(long)]
    no_router: bool,
    /// The ports TCP routes may use, `FIRST-LAST` (Flynn's range by default). `route add tcp`
    /// outside it is refused, and so is a port another process holds.
    #[arg(long, env = "SLIPWAY_TCP_PORTS", default_value = "3000-3500", value_parser = parse_port_range)]
    pub tcp_ports: std::ops::RangeInclusive<u16>,
    /// Client connections the router keeps open at once (HTTP, HTTPS and TCP routes together);
    /// past it new ones are refused. Default: what fits the process's file descriptor limit
    /// next to the API and the host agent (printed at start).
    #[arg(long, env = "SLIPWAY_ROUTER_MAX_CONNECTIONS")]
    pub router_max_connections: Option<usize>,
    /// Networks (`10.1.0.0/16`, `127.0.0.1`; repeatable) whose addresses discovery's API may
    /// register although they are this host's own (loopback, the host's addresses): by
    /// default those are refused, so that a registration cannot point the router at the
    /// host's own listeners.
    #[arg(long = "discovery-allow", value_parser = slipway_discovery::http::parse_network)]
    discovery_allow: Vec<(IpAddr, u8)>,
    /// Time a client has to send a request head to the API, discovery and the router's admin
    /// endpoint, which is also how long an idle kept-alive connection stays open (tests
    /// shorten it; it then applies to the router's HTTP listeners too).
    #[arg(long, hide = true, env = "SLIPWAY_HEADER_TIMEOUT", value_parser = parse_seconds)]
    pub header_timeout: Option<Duration>,
}

/// The control listeners' header (and idle keep-alive) timeout unless `--header-timeout`.
pub const CONTROL_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections discovery's API keeps open at once (watches included: one per router and host).
pub const DISCOVERY_MAX_CONNECTIONS: usize = 512;

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected seconds, e.g. 30 or 0.5"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("invalid duration {s:?}: 0.01 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("invalid port range {s:?}: expected FIRST-LAST, e.g. 3000-3500");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// `--dns-listen`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DnsListen {
    /// The local host agent's bridge address, port 53; off without a host agent.
    Auto,
    Off,
    At(SocketAddr),
}

fn parse_dns_listen(s: &str) -> Result<DnsListen, String> {
    match s {
        "auto" => Ok(DnsListen::Auto),
        "none" | "off" => Ok(DnsListen::Off),
        _ => s.parse().map(DnsListen::At).map_err(|_| {
            format!(
                "invalid address {s:?}: expected IP:PORT (e.g. 127.0.0.1:5353), `auto` or `none`"
            )
        }),
    }
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid resolver {s:?}: expected IP or IP:PORT (e.g. 1.1.1.1)"))
}

pub struct Routing {
    pub registry: Arc<dyn Registry>,
    /// `--dns-listen` and `--dns-upstream`, for [`Routing::start_dns`].
    dns: (DnsListen, Option<SocketAddr>),
    /// The jobs this process registered in discovery (shared with the traffic gate, which
    /// deregisters a job to drain it).
    bridge: Arc<Bridge>,
    /// The router's side of the scheduler's up/stop (None with `--no-router`).
    gate: Option<Arc<RouterGate>>,
    /// The router and the address its TCP-route listeners bind (None with `--no-router`).
    router: Option<(slipway_router::Router, IpAddr)>,
    tcp_ports: std::ops::RangeInclusive<u16>,
    /// The router's ports (HTTP, HTTPS, the TCP-route range) that the local host's jobs may
    /// connect to on the host: an app calls another by its public name through the router.
    pub published_tcp: Vec<(u16, u16)>,
}

impl Routing {
    fn new(
        registry: Arc<dyn Registry>,
        router: Option<&slipway_router::Router>,
        args: &RoutingArgs,
    ) -> Routing {
        let bridge = Arc::new(Bridge::default());
        let gate = router.map(|r| RouterGate::start(r, bridge.clone()));
        Routing {
            registry,
            dns: (args.dns_listen, args.dns_upstream),
            bridge,
            gate,
            router: router.map(|r| (r.clone(), args.router_ip)),
            tcp_ports: args.tcp_ports.clone(),
            published_tcp: Vec::new(),
        }
    }

    /// The ports TCP routes may use (`--tcp-ports`).
    pub fn tcp_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.tcp_ports.clone()
    }

    /// Why the router could not listen on `port` now — another process holds it — if so.
    /// Asked before a TCP route is created (the port no route has yet), so that the route is
    /// refused at once rather than created with a listener that failed.
    pub fn tcp_port_taken(&self, port: u16) -> Option<String> {
        let (_, ip) = self.router.as_ref()?;
        let addr = SocketAddr::new(*ip, port);
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
        self.router.as_ref()?.0.tcp_listener_state(port)
    }

    /// For [`slipway_scheduler::Scheduler::set_traffic_gate`]: deploys and `scale` count a job
    /// up once the router has it, and stops drain it from the router first.
    pub fn traffic_gate(&self) -> Option<Arc<dyn slipway_scheduler::TrafficGate>> {
        self.gate
            .clone()
            .map(|g| g as Arc<dyn slipway_scheduler::TrafficGate>)
    }

    /// Registers a host's jobs in discovery (see [`follow_host_with`]), sharing what it
    /// registered with the traffic gate.
    pub fn follow_host(&self, host: Arc<dyn HostApi>) {
        follow_host_with(host, self.registry.clone(), self.bridge.clone());
    }

    /// Starts discovery's DNS as `--dns-listen` says. `bridge`: the local host agent's job
    /// network, `None` without one. Returns the nameserver that agent's containers should use
    /// — the DNS, when it serves the bridge's address on port 53 (a resolv.conf cannot name
    /// another port) — or `None`: they keep the host's resolv.conf. Never fails the server: a
    /// DNS that cannot start is a warning.
    pub async fn start_dns(
        &self,
        bridge: Option<&slipway_host::runc::network::NetworkConfig>,
    ) -> Option<std::net::Ipv4Addr> {
        use slipway_discovery::dns;
        let addr = match (self.dns.0, bridge) {
            (DnsListen::Off, _) | (DnsListen::Auto, None) => {
                tracing::info!("discovery DNS: off; containers use the host's /etc/resolv.conf");
                return None;
            }
            (DnsListen::Auto, Some(net)) => SocketAddr::new(net.gateway().into(), 53),
            (DnsListen::At(a), _) => a,
        };
        if let Some(net) = bridge {
            // The DNS binds the bridge's address, which exists once the bridge is set up; the
            // agent sets it up again when it starts (idempotent).
            let net = net.clone();
            let setup =
                tokio::task::spawn_blocking(move || slipway_host::runc::network::setup_host(&net));
            if let Ok(Err(e)) | Err(e) = setup.await.map_err(anyhow::Error::from) {
                tracing::warn!(
                    "discovery DNS: off, the jobs' bridge cannot be set up ({e:#}); containers use the host's /etc/resolv.conf"
                );
                return None;
            }
        }
        let mut upstream = self.dns.1.or_else(dns::host_resolver);
        if upstream == Some(addr) {
            tracing::warn!(
                "discovery DNS: the upstream resolver is this DNS itself ({addr}); other names are refused. Use --dns-upstream"
            );
            upstream = None;
        } else if upstream.is_none() {
            tracing::warn!(
                "discovery DNS: /etc/resolv.conf names no nameserver and --dns-upstream is not set; names outside {} are refused",
                dns::DOMAIN
            );
        }
        let bound = match dns::serve(dns::DnsHandler::new(self.registry.clone(), upstream), addr)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(
                    "discovery DNS: cannot listen on {addr}: {e}; containers use the host's /etc/resolv.conf (use --dns-listen to pick another address, or `none`)"
                );
                return None;
            }
        };
        let to = upstream.map_or("nowhere (refused)".to_string(), |u| u.to_string());
        tracing::info!("discovery DNS on {bound}, forwarding other names to {to}");
        let gateway = bridge?.gateway();
        let serves_bridge = bound.port() == 53
            && (bound.ip() == IpAddr::V4(gateway) || bound.ip().is_unspecified());
        if !serves_bridge {
            tracing::info!(
                "discovery DNS: not on {gateway}:53, so containers use the host's /etc/resolv.conf"
            );
        }
        serves_bridge.then_some(gateway)
    }
}

/// How long a new job may take to appear in the router before it counts as up anyway (a job
/// whose port is not registered, e.g. no health check passed yet, must not block a deploy).
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping job's in-flight requests may take before it gets SIGTERM anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Registrations of this process's jobs, and the jobs being drained (never registered again).
#[derive(Default)]
struct Bridge {
    live: tokio::sync::Mutex<HashMap<String, Vec<Registration>>>,
    draining: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The scheduler's [`slipway_scheduler::TrafficGate`] over the in-process router: which
/// instances the router has (from its `backend-up` / `backend-drained` events).
struct RouterGate {
    bridge: Arc<Bridge>,
    routed: std::sync::Mutex<std::collections::HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl RouterGate {
    fn start(router: &slipway_router::Router, bridge: Arc<Bridge>) -> Arc<RouterGate> {
        let gate = Arc::new(RouterGate {
            bridge,
            routed: Default::default(),
            changed: tokio::sync::Notify::new(),
        });
        let mut events = router.events();
        let g = gate.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        let mut routed = g.routed.lock().expect("routed");
                        match ev.kind {
                            "backend-up" => {
                                routed.insert(ev.instance);
                            }
                            "backend-drained" => {
                                routed.remove(&ev.instance);
                            }
                            _ => {}
                        }
                        drop(routed);
                        g.changed.notify_waiters();
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("traffic gate: missed {n} router events");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        gate
    }

    /// Waits until `done()` holds, or `timeout`; returns whether it held.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&RouterGate) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }
}

/// Whether a job takes traffic through the router: what [`sync_job`] registers.
fn takes_traffic(job: &JobInfo) -> bool {
    job.ip.is_some()
        && !job.job.app_name.is_empty()
        && (job.job.config.ports.iter().any(|p| p.proto == "tcp")
            || (job.job.config.ports.is_empty() && job.job.process_type == "web"))
}

#[async_trait::async_trait]
impl slipway_scheduler::TrafficGate for RouterGate {
    async fn routed(&self, job: &JobInfo) {
        if !takes_traffic(job) {
            return;
        }
        let id = job.job.id.clone();
        let ok = self
            .wait_until(ROUTE_TIMEOUT, |g| {
                g.routed.lock().expect("routed").contains(&id)
            })
            .await;
        if !ok {
            tracing::warn!(job = %id, "the router did not get the job within {ROUTE_TIMEOUT:?}; counting it up anyway");
        }
    }

    async fn drain(&self, job_id: &str) {
        self.bridge
            .draining
            .lock()
            .expect("draining")
            .insert(job_id.to_string());
        // Dropping the registrations deregisters them; the router stops sending new requests
        // and reports `backend-drained` when the last one in flight is done.
        let regs = self.bridge.live.lock().await.remove(job_id);
        let Some(regs) = regs else { return };
        drop(regs);
        let id = job_id.to_string();
        let t0 = std::time::Instant::now();
        let ok = self
            .wait_until(DRAIN_TIMEOUT, |g| {
                !g.routed.lock().expect("routed").contains(&id)
            })
            .await;
        if ok {
            tracing::debug!(job = %id, "drained from the router in {:?}", t0.elapsed());
        } else {
            tracing::warn!(job = %id, "requests to the job were still in flight after {DRAIN_TIMEOUT:?}; stopping it anyway");
        }
    }
}

/// Starts discovery and the router. A port that is taken does not stop the server: that
/// listener is skipped with a warning saying which flag picks another port. `api_key`: what
/// discovery's API takes; `router_max_connections`: the router's cap (see `server.rs`).
pub async fn start(
    args: &RoutingArgs,
    store: Arc<dyn slipway_store::Store>,
    api_key: &str,
    router_max_connections: usize,
) -> Result<Routing> {
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(slipway_discovery::DEFAULT_TTL));
    match tokio::net::TcpListener::bind(args.discovery_listen).await {
        Ok(l) => {
            tracing::info!("discovery API on http://{}", l.local_addr()?);
            let access = slipway_discovery::http::Access {
                key: api_key.to_string(),
                allow: args.discovery_allow.clone(),
            };
            let app = slipway_discovery::http::router(registry.clone(), access);
            let limits = crate::server::listen::Limits {
                header_timeout: args.header_timeout.unwrap_or(CONTROL_HEADER_TIMEOUT),
                max_connections: DISCOVERY_MAX_CONNECTIONS,
            };
            tokio::spawn(crate::server::listen::serve(
                l,
                app,
                limits,
                "discovery's API",
                std::future::pending(),
            ));
        }
        Err(e) => tracing::warn!(
            "discovery API: cannot listen on {}: {e}; use --discovery-listen to pick another address",
            args.discovery_listen
        ),
    }
    if args.no_router {
        return Ok(Routing::new(registry, None, args));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let http_port = args.http_port.unwrap_or(if root { 80 } else { 8080 });
    let https_port = args.https_port.unwrap_or(if root { 443 } else { 8443 });
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
    let router = slipway_router::Router::new(slipway_router::Config {
        tcp_bind: args.router_ip,
        default_certificate,
        access_log: args.access_log,
        max_connections: router_max_connections,
        tcp_ports: args.tcp_ports.clone(),
        limits,
        ..Default::default()
    })?;
    match tokio::net::TcpListener::bind(args.router_admin).await {
        Ok(l) => {
            tracing::info!("router: admin (metrics) on http://{}", l.local_addr()?);
            let r = router.clone();
            tokio::spawn(async move { r.serve_admin(l).await });
        }
        Err(e) => tracing::warn!(
            "router: cannot listen on {} for metrics: {e}; use --router-admin",
            args.router_admin
        ),
    }
    router.follow_registry(registry.clone());
    router
        .follow_store(store)
        .await
        .context("router: cannot load routes")?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (http, https) = (
        SocketAddr::new(args.router_ip, http_port),
        SocketAddr::new(args.router_ip, https_port),
    );
    let tcp_routes = (*args.tcp_ports.start(), *args.tcp_ports.end());
    match router.spawn_per_core(http, Some(https), threads) {
        Ok((h, s)) => {
            tracing::info!("router: HTTP on {h}");
            tracing::info!("router: HTTPS on {}", s.unwrap_or(https));
            let mut routing = Routing::new(registry, Some(&router), args);
            let s = s.unwrap_or(https);
            routing.published_tcp = vec![(h.port(), h.port()), (s.port(), s.port()), tcp_routes];
            return Ok(routing);
        }
        Err(e) => tracing::warn!("router: cannot listen on {http} and {https}: {e}"),
    }
    // One of the ports is taken: serve what can be served, on this runtime.
    let mut published_tcp = vec![tcp_routes];
    match tokio::net::TcpListener::bind(http).await {
        Ok(l) => {
            tracing::info!("router: HTTP on {}", l.local_addr()?);
            let p = l.local_addr()?.port();
            published_tcp.push((p, p));
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
            published_tcp.push((p, p));
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
    let mut routing = Routing::new(registry, Some(&router), args);
    routing.published_tcp = published_tcp;
    Ok(routing)
}

/// Registers a host's jobs in discovery: each port of a job as an instance of `APP-TYPE`
/// (Flynn's service naming; the app's default route points at `APP-web`) at `JOB_IP:PORT`,
/// once the job's health checks pass (or once it started, for ports without a check), and
/// deregisters it when the job goes down, stops or fails. Heartbeats keep it alive; if this
/// process dies, the instance expires after the TTL.
fn follow_host_with(host: Arc<dyn HostApi>, registry: Arc<dyn Registry>, bridge: Arc<Bridge>) {
    tokio::spawn(async move {
        loop {
            let events = match host.events().await {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("discovery: cannot follow the host's jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Ok(jobs) = host.list_jobs().await {
                for j in jobs {
                    sync_job(&registry, &bridge, &j, None).await;
                }
            }
            use futures_util::StreamExt;
            let mut events = events;
            while let Some(ev) = events.next().await {
                sync_job(&registry, &bridge, &ev.job, Some(ev.kind)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn sync_job(
    registry: &Arc<dyn Registry>,
    bridge: &Bridge,
    job: &JobInfo,
    kind: Option<EventKind>,
) {
    let id = job.job.id.clone();
    if matches!(kind, Some(EventKind::Cleanup)) {
        bridge.draining.lock().expect("draining").remove(&id);
    }
    // Read under the `live` lock: a drain marks the job first, then takes the lock, so a job
    // being drained is never registered again behind its back.
    let mut live = bridge.live.lock().await;
    let draining = bridge.draining.lock().expect("draining").contains(&id);
    let running = job.status == JobStatus::Running && !job.stop_requested;
    let checked = job.job.config.ports.iter().any(|p| p.check.is_some());
    let wanted = running
        && !draining
        && (job.up || !checked)
        && !matches!(
            kind,
            Some(EventKind::Down | EventKind::Stop | EventKind::Error | EventKind::Cleanup)
        );
    if !wanted {
        // Dropping the registrations deregisters them.
        live.remove(&id);
        return;
    }
    let (Some(ip), false) = (job.ip, live.contains_key(&id)) else {
        return;
    };
    if job.job.app_name.is_empty() || job.job.process_type.is_empty() {
        return;
    }
    let service = format!("{}-{}", job.job.app_name, job.job.process_type);
    // A web process that declares no port listens on $PORT (8080) all the same.
    let mut ports: Vec<u16> = job
        .job
        .config
        .ports
        .iter()
        .filter(|p| p.proto == "tcp")
        .map(|p| p.port)
        .collect();
    if job.job.config.ports.is_empty() && job.job.process_type == "web" {
        ports.push(slipway_host::DEFAULT_WEB_PORT);
    }
    let mut regs = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("release".into(), job.job.release_id.clone());
        meta.insert("app".into(), job.job.app_name.clone());
        let new = NewInstance {
            addr: SocketAddr::new(IpAddr::V4(ip), port).to_string(),
            proto: Some("tcp".into()),
            meta,
        };
        let inst_id = if i == 0 {
            id.clone()
        } else {
            format!("{id}.{port}")
        };
        match Registration::start(
            registry.clone(),
            &service,
            &inst_id,
            new,
            slipway_discovery::DEFAULT_TTL,
        )
        .await
        {
            Ok(r) => regs.push(r),
            Err(e) => tracing::warn!(job = %id, %service, "discovery: cannot register: {e}"),
        }
    }
    tracing::info!(job = %id, %service, "discovery: registered");
    live.insert(id, regs);
}
