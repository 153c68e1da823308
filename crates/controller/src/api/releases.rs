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

pub async fn get_artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Artifact>> {
    Ok(Json(
        s.store.get_artifact(parse_id("artifact", &id)?).await?,
    ))
}

/// 409 while a release names it.
pub async fn delete_artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    s.store.delete_artifact(parse_id("artifact", &id)?).await?;
    Ok(super::empty())
}

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

pub async fn list(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Release>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_releases(app.id).await?))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Release>> {
    Ok(Json(s.store.get_release(parse_id("release", &id)?).await?))
}

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

pub async fn set_current(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<SetRelease>,
) -> ApiResult<Json<App>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.set_app_release(app.id, body.id).await?))
}

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

pub async fn list_formations(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Formation>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_formations(app.id).await?))
}
