//! `slipway server`'s roles (docs/roles.md): parse flags → [`Config`] → [`run`], which starts
//! the roles `--roles` asks for (all by default) — one module per role, each with a `start`
//! whose doc says what it needs from the others. The binary (`crates/cli`) holds only the flag
//! parsing and what needs `unsafe` (the process's uid and file limit), and passes them in.

#![forbid(unsafe_code)]

pub mod args;
pub mod backup;
pub mod blobstore;
pub mod build_jobs;
pub mod builder;
pub mod controller;
pub mod discovery;
pub mod drain;
pub mod host;
pub mod host_blobs;
pub mod host_fence;
pub mod housekeeping;
pub mod identity;
pub mod join;
pub mod listen;
pub mod logs;
pub mod metrics;
pub mod metrics_host;
pub mod ops;
pub mod overlay;
pub mod registry;
pub mod roles;
pub mod router;
pub mod scheduler;
pub mod supervise;

pub use args::{RoutingArgs, ServerArgs};
pub use roles::{Role, Roles};

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File descriptors kept for everything but the router's and the API's connections: the host
/// agent (containers' log pipes, attach sockets, cgroup and netns files), the database, logs,
/// blobs, git and build subprocesses.
const FD_RESERVE: usize = 4096;

/// What the process runs, resolved from the flags before anything starts.
pub struct Config {
    pub args: ServerArgs,
    /// `--roles` less what `--no-host` and `--no-router` leave out; checked.
    pub roles: Roles,
    pub data_dir: PathBuf,
    /// The API key given (`SLIPWAY_API_KEY` or `--api-key-file`). Without it a process with the
    /// controller takes the store's ([`identity::settle`]), any other the data dir's.
    pub api_key: Option<String>,
    /// The cluster token given (`SLIPWAY_CLUSTER_TOKEN` or `--cluster-token-file`); a process
    /// with the controller sets it from the store at start ([`identity::settle`]).
    pub cluster_token: Option<String>,
    /// The domain apps' default routes are under, normalized.
    pub domain: String,
    /// The soft limit on open files (the connection caps are fitted to it).
    pub nofile: u64,
    /// Whether the process runs as root (the router's default ports are 80 and 443 then).
    pub root: bool,
    /// Called once the API listens, with its URL and key: the CLI registers the server in its
    /// cluster list there (not with `--no-register`, nor without a controller).
    pub on_listening: Option<OnListening>,
    /// The etcd client once connected (`--etcd`), for what needs its own registry on it
    /// (elections: [`scheduler::campaign`]).
    pub etcd: Option<slipway_etcd::Client>,
}

/// [`Config::on_listening`]: given the API's URL and key.
pub type OnListening = Box<dyn FnOnce(&str, &str) -> Result<()> + Send>;

