//! The controller: Slipway's REST API (Flynn's shapes) over a [`Store`].
//!
//! Invariants kept here: every response to bad input is a 4xx with a JSON `ApiError` body (never
//! a 500 or a panic: bodies are size-limited, parsed by us, and every id is checked), and every
//! endpoint but `GET /ping` and `GET /openapi.json` needs the API key.

#![forbid(unsafe_code)]

mod api;
mod auth;
pub mod cluster;
mod error;
mod extract;
pub mod metrics;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use slipway_store::Store;
use std::sync::Arc;

pub use api::openapi;
pub use auth::generate_api_key;
pub use cluster::{ATTACH_UPGRADE, AttachStream, Cluster};
pub use error::{ApiErr, json_rejections};

/// Request bodies larger than this get a 413: the API takes config, not uploads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub api_key: String,
    /// Apps get `<app>.<default_domain>` as their default HTTP route.
    pub default_domain: String,
    /// Base URL of the git receiver (`<git_url>/<app>.git`).
    pub git_url: String,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ControllerConfig>,
    /// The scheduler's job controls, when this process runs one.
    pub cluster: Option<Arc<dyn Cluster>>,
}

/// The whole API as an axum router, ready to serve.
pub fn router(store: Arc<dyn Store>, config: ControllerConfig) -> Router {
    router_with(store, config, None)
}

/// The API with job controls (`kill`, `run`) backed by `cluster`.
pub fn router_with(
    store: Arc<dyn Store>,
    config: ControllerConfig,
    cluster: Option<Arc<dyn Cluster>>,
) -> Router {
    router_with_extra(store, config, cluster, Router::new())
}

/// The API plus `extra` routes served on the same port behind the same API key (the blob store,
/// git receiver, registry and logs are mounted this way by `slipway server`). `extra` routes set
/// their own body limits: the API's 1 MiB limit applies to the API's routes only.
pub fn router_with_extra(
    store: Arc<dyn Store>,
    config: ControllerConfig,
    cluster: Option<Arc<dyn Cluster>>,
    extra: Router,
) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
        cluster,
    };
    let api = api::routes()
        .0
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(error::json_rejections))
        .with_state(state.clone());
    // The extra roles answer in their own shapes (git's plain text, which git shows as
    // `remote:` lines; the registry's JSON); those in the API's shape add `json_rejections`.
    api.merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::require_key,
        ))
        .layer(axum::middleware::from_fn(metrics::record))
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, store, config, None, shutdown).await
}

/// [`serve`] with job controls.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: ControllerConfig,
    cluster: Option<Arc<dyn Cluster>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router_with(store, config, cluster), shutdown).await
}

/// Bytes hyper may buffer for one connection, each way. Its default (~400 KB) let every event
/// subscriber that does not read hold that much of the server's memory (500 of them: ~200 MB);
/// 64 KiB is room for any request head we take and several events. Past it, hyper waits for the
/// socket instead of reading more of the response body.
pub const MAX_CONN_BUFFER: usize = 64 << 10;

/// Serves a router built by [`router_with_extra`] until `shutdown` completes, then finishes
/// in-flight requests. HTTP/1.1 with upgrades (attach), like `axum::serve`, but with hyper's
/// per-connection buffer bounded ([`MAX_CONN_BUFFER`]).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    // Each connection holds a receiver: a send asks them to finish, `closed` waits until they have.
    let (stop, stopping) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_CONN_BUFFER)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            )
            .with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!("connection ended: {e}");
            }
            drop(stopping);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(());
    stop.closed().await;
    Ok(())
}
