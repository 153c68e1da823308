//! `slipway server`: runs the daemon roles in one process (embedded mode): the controller API on
//! SQLite (or PostgreSQL with `--database-url`), the deployment executor, the scheduler and the
//! local host agent (runc) in-process. One function per role, so roles can be added side by side.

use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod listen;

/// File descriptors kept for everything but the router's and the API's connections: the host
/// agent (containers' log pipes, attach sockets, cgroup and netns files), the database, logs,
/// blobs, git and build subprocesses.
const FD_RESERVE: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Where Slipway keeps its state (database, API key, and later slugs, repos, logs).
    /// Default: /var/lib/slipway as root, ~/.local/share/slipway otherwise.
    #[arg(long, env = "SLIPWAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the controller API. Port 0 picks a free port (printed at start).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Apps get `<app>.<domain>` as their default HTTP route. `localhost` names resolve to this
    /// machine in browsers and curl, so the default works with no DNS set-up.
    #[arg(long, env = "SLIPWAY_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Controller state: `postgres://…` for cluster mode. Default: SQLite in the data dir.
    #[arg(long, env = "SLIPWAY_DATABASE_URL")]
    database_url: Option<String>,
    /// Don't add this server to the CLI's cluster list (~/.config/slipway/config.toml).
    #[arg(long)]
    no_register: bool,
    /// Run no local host agent: the controller, scheduler and deployer only (jobs stay `blocked`
    /// until a host is added).
    #[arg(long)]
    no_host: bool,
    /// Tags of the local host, KEY=VALUE (repeatable); formations' tags are matched against them.
    #[arg(long = "host-tag", value_parser = parse_tag)]
    host_tags: Vec<(String, String)>,
    #[command(flatten)]
    runtime: slipway_host::cli::RuntimeArgs,
    #[command(flatten)]
    routing: Box<crate::routing::RoutingArgs>,
    /// Log lines kept per app (`slipway log`); older ones are dropped as new ones arrive.
    #[arg(long, env = "SLIPWAY_LOG_LINES", default_value_t = 10_000)]
    log_lines: u64,
    /// Also drop log lines older than this (`30d`, `12h`, `90m`, `3600s`). Default: by count only.
    #[arg(long, env = "SLIPWAY_LOG_MAX_AGE", value_parser = parse_age)]
    log_max_age: Option<std::time::Duration>,
    /// How often unused blobs are deleted (tests shorten it).
    #[arg(long, hide = true, default_value = "1h", value_parser = parse_age)]
    blob_gc_interval: std::time::Duration,
    /// How old an unused blob must be to be deleted (uploads in flight are younger).
    #[arg(long, hide = true, default_value = "1h", value_parser = parse_age)]
    blob_gc_grace: std::time::Duration,
    /// Connections the controller API (with git, the registry, blobs and logs) keeps open at
    /// once; past it new ones get a 503.
    #[arg(long, env = "SLIPWAY_API_MAX_CONNECTIONS", default_value_t = 1024)]
    api_max_connections: usize,
}

