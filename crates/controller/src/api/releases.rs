//! Artifacts, releases, the current release, formations.

use super::apps::resolve;
use crate::AppState;
use crate::error::{ApiErr, ApiResult};
use crate::extract::{JsonBody, parse_id};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use slipway_types::{
    App, Artifact, ErrorCode, Formation, FormationUpdate, NewArtifact, NewRelease, Release,
    SetRelease,
};

#[utoipa::path(operation_id = "releases_create_artifact", post, path = "/artifacts", tag = "artifacts", request_body = NewArtifact, responses((status = 201, body = Artifact, links(("GetArtifact" = (operation_id = "releases_get_artifact", parameters(("id" = "$response.body#/id")))), ("DeleteArtifact" = (operation_id = "releases_delete_artifact", parameters(("id" = "$response.body#/id")))))), crate::api::spec::WriteErrors))]
pub async fn create_artifact(
    State(s): State<AppState>,
    JsonBody(new): JsonBody<NewArtifact>,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    new.validate()?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_artifact(&new).await?),
    ))
}

#[utoipa::path(operation_id = "releases_get_artifact", get, path = "/artifacts/{id}", tag = "artifacts", params(crate::api::spec::IdPath), responses((status = 200, body = Artifact), crate::api::spec::ReadErrors))]
pub async fn get_artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Artifact>> {
    Ok(Json(
        s.store.get_artifact(parse_id("artifact", &id)?).await?,
    ))
}

/// 409 while a release names it.
#[utoipa::path(operation_id = "releases_delete_artifact", delete, path = "/artifacts/{id}", tag = "artifacts", params(crate::api::spec::IdPath), responses((status = 200, body = crate::api::spec::Empty), crate::api::spec::WriteErrors))]
pub async fn delete_artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    s.store.delete_artifact(parse_id("artifact", &id)?).await?;
    Ok(super::empty())
}

#[utoipa::path(operation_id = "releases_create", post, path = "/apps/{app}/releases", tag = "releases", params(crate::api::spec::AppPath), request_body = NewRelease, responses((status = 201, body = Release, links(("PutFormation" = (operation_id = "releases_put_formation", parameters(("app" = "$request.path.app"), ("release" = "$response.body#/id")))), ("GetFormation" = (operation_id = "releases_get_formation", parameters(("app" = "$request.path.app"), ("release" = "$response.body#/id")))), ("GetRelease" = (operation_id = "releases_get", parameters(("id" = "$response.body#/id")))), ("DeleteRelease" = (operation_id = "releases_delete", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/id")))))), crate::api::spec::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(new): JsonBody<NewRelease>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    new.validate()?;
    let app = resolve(&s, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_release(app.id, &new).await?),
    ))
}

#[utoipa::path(operation_id = "releases_list", get, path = "/apps/{app}/releases", tag = "releases", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Release>), crate::api::spec::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Release>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_releases(app.id).await?))
}

#[utoipa::path(operation_id = "releases_get", get, path = "/releases/{id}", tag = "releases", params(crate::api::spec::IdPath), responses((status = 200, body = Release), crate::api::spec::ReadErrors))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Release>> {
    Ok(Json(s.store.get_release(parse_id("release", &id)?).await?))
}

#[utoipa::path(operation_id = "releases_delete", delete, path = "/apps/{app}/releases/{id}", tag = "releases", params(crate::api::spec::AppIdPath), responses((status = 200, body = crate::api::spec::Empty), crate::api::spec::WriteErrors))]
pub async fn delete(
    State(s): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let app = resolve(&s, &app).await?;
    let id = parse_id("release", &id)?;
    // Its slugs that no other release names go too, as an app's do when the app is deleted:
    // else nothing would ever delete them and the GC would keep their blobs. Images stay (the
    // registry's tags may name them). One transaction: a kill cannot leave the slugs behind.
    s.store.delete_release_with_slugs(app.id, id).await?;
    Ok(super::empty())
}

#[utoipa::path(operation_id = "releases_current", get, path = "/apps/{app}/release", tag = "releases", params(crate::api::spec::AppPath), responses((status = 200, body = Release), crate::api::spec::ReadErrors))]
pub async fn current(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Release>> {
    let app = resolve(&s, &app).await?;
    let id = app.release.ok_or_else(|| {
        ApiErr::new(
            ErrorCode::NotFound,
            format!(
                "app {} has no release yet: push code or set env to create one",
                app.name
            ),
        )
    })?;
    Ok(Json(s.store.get_release(id).await?))
}

#[utoipa::path(operation_id = "releases_set_current", put, path = "/apps/{app}/release", tag = "releases", params(crate::api::spec::AppPath), request_body = SetRelease, responses((status = 200, body = App), crate::api::spec::WriteErrors))]
pub async fn set_current(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<SetRelease>,
) -> ApiResult<Json<App>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.set_app_release(app.id, body.id).await?))
}

#[utoipa::path(operation_id = "releases_put_formation", put, path = "/apps/{app}/formations/{release}", tag = "formations", params(crate::api::spec::AppReleasePath), request_body = FormationUpdate, responses((status = 200, body = Formation), crate::api::spec::WriteErrors))]
pub async fn put_formation(
    State(s): State<AppState>,
    Path((app, release)): Path<(String, String)>,
    JsonBody(update): JsonBody<FormationUpdate>,
) -> ApiResult<Json<Formation>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(
        s.store
            .put_formation(app.id, parse_id("release", &release)?, &update)
            .await?,
    ))
}

#[utoipa::path(operation_id = "releases_get_formation", get, path = "/apps/{app}/formations/{release}", tag = "formations", params(crate::api::spec::AppReleasePath), responses((status = 200, body = Formation), crate::api::spec::ReadErrors))]
pub async fn get_formation(
    State(s): State<AppState>,
    Path((app, release)): Path<(String, String)>,
) -> ApiResult<Json<Formation>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(
        s.store
            .get_formation(app.id, parse_id("release", &release)?)
            .await?,
    ))
}

#[utoipa::path(operation_id = "releases_list_formations", get, path = "/apps/{app}/formations", tag = "formations", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Formation>), crate::api::spec::ReadErrors))]
pub async fn list_formations(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Formation>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_formations(app.id).await?))
}
