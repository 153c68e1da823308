//! Apps and cluster info.

use crate::AppState;
use crate::error::{ApiErr, ApiResult};
use crate::extract::JsonBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use slipway_store::StoreError;
use slipway_types::{App, AppDeletion, AppUpdate, ClusterInfo, NewApp, random_app_name};

#[utoipa::path(operation_id = "apps_cluster_info", get, path = "/cluster", tag = "meta", responses((status = 200, body = ClusterInfo), crate::api::spec::ReadErrors))]
pub async fn cluster_info(State(s): State<AppState>) -> Json<ClusterInfo> {
    Json(ClusterInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        default_domain: s.config.default_domain.clone(),
        git_url: s.config.git_url.clone(),
    })
}

#[utoipa::path(operation_id = "apps_create", post, path = "/apps", tag = "apps", request_body = NewApp, responses((status = 201, body = App, links(("GetApp" = (operation_id = "apps_get", parameters(("app" = "$response.body#/id")))), ("CreateRelease" = (operation_id = "releases_create", parameters(("app" = "$response.body#/id")))), ("CreateRoute" = (operation_id = "routes_create", parameters(("app" = "$response.body#/id")))), ("ListFormations" = (operation_id = "releases_list_formations", parameters(("app" = "$response.body#/id")))), ("RunJob" = (operation_id = "jobs_run", parameters(("app" = "$response.body#/id")))), ("DeleteApp" = (operation_id = "apps_delete", parameters(("app" = "$response.body#/id")))))), crate::api::spec::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    JsonBody(new): JsonBody<NewApp>,
) -> ApiResult<(StatusCode, Json<App>)> {
    new.validate()?;
    let domain = Some(s.config.default_domain.as_str());
    if let Some(name) = &new.name {
        return Ok((
            StatusCode::CREATED,
            Json(s.store.create_app(name, &new, domain).await?),
        ));
    }
    // A random name may be taken (by an app or a route); a few tries find a free one.
    let mut last = None;
    for _ in 0..8 {
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        match s
            .store
            .create_app(&random_app_name(seed), &new, domain)
            .await
        {
            Ok(app) => return Ok((StatusCode::CREATED, Json(app))),
            Err(StoreError::Conflict(m)) => last = Some(m),
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(last.unwrap_or_default()).into())
}

#[utoipa::path(operation_id = "apps_list", get, path = "/apps", tag = "apps", responses((status = 200, body = Vec<App>), crate::api::spec::ReadErrors))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<App>>> {
    Ok(Json(s.store.list_apps().await?))
}

#[utoipa::path(operation_id = "apps_get", get, path = "/apps/{app}", tag = "apps", params(crate::api::spec::AppPath), responses((status = 200, body = App), crate::api::spec::ReadErrors))]
pub async fn get(State(s): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<App>> {
    Ok(Json(resolve(&s, &app).await?))
}

#[utoipa::path(operation_id = "apps_update", post, path = "/apps/{app}", tag = "apps", params(crate::api::spec::AppPath), request_body = AppUpdate, responses((status = 200, body = App), crate::api::spec::WriteErrors))]
pub async fn update(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(update): JsonBody<AppUpdate>,
) -> ApiResult<Json<App>> {
    update.validate()?;
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.update_app(app.id, &update).await?))
}

#[utoipa::path(operation_id = "apps_delete", delete, path = "/apps/{app}", tag = "apps", params(crate::api::spec::AppPath), responses((status = 200, body = AppDeletion), crate::api::spec::WriteErrors))]
pub async fn delete(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AppDeletion>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.delete_app(app.id).await?))
}

/// Resolves `:app` (id or name) to the app.
pub(crate) async fn resolve(s: &AppState, app: &str) -> Result<App, ApiErr> {
    Ok(slipway_store::app_by_id_or_name(s.store.as_ref(), app).await?)
}
