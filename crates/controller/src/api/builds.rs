//! Builds of an app's pushes and their transcripts (`slipway build list`, `slipway build log`).
//! The push flow records them through the store; the API only reads.

use super::apps::resolve;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::parse_id;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use slipway_types::Build;

#[utoipa::path(operation_id = "builds_list", get, path = "/apps/{app}/builds", tag = "builds", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Build>), crate::api::spec::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Build>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_builds(app.id).await?))
}

#[utoipa::path(operation_id = "builds_get", get, path = "/apps/{app}/builds/{id}", tag = "builds", params(crate::api::spec::AppIdPath), responses((status = 200, body = Build), crate::api::spec::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Json<Build>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(
        s.store.get_build(app.id, parse_id("build", &id)?).await?,
    ))
}

/// The transcript as plain text (UTF-8), one line per `remote:` line the pusher saw.
#[utoipa::path(operation_id = "builds_log", get, path = "/apps/{app}/builds/{id}/log", tag = "builds", params(crate::api::spec::AppIdPath), responses((status = 200, body = String, content_type = "text/plain", description = "The transcript, as the pusher saw it"), crate::api::spec::ReadErrors))]
pub async fn log(
    State(s): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let app = resolve(&s, &app).await?;
    let log = s
        .store
        .get_build_log(app.id, parse_id("build", &id)?)
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log))
}
