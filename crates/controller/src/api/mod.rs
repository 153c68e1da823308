//! The route table (docs/api.md) and the handlers, one module per resource.

mod apps;
mod builds;
mod cluster;
mod events;
mod jobs;
mod releases;
mod routes;

use crate::AppState;
use crate::error::ApiErr;
use axum::Router;
use axum::routing::{get, post, put};
use slipway_types::ErrorCode;

pub(crate) use apps::resolve as resolve_app;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/ping",
            get(async || axum::Json(serde_json::json!({"status": "ok"}))),
        )
        .route("/cluster", get(apps::cluster_info))
        .route("/cluster/status", get(cluster::status))
        .route("/hosts", get(cluster::hosts))
        .route("/apps", post(apps::create).get(apps::list))
        .route(
            "/apps/{app}",
            get(apps::get).post(apps::update).delete(apps::delete),
        )
        .route("/artifacts", post(releases::create_artifact))
        .route(
            "/artifacts/{id}",
            get(releases::get_artifact).delete(releases::delete_artifact),
        )
        .route("/apps/{app}/builds", get(builds::list))
        .route("/apps/{app}/builds/{id}", get(builds::get))
        .route("/apps/{app}/builds/{id}/log", get(builds::log))
        .route(
            "/apps/{app}/releases",
            post(releases::create).get(releases::list),
        )
        .route(
            "/apps/{app}/releases/{id}",
            axum::routing::delete(releases::delete),
        )
        .route("/releases/{id}", get(releases::get))
        .route(
            "/apps/{app}/release",
            get(releases::current).put(releases::set_current),
        )
        .route("/apps/{app}/formations", get(releases::list_formations))
        .route(
            "/apps/{app}/formations/{release}",
            put(releases::put_formation).get(releases::get_formation),
        )
        .route(
            "/apps/{app}/jobs",
            get(jobs::list).post(crate::cluster::run),
        )
        .route(
            "/apps/{app}/jobs/{job}",
            get(jobs::get).delete(crate::cluster::kill),
        )
        .route("/apps/{app}/jobs/{job}/output", get(crate::cluster::output))
        .route(
            "/apps/{app}/jobs/{job}/attach",
            axum::routing::post(crate::cluster::attach),
        )
        .route("/apps/{app}/deploy", post(jobs::deploy))
        .route("/apps/{app}/deployments", get(jobs::list_deployments))
        .route("/deployments/{id}", get(jobs::get_deployment))
        .route("/routes", get(routes::list_all))
        .route("/apps/{app}/routes", post(routes::create).get(routes::list))
        .route(
            "/apps/{app}/routes/{kind}/{id}",
            get(routes::get).put(routes::update).delete(routes::delete),
        )
        .route("/events", get(events::list_or_stream))
        .route("/events/{id}", get(events::get))
        .fallback(async |uri: axum::http::Uri| {
            ApiErr::new(
                ErrorCode::NotFound,
                format!("no such endpoint: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(async |method: axum::http::Method, uri: axum::http::Uri| {
            ApiErr::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
}

/// `{}`: the body of a successful delete.
fn empty() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({}))
}
