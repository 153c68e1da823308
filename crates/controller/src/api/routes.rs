//! HTTP and TCP routes.
//!
//! A TCP route opens a port on every router, so its port is checked here, where the user
//! still gets the answer: inside the allowed range (422 otherwise, naming the range), not
//! another route's (the store's 409 `Duplicate route`), and not held by another process on
//! the router's host (409); port 0 gets the lowest port that passes all three. Listed TCP
//! routes carry the router's word on their listener (`listening` / `failed: REASON`).

use super::apps::resolve;
use crate::AppState;
use crate::error::{ApiErr, ApiResult};
use crate::extract::{JsonBody, parse_id};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use slipway_types::{ErrorCode, NewRoute, Route, RouteType, RouteUpdate, TCP_PORT_RANGE};

fn route_type(kind: &str) -> Result<RouteType, ApiErr> {
    RouteType::parse(kind).ok_or_else(|| {
        ApiErr::new(
            ErrorCode::NotFound,
            format!("unknown route type {kind:?} (expected http or tcp)"),
        )
    })
}

/// Fills in each TCP route's listener state, when a router runs in this process.
fn with_state(s: &AppState, mut routes: Vec<Route>) -> Vec<Route> {
    if let Some(c) = &s.cluster {
        for r in &mut routes {
            if let Route::Tcp(t) = r {
                t.listener = c.tcp_listener_state(t.port);
            }
        }
    }
    routes
}

/// Checks (or, for 0, picks) a new TCP route's port; see the module's doc.
async fn check_tcp_port(s: &AppState, new: &mut NewRoute) -> Result<(), ApiErr> {
    let NewRoute::Tcp { port, .. } = new else {
        return Ok(());
    };
    let range = s.cluster.as_ref().map_or(TCP_PORT_RANGE, |c| c.tcp_ports());
    let (first, last) = (*range.start(), *range.end());
    if *port != 0 && !range.contains(port) {
        return Err(ApiErr::new(
            ErrorCode::ValidationError,
            format!(
                "port {port} is outside the TCP route range {first}-{last}: give a port in it, or none to get a free one (the range is `slipway server --tcp-ports`)"
            ),
        ));
    }
    let taken: std::collections::HashSet<u16> = s
        .store
        .list_routes(None)
        .await?
        .iter()
        .filter_map(|r| match r {
            Route::Tcp(t) => Some(t.port),
            Route::Http(_) => None,
        })
        .collect();
    let held = |p: u16| s.cluster.as_ref().and_then(|c| c.tcp_port_taken(p));
    if *port == 0 {
        *port = range
            .clone()
            .find(|p| !taken.contains(p) && held(*p).is_none())
            .ok_or_else(|| {
                ApiErr::new(
                    ErrorCode::Conflict,
                    format!("no free port left in the TCP route range {first}-{last}"),
                )
            })?;
    } else if !taken.contains(port)
        && let Some(why) = held(*port)
    {
        // A port another route has is the store's `Duplicate route`; our own router holds it.
        return Err(ApiErr::new(ErrorCode::Conflict, why));
    }
    Ok(())
}

#[utoipa::path(operation_id = "routes_list_all", get, path = "/routes", tag = "routes", responses((status = 200, body = Vec<Route>), crate::api::spec::ReadErrors))]
pub async fn list_all(State(s): State<AppState>) -> ApiResult<Json<Vec<Route>>> {
    let routes = s.store.list_routes(None).await?;
    Ok(Json(with_state(&s, routes)))
}

#[utoipa::path(operation_id = "routes_list", get, path = "/apps/{app}/routes", tag = "routes", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Route>), crate::api::spec::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Route>>> {
    let app = resolve(&s, &app).await?;
    let routes = s.store.list_routes(Some(app.id)).await?;
    Ok(Json(with_state(&s, routes)))
}

#[utoipa::path(operation_id = "routes_create", post, path = "/apps/{app}/routes", tag = "routes", params(crate::api::spec::AppPath), request_body = NewRoute, responses((status = 201, body = Route, links(("GetRoute" = (operation_id = "routes_get", parameters(("app" = "$request.path.app"), ("kind" = "$response.body#/type"), ("id" = "$response.body#/id")))), ("UpdateRoute" = (operation_id = "routes_update", parameters(("app" = "$request.path.app"), ("kind" = "$response.body#/type"), ("id" = "$response.body#/id")))), ("DeleteRoute" = (operation_id = "routes_delete", parameters(("app" = "$request.path.app"), ("kind" = "$response.body#/type"), ("id" = "$response.body#/id")))))), crate::api::spec::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(mut new): JsonBody<NewRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    new.normalize()?;
    let app = resolve(&s, &app).await?;
    check_tcp_port(&s, &mut new).await?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_route(app.id, &new).await?),
    ))
}

#[utoipa::path(operation_id = "routes_get", get, path = "/apps/{app}/routes/{kind}/{id}", tag = "routes", params(crate::api::spec::RoutePath), responses((status = 200, body = Route), crate::api::spec::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Path((app, kind, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Route>> {
    let app = resolve(&s, &app).await?;
    let route = s
        .store
        .get_route(app.id, route_type(&kind)?, parse_id("route", &id)?)
        .await?;
    Ok(Json(with_state(&s, vec![route]).remove(0)))
}

#[utoipa::path(operation_id = "routes_update", put, path = "/apps/{app}/routes/{kind}/{id}", tag = "routes", params(crate::api::spec::RoutePath), request_body = RouteUpdate, responses((status = 200, body = Route), crate::api::spec::WriteErrors))]
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

#[utoipa::path(operation_id = "routes_delete", delete, path = "/apps/{app}/routes/{kind}/{id}", tag = "routes", params(crate::api::spec::RoutePath), responses((status = 200, body = crate::api::spec::Empty), crate::api::spec::WriteErrors))]
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
