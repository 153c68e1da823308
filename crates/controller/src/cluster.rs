//! The controller's handle on Layer 0: stopping jobs (`slipway kill`) and starting one-off jobs
//! (`slipway run`) need the scheduler, which the controller does not depend on. `slipway server`
//! passes an implementation in; a controller without one answers 503 for these two endpoints.
//! The operator's views of Layer 0 (`GET /hosts`, `GET /cluster/status`, in `api/cluster.rs`)
//! come through it too, for the same reason.

use crate::AppState;
use crate::api::resolve_app;
use crate::error::{ApiErr, ApiResult};
use crate::extract::JsonBody;
use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures_util::stream::BoxStream;
use slipway_types::{
    App, ClusterStatus, ErrorCode, HostInfo, Id, Job, NewJob, OutputLine, Release,
};

/// Message of a `run` before the app has any release.
pub const NO_RELEASE: &str = "App release has no image, push a release first";

#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    async fn stop_job(&self, app_id: Id, job_id: &str) -> Result<Job, ApiErr>;
    async fn run_job(&self, app: &App, release: &Release, job: &NewJob) -> Result<Job, ApiErr>;
    /// The job's output until it exits.
    async fn job_output(
        &self,
        app_id: Id,
        job_id: &str,
    ) -> Result<BoxStream<'static, OutputLine>, ApiErr>;
    /// Connects to a job started with `attach`: a byte stream of attach frames (stdin, signals
    /// and resizes in; output and the exit status out), passed through unchanged.
    async fn attach_job(&self, _app_id: Id, job_id: &str) -> Result<AttachStream, ApiErr> {
        Err(ApiErr::new(
            ErrorCode::Unavailable,
            format!("this controller cannot attach to jobs (job {job_id})"),
        ))
    }
    /// The hosts the scheduler follows, and those it lost (`GET /hosts`).
    async fn hosts(&self) -> Result<Vec<HostInfo>, ApiErr> {
        Err(ApiErr::new(
            ErrorCode::Unavailable,
            "this controller cannot list hosts: it runs without a scheduler",
        ))
    }
    /// Layer 0's part of `GET /cluster/status`: coordination, etcd members, role leaders,
    /// controllers, routers and the host count. `store` is filled in by the API.
    async fn status(&self) -> Result<ClusterStatus, ApiErr> {
        Ok(ClusterStatus::default())
    }
    /// The ports TCP routes may use (`slipway server --tcp-ports`); others are refused (422).
    fn tcp_ports(&self) -> std::ops::RangeInclusive<u16> {
        slipway_types::TCP_PORT_RANGE
    }
    /// Why the router could not listen on `port` now (another process holds it), if so: a
    /// new route on it is refused (409).
    fn tcp_port_taken(&self, _port: u16) -> Option<String> {
        None
    }
    /// The router's listener for a TCP route's port: `listening` or `failed: REASON`.
    fn tcp_listener_state(&self, _port: u16) -> Option<String> {
        None
    }
}

/// The attach wire (the job's attach socket, through its host), defined once for every hop.
pub use slipway_client::attach::{AttachStream, Duplex, UPGRADE as ATTACH_UPGRADE};

/// `POST /apps/:app/jobs/:job/attach` with `Connection: Upgrade`, `Upgrade: slipway-attach`:
/// 101, then the connection carries the job's attach frames both ways (docs/api.md).
#[utoipa::path(operation_id = "jobs_attach", post, path = "/apps/{app}/jobs/{job}/attach", tag = "jobs", params(crate::api::spec::AppJobPath), responses((status = 101, description = "Switching to the `slipway-attach` protocol (needs `Connection: Upgrade`, `Upgrade: slipway-attach`)"), crate::api::spec::WriteErrors))]
pub(crate) async fn attach(
    State(s): State<AppState>,
    Path((app, job)): Path<(String, String)>,
    mut req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    if !slipway_client::attach::wants_upgrade(req.headers()) {
        return Err(ApiErr::new(
            ErrorCode::BadRequest,
            format!("attach needs `Connection: Upgrade` and `Upgrade: {ATTACH_UPGRADE}`"),
        ));
    }
    let app = resolve_app(&s, &app).await?;
    let stream = cluster(&s)?.attach_job(app.id, &job).await?;
    slipway_client::attach::spawn_splice(hyper::upgrade::on(&mut req), stream);
    Ok(axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, ATTACH_UPGRADE)
        .body(axum::body::Body::empty())
        .expect("static response parts"))
}

/// `GET /apps/:app/jobs/:job/output`: the job's output as NDJSON ([`OutputLine`] per line),
/// until the job exits (what an attached `slipway run` prints).
#[utoipa::path(operation_id = "jobs_output", get, path = "/apps/{app}/jobs/{job}/output", tag = "jobs", params(crate::api::spec::AppJobPath), responses((status = 200, body = slipway_types::OutputLine, content_type = "application/x-ndjson", description = "The job's output, one JSON object per line, until it exits"), crate::api::spec::ReadErrors))]
pub(crate) async fn output(
    State(s): State<AppState>,
    Path((app, job)): Path<(String, String)>,
) -> ApiResult<axum::response::Response> {
    use futures_util::StreamExt;
    let app = resolve_app(&s, &app).await?;
    let lines = cluster(&s)?.job_output(app.id, &job).await?;
    let body = lines.map(|l| {
        let mut b = serde_json::to_vec(&l).unwrap_or_default();
        b.push(b'\n');
        Ok::<_, std::convert::Infallible>(b)
    });
    Ok(axum::response::Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(body))
        .expect("static response parts"))
}

pub(crate) fn cluster(s: &AppState) -> ApiResult<&dyn Cluster> {
    s.cluster.as_deref().ok_or_else(|| {
        ApiErr::new(
            ErrorCode::Unavailable,
            "this controller runs without a scheduler: jobs cannot be started or stopped",
        )
    })
}

#[utoipa::path(operation_id = "jobs_kill", delete, path = "/apps/{app}/jobs/{job}", tag = "jobs", params(crate::api::spec::AppJobPath), responses((status = 200, body = Job), crate::api::spec::WriteErrors))]
pub(crate) async fn kill(
    State(s): State<AppState>,
    Path((app, job)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    let app = resolve_app(&s, &app).await?;
    Ok(Json(cluster(&s)?.stop_job(app.id, &job).await?))
}

#[utoipa::path(operation_id = "jobs_run", post, path = "/apps/{app}/jobs", tag = "jobs", params(crate::api::spec::AppPath), request_body = NewJob, responses((status = 201, body = Job), crate::api::spec::WriteErrors))]
pub(crate) async fn run(
    State(s): State<AppState>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<NewJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let app = resolve_app(&s, &app).await?;
    slipway_types::validate_args("args", &body.args)?;
    slipway_types::validate_env("env", &body.env)?;
    if body.args.is_empty() {
        return Err(ApiErr::new(
            ErrorCode::ValidationError,
            "a command is needed: run -- CMD…",
        ));
    }
    let Some(release) = body.release.or(app.release) else {
        return Err(ApiErr::new(ErrorCode::ValidationError, NO_RELEASE));
    };
    let release = s.store.get_release(release).await?;
    if release.app_id != app.id {
        return Err(ApiErr::new(
            ErrorCode::NotFound,
            format!("release {} not found in app {}", release.id, app.name),
        ));
    }
    let job = cluster(&s)?.run_job(&app, &release, &body).await?;
    Ok((StatusCode::CREATED, Json(job)))
}
