//! The controller: Slipway's REST API (Flynn's shapes) over a [`Store`].
//!
//! Invariants kept here: every response to bad input is a 4xx with a JSON `ApiError` body (never
//! a 500 or a panic: bodies are size-limited, parsed by us, and every id is checked), and every
//! endpoint but `GET /ping` needs the API key.

mod api;
mod auth;
mod error;
mod extract;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use slipway_store::Store;
use std::sync::Arc;

pub use auth::generate_api_key;
pub use error::ApiErr;

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
}

/// The whole API as an axum router, ready to serve.
pub fn router(store: Arc<dyn Store>, config: ControllerConfig) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    api::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, config))
        .with_graceful_shutdown(shutdown)
        .await
}