/// Raises the soft limit on open files to the hard one (the kernel's default soft limit,
/// often 1024, would be the first thing a busy router runs into), and returns it.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The router's connection cap: what the file descriptor limit leaves after the reserve, the
/// API's, discovery's and the admin endpoint's caps, at two descriptors per connection (the
/// client's and the backend's).
fn router_connection_cap(nofile: u64, api: usize) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let others = FD_RESERVE
        + api
        + crate::routing::DISCOVERY_MAX_CONNECTIONS
        + slipway_router::ADMIN_MAX_CONNECTIONS;
    (nofile.saturating_sub(others) / 2).max(256)
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid tag {s:?}: expected KEY=VALUE")),
    }
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
                // hickory's server logs every DNS query at info: two lines per container lookup.
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let domain = slipway_types::normalize_domain(&args.domain)
        .map_err(|e| anyhow::anyhow!("--domain: {}", e.message))?;
    let data_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => default_data_dir()?,
    };
    create_private_dir(&data_dir)?;
    let api_key = load_or_create_key(&data_dir.join("api-key"))?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("slipway.db").display()));
    let store: Arc<dyn slipway_store::Store> = Arc::new(
        slipway_store::open(&database_url)
            .await
            .context("cannot open the controller database")?,
    );
    tracing::info!(backend = store.backend(), "store ready");
    let nofile = raise_nofile_limit();
    let router_cap = args
        .routing
        .router_max_connections
        .unwrap_or_else(|| router_connection_cap(nofile, args.api_max_connections));
    let needed = FD_RESERVE
        + args.api_max_connections
        + crate::routing::DISCOVERY_MAX_CONNECTIONS
        + 2 * router_cap;
    tracing::info!(
        "connection limits: router {router_cap}, API {}, discovery {}; open files limit {nofile}",
        args.api_max_connections,
        crate::routing::DISCOVERY_MAX_CONNECTIONS
    );
    if (needed as u64) > nofile {
        tracing::warn!(
            "the connection limits need about {needed} file descriptors, more than the limit of {nofile}: raise `ulimit -n` (LimitNOFILE=) or lower --router-max-connections"
        );
    }
    let scheduler = start_scheduler(store.clone());
    let routing =
        Arc::new(crate::routing::start(&args.routing, store.clone(), &api_key, router_cap).await?);
    if let Some(gate) = routing.traffic_gate() {
        scheduler.set_traffic_gate(gate);
    }
    let blobs = start_blobstore(&args, &data_dir, store.clone())?;
    let logs = start_logs(&args, &data_dir, store.clone())?;
    if !args.no_host {
        start_local_host(&args, &data_dir, &scheduler, &routing, &logs, &blobs).await?;
    } else {
        routing.start_dns(None).await;
    }
    // Rows of jobs that ended while no scheduler ran would show as alive forever otherwise.
    match scheduler.mark_lost_rows().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("marked {n} job(s) no host reports as down"),
        Err(e) => tracing::warn!("cannot check job rows against the hosts: {e:#}"),
    }
    start_deployer(store.clone());

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is another `slipway server` running? Use --listen to pick another address", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let local_url = format!("http://{}", client_addr(addr));
    // The first line on stdout says where we are (tests and scripts read it).
    println!("Listening on {local_url}");
    std::io::stdout().flush()?;

    if !args.no_register {
        crate::config::register_local_cluster(&local_url, &api_key)
            .context("cannot add this server to the CLI config (use --no-register to skip)")?;
    }
    let config = slipway_controller::ControllerConfig {
        api_key,
        default_domain: domain,
        git_url: local_url.clone(),
    };
    tracing::info!(data_dir = %data_dir.display(), "controller API on {local_url}");
    let build = start_build(
        &data_dir,
        store.clone(),
        &scheduler,
        &config.api_key,
        &local_url,
        blobs.clone(),
    )?;
    let cluster: Arc<dyn slipway_controller::Cluster> = Arc::new(Layer0(scheduler, routing));
    // Roles served on the controller's port, behind its API key: one `.merge` per role.
    let extra = axum::Router::new()
        .merge(
            slipway_logs::http::router(logs, store.clone())
                .merge(slipway_blobstore::http::router_guarded(blobs.clone(), {
                    let store = store.clone();
                    Arc::new(move || {
                        let store = store.clone();
                        Box::pin(
                            async move { store.list_artifacts().await.map_err(|e| e.to_string()) },
                        )
                    })
                }))
                // Their errors are the API's `{"code","message"}`, axum's rejections too.
                .layer(axum::middleware::from_fn(
                    slipway_controller::json_rejections,
                )),
        )
        .merge(build)
        .merge(start_registry(&data_dir, store.clone(), blobs)?);
    let router = slipway_controller::router_with_extra(store, config, Some(cluster), extra);
    let router = slipway_registry::with_api_version(router);
    let limits = listen::Limits {
        header_timeout: args
            .routing
            .header_timeout
            .unwrap_or(crate::routing::CONTROL_HEADER_TIMEOUT),
        max_connections: args.api_max_connections,
    };
    listen::serve(listener, router, limits, "the API", shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The scheduler: converges formations into jobs on the hosts it follows.
fn start_scheduler(store: Arc<dyn slipway_store::Store>) -> slipway_scheduler::Scheduler {
    let scheduler = slipway_scheduler::Scheduler::new(store, Default::default());
    tokio::spawn(scheduler.clone().run());
    scheduler
}

/// The local host agent (runc) in-process, followed by the scheduler. Builds the busybox stack
/// on first start (<1 s), since releases without artifacts run on it.
async fn start_local_host(
    args: &ServerArgs,
    data_dir: &Path,
    scheduler: &slipway_scheduler::Scheduler,
    routing: &crate::routing::Routing,
    logs: &slipway_logs::Aggregator,
    blobs: &Arc<dyn slipway_blobstore::BlobStore>,
) -> Result<()> {
    let host_dir = data_dir.join("host");
    let mut runc = args.runtime.config(&host_dir)?;
    // Jobs reach the host's router (an app calling another by its public name), nothing else
    // the host listens on but the gateway's DNS.
    runc.published_tcp = routing.published_tcp.clone();
    // Discovery's DNS on the jobs' bridge: the agent's containers resolve through it.
    runc.dns = routing.start_dns(Some(&runc.network)).await;
    let stacks = runc.stacks_dir.clone();
    let stack = scheduler.config().stack.clone();
    tokio::task::spawn_blocking(move || slipway_host::stack::build(&stacks, &stack, false))
        .await?
        .context("cannot build the default stack")?;
    let mut agent = slipway_host::AgentConfig::new(&host_dir);
    agent.tags = args.host_tags.iter().cloned().collect();
    agent.blobs = Some(blobs.clone());
    let host = slipway_host::daemon::start(runc, agent, None)
        .await
        .context("cannot start the local host agent (use --no-host to run without one)")?;
    let id = scheduler.add_host(host.api()).await?;
    routing.follow_host(host.api());
    slipway_logs::follow_host(logs.clone(), host.api());
    tracing::info!(host = %id, "local host agent ready");
    Ok(())
}

/// The log aggregator: every logged job's lines per app under `<data>/logs` (a bounded history
/// that survives restarts), fed by the hosts' jobs; `GET /apps/{app}/log` serves it; apps with
/// a `log_sink=syslog://HOST:PORT` meta get their lines forwarded.
fn start_logs(
    args: &ServerArgs,
    data_dir: &Path,
    store: Arc<dyn slipway_store::Store>,
) -> Result<slipway_logs::Aggregator> {
    if args.log_lines == 0 {
        anyhow::bail!("--log-lines must be at least 1");
    }
    let dir = data_dir.join("logs");
    let logs = slipway_logs::Aggregator::open(slipway_logs::Config {
        dir: dir.clone(),
        retention: slipway_logs::Retention {
            max_lines: args.log_lines,
            max_age: args.log_max_age,
        },
    })
    .with_context(|| format!("cannot open the log history in {}", dir.display()))?;
    slipway_logs::sink::run_sinks(logs.clone(), store.clone());
    slipway_logs::sink::forget_deleted_apps(logs.clone(), store);
    Ok(logs)
}

/// `30d`, `12h`, `90m`, `3600s` (or a number of seconds).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid age {s:?}: expected e.g. 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid age {s:?}: the unit is one of s, m, h, d")),
    };
    match n.checked_mul(secs) {
        Some(t) if t > 0 => Ok(std::time::Duration::from_secs(t)),
        _ => Err(format!(
            "invalid age {s:?}: must be more than 0 and not absurdly large"
        )),
    }
}

