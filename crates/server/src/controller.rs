//! The controller role: the REST API on `--listen` (SQLite in the data dir, or PostgreSQL
//! with `--database-url`), with the roles served on its port behind its API key (logs, blobs,
//! git, the registry), and the `Layer0` implementation of its `Cluster` trait over the
//! scheduler, which also answers the operator's views (`GET /hosts`, `GET /cluster/status`)
//! from the scheduler, discovery and etcd. Each controller registers itself in discovery as
//! `slipway-controller` (so `cluster status` lists them all).
//!
//! Needs: the store, the scheduler (same process: `roles::check`), the router when it runs
//! here (TCP-route checks), and the other roles' HTTP routes. Gives: the API; it prints
//! `Listening on URL` first on stdout (tests and scripts read it).

use crate::Config;
use crate::router::RouterRole;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

/// The URL this controller tells others (`git_url`, `slipway info`): `--advertise`, else the
/// listening address, or for an unspecified one the address this machine sends from on its
/// default route (found by connecting a UDP socket: nothing is sent), else loopback.
pub fn advertised_url(config: &Config, bound: SocketAddr) -> String {
    if let Some(a) = &config.args.advertise {
        return a.url(bound.port());
    }
    if !bound.ip().is_unspecified() {
        return format!("http://{bound}");
    }
    match route_source(bound.is_ipv6()) {
        Some(ip) => format!("http://{}", SocketAddr::new(ip, bound.port())),
        None => {
            let url = format!("http://{}", client_addr(bound));
            tracing::warn!(
                "listening on {bound} but this machine has no default route: advertising {url}; set --advertise to the address others reach this controller at"
            );
            url
        }
    }
}

/// The source address of this machine's default route, if it has one.
pub(crate) fn route_source(v6: bool) -> Option<std::net::IpAddr> {
    // Documentation addresses (RFC 5737, RFC 3849): routed by the default route, never sent to.
    let (bind, probe) = match v6 {
        false => ("0.0.0.0:0", "192.0.2.1:9"),
        true => ("[::]:0", "[2001:db8::1]:9"),
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(probe).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Binds `--listen`; returns the listener and the URL a client on this machine uses.
pub async fn bind(config: &Config) -> Result<(tokio::net::TcpListener, String)> {
    let listen = config.args.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}: is another `slipway server` running? Use --listen to pick another address")
    })?;
    let addr = listener.local_addr()?;
    let local_url = format!("http://{}", client_addr(addr));
    // The first line on stdout says where we are (tests and scripts read it).
    println!("Listening on {local_url}");
    std::io::stdout().flush()?;
    Ok((listener, local_url))
}

pub struct ControllerDeps {
    pub store: Arc<dyn slipway_store::Store>,
    pub scheduler: slipway_scheduler::Scheduler,
    pub router: Option<Arc<RouterRole>>,
    pub api_key: String,
    pub local_url: String,
    /// What `git_url` and `info` name ([`advertised_url`]).
    pub advertised_url: String,
    /// The other roles' routes on this port (one `.merge` per role).
    pub extra: axum::Router,
    /// Discovery as this process reaches it (the discovery role's, or etcd's with `--etcd`):
    /// the controller registers there and `cluster status` reads it. `None`: neither.
    pub registry: Option<Arc<dyn slipway_discovery::Registry>>,
    /// `--etcd`'s client: `cluster status` asks every member.
    pub etcd: Option<slipway_etcd::Client>,
}