impl Config {
    /// `default_data_dir`: where the state goes without `--data-dir` (asked only then);
    /// `nofile`: the open files limit; `root`: whether the process is root. Refuses role
    /// splits that cannot work yet and a bad `--domain`, before anything starts.
    pub fn new(
        args: ServerArgs,
        default_data_dir: impl FnOnce() -> Result<PathBuf>,
        nofile: u64,
        root: bool,
    ) -> Result<Config> {
        let mut roles = args.roles.clone();
        if args.no_host {
            roles.remove(Role::Host);
        }
        if args.routing.no_router {
            roles.remove(Role::Router);
        }
        let api_key = api_key(
            std::env::var("SLIPWAY_API_KEY").ok(),
            args.api_key_file.as_deref(),
        )?;
        let cluster_token = identity::given_secret(
            "SLIPWAY_CLUSTER_TOKEN",
            std::env::var("SLIPWAY_CLUSTER_TOKEN").ok(),
            "--cluster-token-file",
            args.cluster_token_file.as_deref(),
            "cluster token",
        )?;
        roles::check(
            &roles,
            &roles::Remote {
                controller_url: args.controller_url.as_deref(),
                discovery_url: args.discovery_url.as_deref(),
                api_key: api_key.as_deref(),
                host_listen: args.host_listen,
                etcd: args.etcd.as_deref(),
            },
        )?;
        let domain = slipway_types::normalize_domain(&args.domain)
            .map_err(|e| anyhow::anyhow!("--domain: {}", e.message))?;
        let data_dir = match args.data_dir.clone() {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        Ok(Config {
            args,
            roles,
            data_dir,
            api_key,
            cluster_token,
            domain,
            nofile,
            root,
            on_listening: None,
            etcd: None,
        })
    }

    fn has(&self, role: Role) -> bool {
        self.roles.has(role)
    }
}

/// The key from `SLIPWAY_API_KEY` (`env`), else from `--api-key-file`, trimmed; `None` when
/// neither is given. An empty or unreadable key is an error naming where it came from.
fn api_key(env: Option<String>, file: Option<&Path>) -> Result<Option<String>> {
    identity::given_secret(
        "SLIPWAY_API_KEY",
        env,
        "--api-key-file",
        file,
        "API key (the contents of the controller's `<data dir>/api-key`)",
    )
}

/// Starts the roles of `config` and runs until SIGTERM or Ctrl-C.
pub async fn run(mut config: Config) -> Result<()> {
    init_tracing_as(config.args.log_format == "json");
    listen::set_drain_timeout(config.args.drain_timeout);
    tracing::info!(roles = %config.roles, "starting");
    // Checked before anything starts: a wrong --etcd fails here, naming the URLs.
    let etcd = discovery::connect_etcd(&config).await?;
    config.etcd = etcd.clone();
    let data_dir = config.data_dir.clone();
    if let Some(file) = config.args.restore.clone() {
        backup::restore(&config, &file).await?;
        if config.args.restore_only {
            return Ok(());
        }
    }
    create_private_dir(&data_dir)?;
    let (store, api_key) = match config.has(Role::Controller) {
        true => {
            let store = open_store(&config).await?;
            let id = identity::settle(
                &store,
                &data_dir,
                config.api_key.as_deref(),
                config.cluster_token.as_deref(),
            )
            .await?;
            config.cluster_token = Some(id.cluster_token);
            let store: Arc<dyn slipway_store::Store> = Arc::new(store);
            (Some(store), id.api_key)
        }
        false => {
            let key = match &config.api_key {
                Some(key) => key.clone(),
                None => load_or_create_key(&data_dir.join(identity::API_KEY_FILE))?,
            };
            if config.cluster_token.is_none() {
                config.cluster_token =
                    identity::local_secret(&data_dir, identity::CLUSTER_TOKEN_FILE)?;
            }
            (None, key)
        }
    };
    let router_cap = connection_limits(&config);
    let metrics = metrics::start(&config).await;

    let scheduler = match store.clone() {
        Some(store) => Some(scheduler::start(&config, store).await),
        None => None,
    };
    if let Some(scheduler) = &scheduler {
        metrics::scheduler(&metrics, scheduler);
        metrics.add_sync(slipway_controller::metrics::render);
    }
    let discovery = match config.has(Role::Discovery) {
        true => Some(discovery::start(&config, &api_key, etcd.as_ref()).await?),
        false => None,
    };
    // The discovery hosts register in and elections run through: here or `--discovery-url`.
    let registry = host::registry(&config, discovery.as_ref(), etcd.as_ref(), &api_key);
    if let (Some(scheduler), Some(_)) = (&scheduler, &registry) {
        // It campaigns once the controller listens (`scheduler::run`); until it leads, what it
        // learns from the hosts is not written.
        scheduler.await_election();
    }
    let router = match config.has(Role::Router) {
        true => Some(Arc::new(
            start_router(
                &config,
                &store,
                &discovery,
                etcd.as_ref().and(registry.as_ref()),
                &api_key,
                router_cap,
            )
            .await?,
        )),
        false => None,
    };
    if let (Some(scheduler), Some(discovery)) = (&scheduler, &discovery) {
        // A job is up once every router registered in discovery (and this process's) has it;
        // with no router anywhere, once discovery has it.
        let credential = config
            .cluster_token
            .clone()
            .unwrap_or_else(|| api_key.clone());
        let gate = router::gate::RoutersGate::new(discovery, router.as_deref(), credential);
        scheduler.set_traffic_gate(gate);
    }
    let blobs = match config.has(Role::Blobstore) {
        true => Some(blobstore::start(&config).await?),
        false => None,
    };
    let logs = match (&store, config.has(Role::Logs)) {
        (Some(store), true) => Some(logs::start(&config, store.clone())?),
        _ => None,
    };
    if let Some(logs) = &logs {
        metrics::logs(&metrics, logs);
    }
    if config.has(Role::Builder) {
        metrics.add_sync(slipway_builder::metrics::render);
    }
    if config.has(Role::Registry) {
        metrics.add_sync(slipway_registry::metrics::render);
    }
    let local_host = match config.has(Role::Host) {
        true => {
            let published_tcp = router.as_ref().map(|r| r.published_tcp.clone());
            let deps = host::HostDeps {
                scheduler: scheduler.as_ref(),
                discovery: discovery.as_ref(),
                registry: registry.clone(),
                published_tcp: published_tcp.unwrap_or_default(),
                // Without a blob store here, the controllers' (`host_blobs`).
                blobs: Some(blobs.clone().unwrap_or_else(|| {
                    Arc::new(host_blobs::ControllersBlobStore::new(
                        registry.clone(),
                        config.args.controller_url.clone(),
                        &api_key,
                    ))
                })),
            };
            let local = host::start(&config, deps).await?;
            metrics::host(&metrics, &config, local.api.clone());
            if let Some(discovery) = &discovery {
                discovery.follow_host(local.api.clone());
            }
            if let Some(logs) = &logs {
                slipway_logs::follow_host(logs.clone(), local.api.clone());
            }
            Some(local)
        }
        false => {
            // DNS starts with the host agent (on its bridge's gateway); without one, here.
            if let Some(discovery) = &discovery {
                discovery.start_dns(None).await;
            }
            None
        }
    };
    if let Some(registry) = &registry {
        host::follow_members(
            registry.clone(),
            local_host.as_ref(),
            scheduler.as_ref(),
            discovery.as_ref(),
            logs.as_ref(),
            config.cluster_token.as_deref().unwrap_or_default(),
        );
    }
    let (Some(store), Some(scheduler)) = (store, scheduler) else {
        // No controller here: the roles run until the process is told to stop.
        shutdown_signal().await;
        if let Some(router) = &router {
            router.drain().await;
        }
        tracing::info!("stopped");
        return Ok(());
    };
    let (listener, local_url) = controller::bind(&config).await?;
    // Several schedulers (and housekeepers) share one discovery: one leads at a time.
    scheduler::run(&config, &store, &scheduler, registry.clone(), &local_url).await?;
    if config.has(Role::Housekeeping) {
        let deps = housekeeping::HousekeepingDeps {
            store: store.clone(),
            scheduler: &scheduler,
            blobs: blobs.clone(),
            registry: registry.clone(),
        };
        housekeeping::start(&config, deps).await?;
    }
    let advertised_url = controller::advertised_url(&config, listener.local_addr()?);
    if let Some(register) = config.on_listening.take() {
        register(&local_url, &api_key)?;
    }
    let logs_at_stop = logs.clone();
    let extra = satellites(
        &config, &store, &scheduler, logs, blobs, &api_key, &local_url,
    )?;
    // The registry the roles here use (in-process, etcd, or discovery's HTTP API), else etcd.
    let registry = registry.or_else(|| etcd.as_ref().map(discovery::etcd_registry));
    let deps = controller::ControllerDeps {
        store,
        scheduler,
        router,
        api_key,
        local_url,
        advertised_url,
        extra,
        registry,
        etcd,
    };
    let served = controller::serve(&config, listener, deps).await;
    // The lines the aggregator still buffers, and its resume points, go to disk before the
    // process ends (the next server resumes from them; a crash loses at most a flush period).
    if let Some(logs) = &logs_at_stop
        && let Err(e) = logs.flush()
    {
        tracing::warn!("logs: the last flush at stop failed: {e}");
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs to stderr, filtered by `SLIPWAY_LOG` (default `info`), coloured only when stderr is a
/// terminal: a log file (`/var/log/slipway.log`, journald) gets no escape sequences.
pub fn init_tracing() {
    init_tracing_as(false)
}

/// [`init_tracing`], or with `json` one JSON object per line (`--log-format json`).
pub fn init_tracing_as(json: bool) {
    use std::io::IsTerminal;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
            // hickory's server logs every DNS query at info: two lines per container lookup.
            .unwrap_or_else(|_| "info,hickory_server=warn".into())
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = match json {
        true => fmt.json().with_ansi(false).try_init(),
        false => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

async fn open_store(config: &Config) -> Result<slipway_store::SqlStore> {
    let database_url =
        config.args.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", config.data_dir.join("slipway.db").display())
        });
    let store = slipway_store::open(&database_url)
        .await
        .context("cannot open the controller database")?;
    tracing::info!(
        backend = slipway_store::Store::backend(&store),
        "store ready"
    );
    Ok(store)
}

/// The router's connection cap (`--router-max-connections` or what fits the file limit), with
/// a warning when the caps together need more descriptors than the limit.
fn connection_limits(config: &Config) -> usize {
    let (args, nofile) = (&config.args, config.nofile);
    let router_cap = args
        .routing
        .router_max_connections
        .unwrap_or_else(|| router_connection_cap(nofile, args.api_max_connections));
    let needed =
        FD_RESERVE + args.api_max_connections + args::DISCOVERY_MAX_CONNECTIONS + 2 * router_cap;
    tracing::info!(
        "connection limits: router {router_cap}, API {}, discovery {}; open files limit {nofile}",
        args.api_max_connections,
        args::DISCOVERY_MAX_CONNECTIONS
    );
    if (needed as u64) > nofile {
        tracing::warn!(
            "the connection limits need about {needed} file descriptors, more than the limit of {nofile}: raise `ulimit -n` (LimitNOFILE=) or lower --router-max-connections"
        );
    }
    router_cap
}

/// The router, its routes and backends from this process when it runs the controller and
/// discovery, from their HTTP APIs (`--controller-url`, `--discovery-url`) otherwise.
async fn start_router(
    config: &Config,
    store: &Option<Arc<dyn slipway_store::Store>>,
    discovery: &Option<discovery::Discovery>,
    etcd: Option<&Arc<dyn slipway_discovery::Registry>>,
    api_key: &str,
    cap: usize,
) -> Result<router::RouterRole> {
    let remote = |url: &Option<String>, flag: &str| {
        url.clone()
            .with_context(|| format!("the router needs {flag}"))
    };
    let routes = match store {
        Some(store) => router::Routes::Store(store.clone()),
        None => {
            let url = remote(&config.args.controller_url, "--controller-url")?;
            let client = slipway_client::Client::new(&url, api_key)
                .with_context(|| format!("--controller-url {url}"))?;
            router::Routes::Controller(client)
        }
    };
    let backends: Arc<dyn slipway_discovery::Registry> = match (discovery, etcd) {
        (Some(d), _) => d.registry.clone(),
        // No HTTP hop: the instances are read in etcd.
        (None, Some(etcd)) => etcd.clone(),
        (None, None) => {
            let url = remote(&config.args.discovery_url, "--discovery-url")?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            // Discovery takes the cluster token (or the API key, for routers given only it).
            let credential = config.cluster_token.as_deref().unwrap_or(api_key);
            let registry = slipway_discovery::http::HttpRegistry::new(&url, credential);
            check_discovery(&registry, &url).await?;
            Arc::new(registry)
        }
    };
    router::start(config, routes, backends, cap, api_key).await
}

/// Fails the start when discovery at `url` refuses this process's credential, rather than
/// following it with no backends and a warning per retry. An unreachable discovery is not
/// an error here (it may start later; the watch retries).
async fn check_discovery(
    registry: &slipway_discovery::http::HttpRegistry,
    url: &str,
) -> Result<()> {
    match registry.refused().await {
        Some(why) => bail!("--discovery-url {url}: {why}"),
        None => Ok(()),
    }
}

/// The roles served on the controller's port, behind its API key: one `.merge` per role.
fn satellites(
    config: &Config,
    store: &Arc<dyn slipway_store::Store>,
    scheduler: &slipway_scheduler::Scheduler,
    logs: Option<slipway_logs::Aggregator>,
    blobs: Option<Arc<dyn slipway_blobstore::BlobStore>>,
    api_key: &str,
    local_url: &str,
) -> Result<axum::Router> {
    let mut api_errors = axum::Router::new();
    if let Some(logs) = logs {
        api_errors = api_errors.merge(slipway_logs::http::router(logs, store.clone()));
    }
    if let Some(blobs) = &blobs {
        api_errors = api_errors.merge(blobstore::http(blobs.clone(), store.clone()));
        api_errors = api_errors.merge(backup::router(config, blobs.clone()));
    }
    // Their errors are the API's `{"code","message"}`, axum's rejections too.
    let mut extra = axum::Router::new().merge(api_errors.layer(axum::middleware::from_fn(
        slipway_controller::json_rejections,
    )));
    // `slipway host drain` and `slipway cluster token`, in the API's error shape.
    extra = extra.merge(
        drain::router(scheduler.clone())
            .merge(join::router(config))
            .layer(axum::middleware::from_fn(
                slipway_controller::json_rejections,
            )),
    );
    // Build jobs handed over by controllers whose scheduler does not lead (`build_jobs`).
    if let Some(token) = config.cluster_token.as_deref().filter(|t| !t.is_empty()) {
        extra = extra.merge(build_jobs::router(scheduler.clone(), store.clone(), token));
    }
    if let Some(blobs) = blobs {
        if config.has(Role::Builder) {
            let jobs = build_jobs::BuildJobs {
                scheduler: scheduler.clone(),
                cluster_token: config.cluster_token.clone().unwrap_or_default(),
                api_key: api_key.to_string(),
            };
            let deps = builder::BuilderDeps {
                store: store.clone(),
                scheduler,
                jobs: Arc::new(jobs),
                blobs: blobs.clone(),
                api_key,
                local_url,
            };
            extra = extra.merge(builder::start(config, deps)?);
        }
        if config.has(Role::Registry) {
            extra = extra.merge(registry::start(config, store.clone(), blobs)?);
        }
    }
    Ok(extra)
}

/// The router's connection cap: what the file descriptor limit leaves after the reserve, the
/// API's, discovery's and the admin endpoint's caps, at two descriptors per connection (the
/// client's and the backend's).
pub fn router_connection_cap(nofile: u64, api: usize) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let others =
        FD_RESERVE + api + args::DISCOVERY_MAX_CONNECTIONS + slipway_router::ADMIN_MAX_CONNECTIONS;
    (nofile.saturating_sub(others) / 2).max(256)
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

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::api_key;

    #[test]
    fn the_api_key_comes_from_the_env_or_a_file_never_empty() {
        let dir = std::env::temp_dir().join(format!("slipway-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api-key");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(api_key(None, None).unwrap(), None);
        assert_eq!(
            api_key(None, Some(&file)).unwrap().as_deref(),
            Some("from-file")
        );
        // The environment wins over the file.
        assert_eq!(
            api_key(Some("from-env".into()), Some(&file))
                .unwrap()
                .as_deref(),
            Some("from-env")
        );
        std::fs::write(&file, "  \n").unwrap();
        let e = api_key(None, Some(&file)).unwrap_err().to_string();
        assert!(e.contains("--api-key-file") && e.contains("empty"), "{e}");
        let e = api_key(Some("two words".into()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLIPWAY_API_KEY"), "{e}");
        let e = api_key(None, Some(&dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read --api-key-file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