/// The git receiver and build pipeline: `git push` to `<url>/APP.git` builds the pushed commit
/// in a `build` job on the app's stack and deploys it. Repos in `<data>/repos`, build caches and
/// scratch dirs in `<data>/build`, slugs in the blob store.
fn start_build(
    data_dir: &Path,
    store: Arc<dyn slipway_store::Store>,
    scheduler: &slipway_scheduler::Scheduler,
    api_key: &str,
    local_url: &str,
    blobs: Arc<dyn slipway_blobstore::BlobStore>,
) -> Result<axum::Router> {
    let build = slipway_builder::BuildContext {
        blobs,
        jobs: Arc::new(scheduler.clone()),
        data_dir: data_dir.join("build"),
        buildpacks_dir: buildpacks_dir(data_dir)?,
        limits: Default::default(),
    };
    let pusher = Arc::new(slipway_builder::push::Pusher {
        store: store.clone(),
        build,
        default_stack: scheduler.config().stack.clone(),
    });
    let cfg = slipway_builder::receiver::ReceiverConfig {
        repos_dir: data_dir.join("repos"),
        hook_exe: std::env::current_exe().context("cannot find the slipway binary")?,
        server_url: local_url.to_string(),
        api_key: api_key.to_string(),
    };
    let receiver = slipway_builder::receiver::Receiver::new(cfg, store, pusher);
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

/// The registry v2 endpoint (`/v2/…`, repository = app): `docker push`, `skopeo copy` and
/// `slipway image push` deploy images through it. Layers go into the blob store; upload state and
/// tags live in `<data>/registry`.
fn start_registry(
    data_dir: &Path,
    store: Arc<dyn slipway_store::Store>,
    blobs: Arc<dyn slipway_blobstore::BlobStore>,
) -> Result<axum::Router> {
    let registry = slipway_registry::Registry::open(store, blobs, data_dir.join("registry"))
        .context("cannot open the registry's directory")?;
    registry.spawn_cleaner();
    Ok(slipway_registry::router(registry))
}

/// The blob store (slugs, image layers and configs): content-addressed files in `<data>/blobs`,
/// served at `/blobs/{digest}` behind the API key (remote hosts fetch layers there), shared by
/// the local host agent, the build pipeline and the registry. An hourly collection deletes the
/// blobs no artifact names once they are older than an hour.
fn start_blobstore(
    args: &ServerArgs,
    data_dir: &Path,
    store: Arc<dyn slipway_store::Store>,
) -> Result<Arc<dyn slipway_blobstore::BlobStore>> {
    let dir = data_dir.join("blobs");
    let blobs: Arc<dyn slipway_blobstore::BlobStore> = Arc::new(
        slipway_blobstore::FsBlobStore::open(&dir)
            .with_context(|| format!("cannot open the blob store in {}", dir.display()))?,
    );
    let gc = blobs.clone();
    let (interval, grace) = (args.blob_gc_interval, args.blob_gc_grace);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let listed = async || store.list_artifacts().await.map_err(|e| e.to_string());
            match slipway_blobstore::gc::collect(&*gc, listed, grace, std::time::SystemTime::now())
                .await
            {
                Ok(r) if r.deleted.is_empty() => {
                    tracing::debug!(scanned = r.scanned, "blob collection: nothing to delete")
                }
                Ok(r) => tracing::info!(
                    deleted = r.deleted.len(),
                    freed_bytes = r.freed_bytes,
                    kept = r.referenced + r.young,
                    "blob collection"
                ),
                Err(e) => tracing::warn!("blob collection failed: {e}"),
            }
        }
    });
    Ok(blobs)
}