/// Serves the API until SIGTERM or Ctrl-C.
pub async fn serve(
    config: &Config,
    listener: tokio::net::TcpListener,
    deps: ControllerDeps,
) -> Result<()> {
    let args = &config.args;
    let controller = slipway_controller::ControllerConfig {
        api_key: deps.api_key.clone(),
        default_domain: config.domain.clone(),
        git_url: deps.advertised_url.clone(),
    };
    tracing::info!(data_dir = %config.data_dir.display(), "controller API on {}, advertised as {}", deps.local_url, deps.advertised_url);
    // Changes are refused while no scheduler can lead (etcd without quorum): scheduler.rs.
    let gate = (
        deps.scheduler.clone(),
        Arc::<str>::from(deps.api_key.as_str()),
    );
    let registration = match &deps.registry {
        Some(r) => register(r.clone(), &deps.advertised_url).await,
        None => None,
    };
    let registry = deps.registry.clone();
    let layer0 = Arc::new(Layer0 {
        scheduler: deps.scheduler,
        router: deps.router,
        tcp_ports: args.routing.tcp_ports.clone(),
        forward: (deps.local_url.clone(), deps.api_key.clone()),
        ops: crate::ops::Ops::new(deps.registry, deps.etcd),
    });
    layer0.spawn_host_tracker();
    let cluster: Arc<dyn slipway_controller::Cluster> = layer0;
    let router =
        slipway_controller::router_with_extra(deps.store, controller, Some(cluster), deps.extra)
            // The dashboard has its own login (sessions) and calls this API over loopback.
            .merge(slipway_dashboard::router(deps.local_url.clone()));
    let router = slipway_registry::with_api_version(router).layer(
        axum::middleware::from_fn_with_state(gate, crate::scheduler::refuse_changes_without_leader),
    );
    let limits = crate::listen::Limits {
        header_timeout: args
            .routing
            .header_timeout
            .unwrap_or(crate::args::CONTROL_HEADER_TIMEOUT),
        max_connections: args.api_max_connections,
    };
    crate::listen::serve(
        listener,
        router,
        limits,
        "the API",
        crate::shutdown_signal(),
    )
    .await;
    // Leave discovery now rather than at the TTL (dropping the registration would only spawn
    // the removal, which the runtime's shutdown may cut short).
    if let (Some((registration, id)), Some(registry)) = (registration, registry) {
        drop(registration);
        let service = crate::ops::CONTROLLER_SERVICE;
        let gone = registry.deregister(service, &id);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), gone).await;
    }
    Ok(())
}

/// The controller's job controls (`kill`, `run`), backed by the scheduler, and what it asks
/// the router about TCP routes.
pub(crate) struct Layer0 {
    scheduler: slipway_scheduler::Scheduler,
    /// The router in this process, if any: the TCP-route checks ask it.
    router: Option<Arc<RouterRole>>,
    tcp_ports: std::ops::RangeInclusive<u16>,
    /// This controller's URL and the API key: `kill` and `run` go to the scheduler leader's
    /// controller when this process's scheduler does not lead (docs/scheduler.md).
    forward: (String, String),
    /// What `GET /hosts` and `GET /cluster/status` read besides the scheduler.
    ops: crate::ops::Ops,
}

impl Layer0 {
    /// The leader's controller, when another process's scheduler leads.
    fn leader(&self) -> Option<(String, slipway_client::Client)> {
        let url = (!self.scheduler.is_acting())
            .then(|| self.scheduler.leader_url())
            .flatten()
            .filter(|u| *u != self.forward.0)?;
        Some((
            url.clone(),
            slipway_client::Client::new(&url, &self.forward.1).ok()?,
        ))
    }

    /// Follows the scheduler's host set once a second, so that a host's `since` and a lost
    /// host are known even when nobody asks in between. Ends with the process.
    fn spawn_host_tracker(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            while let Some(l0) = weak.upgrade() {
                l0.ops.observe(&l0.scheduler.hosts());
                drop(l0);
                tick.tick().await;
            }
        });
    }
}

/// A forwarded call's error: the leader's answer as it is, or why it could not be asked.
fn forwarded(url: &str, e: slipway_client::ClientError) -> slipway_controller::ApiErr {
    match e {
        slipway_client::ClientError::Api { error, .. } => slipway_controller::ApiErr(error),
        e => slipway_controller::ApiErr::new(
            slipway_types::ErrorCode::Unavailable,
            format!("the scheduler leader's controller ({url}) cannot be asked: {e}"),
        ),
    }
}

