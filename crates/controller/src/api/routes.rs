//! HTTP and TCP routes.

use super::apps::resolve;
use crate::AppState;
use crate::error::{ApiErr, ApiResult};
use crate::extract::{JsonBody, parse_id};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use slipway_types::{ErrorCode, NewRoute, Route, RouteType, RouteUpdate};

fn route_type(kind: &str) -> Result<RouteType, ApiErr> {
    RouteType::parse(kind).ok_or_else(|| {
        ApiErr::new(
            ErrorCode::NotFound,
            format!("unknown route type {kind:?} (expected http or tcp)"),
        )
    })
}

pub async fn list_all(State(s): State<AppState>) -> ApiResult<Json<Vec<Route>>> {
    Ok(Json(s.store.list_routes(None).await?))
}

pub async fn list(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Route>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_routes(Some(app.id)).await?))
}

pub async fn create(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(mut new): JsonBody<NewRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    new.normalize()?;
    let app = resolve(&s, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_route(app.id, &new).await?),
    ))
}

pub async fn get(
    State(s): State<AppState>,
    Path((app, kind, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Route>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(
        s.store
            .get_route(app.id, route_type(&kind)?, parse_id("route", &id)?)
            .await?,
    ))
}

pub async fn update(
    State(s): State<AppState>,
    Path((app, kind, id)): Path<(String, String, String)>,
    JsonBody(update): JsonBody<RouteUpdate>,
) -> ApiResult<Json<Route>> {
    update.validate()?;
    let app = resolve(&s, &app).await?;
    Ok(Json(
        s.store
            .update_route(app.id, route_type(&kind)?, parse_id("route", &id)?, &update)
            .await?,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path((app, kind, id)): Path<(String, String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let app = resolve(&s, &app).await?;
    s.store
        .delete_route(app.id, route_type(&kind)?, parse_id("route", &id)?)
        .await?;
    Ok(super::empty())
}