/// The deployment executor: runs pending deployments (a deploy of an app with nothing running
/// completes at once, so this runs with or without hosts).
fn start_deployer(store: Arc<dyn slipway_store::Store>) {
    let deployer = slipway_deploy::Deployer::new(store, Default::default());
    tokio::spawn(deployer.run());
}

/// The controller's job controls (`kill`, `run`), backed by the scheduler, and what it asks
/// the router about TCP routes.
struct Layer0(slipway_scheduler::Scheduler, Arc<crate::routing::Routing>);

#[async_trait::async_trait]
impl slipway_controller::Cluster for Layer0 {
    async fn stop_job(
        &self,
        app_id: slipway_types::Id,
        job_id: &str,
    ) -> Result<slipway_types::Job, slipway_controller::ApiErr> {
        self.0.stop_job(app_id, job_id).await.map_err(api_err)
    }
    async fn run_job(
        &self,
        app: &slipway_types::App,
        release: &slipway_types::Release,
        job: &slipway_types::NewJob,
    ) -> Result<slipway_types::Job, slipway_controller::ApiErr> {
        self.0.run_one_off(app, release, job).await.map_err(api_err)
    }
    async fn attach_job(
        &self,
        app_id: slipway_types::Id,
        job_id: &str,
    ) -> Result<slipway_controller::AttachStream, slipway_controller::ApiErr> {
        let stream = self.0.attach(app_id, job_id).await.map_err(api_err)?;
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
        let lines = self.0.job_output(app_id, job_id).await.map_err(api_err)?;
        Ok(lines
            .map(|l| slipway_types::OutputLine {
                stream: l.stream,
                msg: l.msg,
            })
            .boxed())
    }
    fn tcp_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.1.tcp_ports()
    }
    fn tcp_port_taken(&self, port: u16) -> Option<String> {
        self.1.tcp_port_taken(port)
    }
    fn tcp_listener_state(&self, port: u16) -> Option<String> {
        self.1.tcp_listener_state(port)
    }
}

fn api_err(e: slipway_scheduler::SchedError) -> slipway_controller::ApiErr {
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

fn default_data_dir() -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/slipway"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("slipway"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/slipway"))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// The API key lives in the data dir, readable by its owner only. Created on first start.
fn load_or_create_key(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_string()),
        Ok(_) => anyhow::bail!(
            "the API key file {} is empty: delete it to generate a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the API key {}", path.display()));
        }
    }
    let key = slipway_controller::generate_api_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the API key file {}", path.display()))?;
    writeln!(file, "{key}")?;
    tracing::info!("generated a new API key in {}", path.display());
    Ok(key)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
