//! Jobs and deployments.

use super::apps::resolve;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{JsonBody, parse_id};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use slipway_types::{Deployment, Job, NewDeployment};

// No `PUT /apps/:app/jobs/:job`: the scheduler is the only writer of job rows (it writes them
// to the store itself), so a job row written through the API was a phantom nothing ran or
// would ever stop. A PUT there answers 405.

#[utoipa::path(operation_id = "jobs_list", get, path = "/apps/{app}/jobs", tag = "jobs", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Job>), crate::api::spec::ReadErrors))]
pub async fn list(State(s): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<Vec<Job>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_jobs(app.id).await?))
}

#[utoipa::path(operation_id = "jobs_get", get, path = "/apps/{app}/jobs/{job}", tag = "jobs", params(crate::api::spec::AppJobPath), responses((status = 200, body = Job), crate::api::spec::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Path((app, job)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.get_job(app.id, &job).await?))
}

#[utoipa::path(operation_id = "jobs_deploy", post, path = "/apps/{app}/deploy", tag = "deployments", params(crate::api::spec::AppPath), request_body = NewDeployment, responses((status = 201, body = Deployment, links(("GetDeployment" = (operation_id = "jobs_get_deployment", parameters(("id" = "$response.body#/id")))))), crate::api::spec::WriteErrors))]
pub async fn deploy(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<NewDeployment>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let app = resolve(&s, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(s.store.create_deployment(app.id, body.release_id).await?),
    ))
}

#[utoipa::path(operation_id = "jobs_list_deployments", get, path = "/apps/{app}/deployments", tag = "deployments", params(crate::api::spec::AppPath), responses((status = 200, body = Vec<Deployment>), crate::api::spec::ReadErrors))]
pub async fn list_deployments(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Deployment>>> {
    let app = resolve(&s, &app).await?;
    Ok(Json(s.store.list_deployments(app.id).await?))
}

#[utoipa::path(operation_id = "jobs_get_deployment", get, path = "/deployments/{id}", tag = "deployments", params(crate::api::spec::IdPath), responses((status = 200, body = Deployment), crate::api::spec::ReadErrors))]
pub async fn get_deployment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(
        s.store.get_deployment(parse_id("deployment", &id)?).await?,
    ))
}
