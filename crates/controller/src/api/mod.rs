//! The route table (docs/api.md) and the handlers, one module per resource.

mod apps;
mod builds;
mod cluster;
mod events;
mod jobs;
mod releases;
mod routes;
pub(crate) mod spec;

use crate::AppState;
use crate::error::ApiErr;
use axum::Router;
use slipway_types::ErrorCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use apps::resolve as resolve_app;

/// The API's routes and their description, from one list: each route is added with the
/// `#[utoipa::path]` of its handlers (`spec.rs`).
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use crate::cluster as c;
    let (router, spec) = OpenApiRouter::with_openapi(spec::ApiDoc::openapi())
        .routes(routes!(ping))
        .routes(routes!(openapi_json))
        .routes(routes!(apps::cluster_info))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::hosts))
        .routes(routes!(apps::create, apps::list))
        .routes(routes!(apps::get, apps::update, apps::delete))
        .routes(routes!(releases::create_artifact))
        .routes(routes!(releases::get_artifact, releases::delete_artifact))
        .routes(routes!(builds::list))
        .routes(routes!(builds::get))
        .routes(routes!(builds::log))
        .routes(routes!(releases::create, releases::list))
        .routes(routes!(releases::delete))
        .routes(routes!(releases::get))
        .routes(routes!(releases::current, releases::set_current))
        .routes(routes!(releases::list_formations))
        .routes(routes!(releases::put_formation, releases::get_formation))
        .routes(routes!(jobs::list, c::run))
        .routes(routes!(jobs::get, c::kill))
        .routes(routes!(c::output))
        .routes(routes!(c::attach))
        .routes(routes!(jobs::deploy))
        .routes(routes!(jobs::list_deployments))
        .routes(routes!(jobs::get_deployment))
        .routes(routes!(routes::list_all))
        .routes(routes!(routes::create, routes::list))
        .routes(routes!(routes::get, routes::update, routes::delete))
        .routes(routes!(events::list_or_stream))
        .routes(routes!(events::get))
        .split_for_parts();
    let router = router
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
        });
    (router, spec)
}

/// The API's description (OpenAPI 3.1), as `GET /openapi.json` serves it.
pub fn openapi() -> &'static serde_json::Value {
    static SPEC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc = serde_json::to_value(routes().1).expect("the description is JSON");
        spec::unsigned_bounds(&mut doc);
        spec::link_field_names(&mut doc);
        doc
    })
}

#[utoipa::path(operation_id = "ping", get, path = "/ping", tag = "meta", security(()),
    responses((status = 200, description = "The controller answers", body = spec::Status)))]
async fn ping() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(operation_id = "openapi_json", get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This description (OpenAPI 3.1)", content_type = "application/json")))]
async fn openapi_json() -> impl axum::response::IntoResponse {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = JSON.get_or_init(|| openapi().to_string());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.as_str(),
    )
}

/// `{}`: the body of a successful delete.
fn empty() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({}))
}