/// Registers this controller in discovery as `slipway-controller` (id: random per process,
/// addr: the advertised address, meta `url`: the advertised URL), kept alive until dropped;
/// returns the registration and its id. A registry that refuses is a warning: the API works
/// without it, only `cluster status` on other controllers misses this one.
async fn register(
    registry: Arc<dyn slipway_discovery::Registry>,
    advertised_url: &str,
) -> Option<(slipway_discovery::Registration, String)> {
    let id = slipway_types::Id::new_v4().simple().to_string();
    let addr = advertised_url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let new = slipway_discovery::NewInstance {
        addr,
        proto: None,
        meta: [("url".to_string(), advertised_url.to_string())].into(),
    };
    let service = crate::ops::CONTROLLER_SERVICE;
    match slipway_discovery::Registration::start(
        registry,
        service,
        &id,
        new,
        slipway_discovery::DEFAULT_TTL,
    )
    .await
    {
        Ok(r) => {
            tracing::info!(id, "registered in discovery as {service}");
            Some((r, id))
        }
        Err(e) => {
            tracing::warn!(
                "cannot register this controller in discovery as {service}: {e}; `slipway cluster status` will not list it"
            );
            None
        }
    }
}

#[async_trait::async_trait]
impl slipway_controller::Cluster for Layer0 {
    async fn stop_job(
        &self,
        app_id: slipway_types::Id,
        job_id: &str,
    ) -> Result<slipway_types::Job, slipway_controller::ApiErr> {
        if let Some((url, leader)) = self.leader() {
            let app = app_id.to_string();
            return leader
                .kill_job(&app, job_id)
                .await
                .map_err(|e| forwarded(&url, e));
        }
        self.scheduler
            .stop_job(app_id, job_id)
            .await
            .map_err(api_err)
    }
    async fn run_job(
        &self,
        app: &slipway_types::App,
        release: &slipway_types::Release,
        job: &slipway_types::NewJob,
    ) -> Result<slipway_types::Job, slipway_controller::ApiErr> {
        if let Some((url, leader)) = self.leader() {
            let mut job = job.clone();
            job.release.get_or_insert(release.id);
            let app = app.id.to_string();
            return leader
                .run_job(&app, &job)
                .await
                .map_err(|e| forwarded(&url, e));
        }
        self.scheduler
            .run_one_off(app, release, job)
            .await
            .map_err(api_err)
    }
    async fn attach_job(
        &self,
        app_id: slipway_types::Id,
        job_id: &str,
    ) -> Result<slipway_controller::AttachStream, slipway_controller::ApiErr> {
        let stream = self
            .scheduler
            .attach(app_id, job_id)
            .await
            .map_err(api_err)?;
        Ok(Box::new(stream))
    }
    async fn job_output(
        &self,
        app_id: slipway_types::Id,
        job_id: &str,
    ) -> Result<
        futures_util::stream::BoxStream<'static, slipway_types::OutputLine>,
        slipway_controller::ApiErr,
    > {
        use futures_util::StreamExt;
        let lines = self
            .scheduler
            .job_output(app_id, job_id)
            .await
            .map_err(api_err)?;
        Ok(lines
            .map(|l| slipway_types::OutputLine {
                stream: l.stream,
                msg: l.msg,
            })
            .boxed())
    }
    async fn hosts(&self) -> Result<Vec<slipway_types::HostInfo>, slipway_controller::ApiErr> {
        let hosts = self.scheduler.hosts();
        self.ops.observe(&hosts);
        Ok(self.ops.hosts(&self.scheduler.jobs()).await)
    }
    async fn status(&self) -> Result<slipway_types::ClusterStatus, slipway_controller::ApiErr> {
        Ok(self.ops.status(self.scheduler.hosts().len()).await)
    }
    fn tcp_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.tcp_ports.clone()
    }
    fn tcp_port_taken(&self, port: u16) -> Option<String> {
        self.router.as_ref()?.tcp_port_taken(port)
    }
    fn tcp_listener_state(&self, port: u16) -> Option<String> {
        self.router.as_ref()?.tcp_listener_state(port)
    }
}

/// The one mapping of the scheduler's errors to the API's.
pub(crate) fn api_err(e: slipway_scheduler::SchedError) -> slipway_controller::ApiErr {
    use slipway_scheduler::SchedError;
    use slipway_types::ErrorCode;
    let code = match &e {
        SchedError::NotFound(_) => ErrorCode::NotFound,
        SchedError::Invalid(_) => ErrorCode::ValidationError,
        SchedError::Unavailable(_) => ErrorCode::Unavailable,
        SchedError::BadRequest(_) => ErrorCode::BadRequest,
    };
    slipway_controller::ApiErr::new(code, e.to_string())
}

/// Where a client on this machine reaches a server bound to `addr` (0.0.0.0 → 127.0.0.1).
fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}
