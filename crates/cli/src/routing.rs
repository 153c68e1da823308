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
    /// Serve discovery's DNS (`SERVICE.discover.`, `leader.SERVICE.discover.`, SRV; other names
    /// forwarded to /etc/resolv.conf's first nameserver) on this address, UDP and TCP. Off
    /// unless given, e.g. `--dns-listen 127.0.0.1:5353`.
    #[arg(long, env = "SLIPWAY_DNS_LISTEN")]
    dns_listen: Option<SocketAddr>,
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
}

pub struct Routing {
    pub registry: Arc<dyn Registry>,
    /// The jobs this process registered in discovery (shared with the traffic gate, which
    /// deregisters a job to drain it).
    bridge: Arc<Bridge>,
    /// The router's side of the scheduler's up/stop (None with `--no-router`).
    gate: Option<Arc<RouterGate>>,
}

impl Routing {
    fn new(registry: Arc<dyn Registry>, router: Option<&slipway_router::Router>) -> Routing {
        let bridge = Arc::new(Bridge::default());
        let gate = router.map(|r| RouterGate::start(r, bridge.clone()));
        Routing {
            registry,
            bridge,
            gate,
        }
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
/// listener is skipped with a warning saying which flag picks another port.
pub async fn start(args: &RoutingArgs, store: Arc<dyn slipway_store::Store>) -> Result<Routing> {
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(slipway_discovery::DEFAULT_TTL));
    match tokio::net::TcpListener::bind(args.discovery_listen).await {
        Ok(l) => {
            tracing::info!("discovery API on http://{}", l.local_addr()?);
            let app = slipway_discovery::http::router(registry.clone());
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Err(e) => tracing::warn!(
            "discovery API: cannot listen on {}: {e}; use --discovery-listen to pick another address",
            args.discovery_listen
        ),
    }
    if let Some(addr) = args.dns_listen {
        let handler = slipway_discovery::dns::DnsHandler::new(
            registry.clone(),
            slipway_discovery::dns::host_resolver(),
        );
        match slipway_discovery::dns::serve(handler, addr).await {
            Ok(a) => tracing::info!("discovery DNS on {a}"),
            Err(e) => tracing::warn!(
                "discovery DNS: cannot listen on {addr}: {e}; use --dns-listen to pick another address"
            ),
        }
    }
    if args.no_router {
        return Ok(Routing::new(registry, None));
    }
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
    let router = slipway_router::Router::new(slipway_router::Config {
        tcp_bind: args.router_ip,
        default_certificate,
        access_log: args.access_log,
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
    match router.spawn_per_core(http, Some(https), threads) {
        Ok((h, s)) => {
            tracing::info!("router: HTTP on {h}");
            tracing::info!("router: HTTPS on {}", s.unwrap_or(https));
            return Ok(Routing::new(registry, Some(&router)));
        }
        Err(e) => tracing::warn!("router: cannot listen on {http} and {https}: {e}"),
    }
    // One of the ports is taken: serve what can be served, on this runtime.
    match tokio::net::TcpListener::bind(http).await {
        Ok(l) => {
            tracing::info!("router: HTTP on {}", l.local_addr()?);
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
    Ok(Routing::new(registry, Some(&router)))
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
