//! One Prometheus endpoint per process (`--metrics-listen`, default `127.0.0.1:1114`):
//! `GET /metrics` renders the families of every role this process runs, each role adding its
//! collector as it starts (docs/metrics.md). The router keeps its own on its admin port, which
//! a router process has whatever else it runs.
//!
//! No credential, like the router's admin endpoint (and so that any Prometheus can scrape
//! it): it is on loopback unless told otherwise, and says how much, not what (no app data, only
//! app and process type names and job ids). Bound elsewhere, it says at start that whoever
//! reaches the address reads those names, so that it is firewalled (docs/metrics.md).
//! Connections are capped and their request head timed out like the API's (`listen.rs`).

use crate::Config;
use slipway_metrics::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// Connections the metrics endpoint keeps open at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 16;

/// `--metrics-listen`: an address, or `none`.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "none" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s}: not IP:PORT (or `none`)"))
}

/// Binds `--metrics-listen` and serves the registry there. A taken port loses the metrics,
/// not the server (a warning says so).
pub async fn start(config: &Config) -> Registry {
    let registry = Registry::default();
    let Some(addr) = config.args.metrics_listen.0 else {
        return registry;
    };
    // A router-only process (`slipway supervise`'s second child) has its metrics on the
    // router's admin port and nothing for this one: it leaves the address to the server.
    use crate::roles::Role;
    let roles = [
        Role::Controller,
        Role::Host,
        Role::Logs,
        Role::Builder,
        Role::Registry,
    ];
    if !roles.iter().any(|r| config.has(*r)) {
        return registry;
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "metrics: cannot listen on {addr}: {e}; give another --metrics-listen (or `none`)"
            );
            return registry;
        }
    };
    match listener.local_addr() {
        Ok(bound) => tracing::info!("metrics on http://{bound}/metrics"),
        Err(e) => tracing::warn!("metrics: {e}"),
    }
    if !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(
            "metrics: {addr} is not a loopback address and the endpoint takes no credential: \
             whoever reaches it reads the names of this host's apps and process types and its \
             job ids; let only your Prometheus reach it (a firewall), or keep it on 127.0.0.1"
        );
    }
    let r = registry.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(async move || {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                r.render().await,
            )
        }),
    );
    let limits = crate::listen::Limits {
        header_timeout: config
            .args
            .routing
            .header_timeout
            .unwrap_or(crate::args::CONTROL_HEADER_TIMEOUT),
        max_connections: MAX_CONNECTIONS,
    };
    tokio::spawn(crate::listen::serve(
        listener,
        app,
        limits,
        "the metrics endpoint",
        crate::shutdown_signal(),
    ));
    registry
}

/// The scheduler's families: its counters, and its jobs by state and its hosts when scraped.
pub fn scheduler(registry: &Registry, scheduler: &slipway_scheduler::Scheduler) {
    let s = scheduler.clone();
    registry.add_sync(move |out| {
        slipway_scheduler::metrics::render(out);
        let mut states: std::collections::BTreeMap<String, f64> = Default::default();
        for j in s.jobs() {
            *states.entry(j.state.as_str().to_string()).or_default() += 1.0;
        }
        slipway_metrics::family(
            out,
            "slipway_scheduler_jobs",
            "gauge",
            "Jobs the scheduler tracks, by state.",
            states
                .iter()
                .map(|(k, v)| (vec![("state", k.as_str())], *v)),
        );
        let hosts = s.hosts();
        let unreachable = hosts.iter().filter(|h| h.unreachable).count();
        slipway_metrics::family(
            out,
            "slipway_scheduler_hosts",
            "gauge",
            "Hosts the scheduler follows, by whether they answer their health checks.",
            [
                (vec![("state", "up")], (hosts.len() - unreachable) as f64),
                (vec![("state", "unreachable")], unreachable as f64),
            ],
        );
    });
}

/// The host agent's families (`metrics_host.rs`).
pub fn host(registry: &Registry, config: &Config, api: Arc<dyn slipway_host::HostApi>) {
    let parent = config.args.runtime.cgroup_parent.clone();
    registry.add(crate::metrics_host::collector(api, parent));
}

/// The log aggregator's families.
pub fn logs(registry: &Registry, logs: &slipway_logs::Aggregator) {
    let agg = logs.clone();
    registry.add_sync(move |out| slipway_logs::metrics::render(&agg, out));
}
