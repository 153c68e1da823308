//! Build jobs from any controller. Only the scheduler leader starts and stops jobs (fencing,
//! docs/scheduler.md), so a controller whose scheduler does not lead hands its builds' jobs to
//! the leader's controller (`POST /internal/apps/{app}/build-jobs`, API key and cluster token) and follows
//! their output and exit on the hosts itself, as every scheduler follows every host. Without
//! this, a `git push` through such a controller was refused with the leader's URL.

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use futures_util::stream::BoxStream;
use slipway_builder::{JobExit, JobRunner, RunnerError};
use slipway_controller::ApiErr;
use slipway_host::{HostJob, LogLine};
use slipway_scheduler::{SchedError, Scheduler};
use slipway_types::{App, ErrorCode, Id, Job};
use std::sync::Arc;

/// The builder's [`JobRunner`]: this process's scheduler while it leads, else the leader's.
pub struct BuildJobs {
    pub scheduler: Scheduler,
    /// For `start` on the leader's controller.
    pub cluster_token: String,
    /// For `stop` (the public `kill`) on the leader's controller.
    pub api_key: String,
}

impl BuildJobs {
    /// The leader's controller URL when another process's scheduler leads.
    fn leader(&self) -> Option<String> {
        (!self.scheduler.is_acting())
            .then(|| self.scheduler.leader_url())
            .flatten()
    }

    fn client(url: &str, key: &str) -> Result<slipway_client::Client, RunnerError> {
        slipway_client::Client::new(url, key).map_err(|e| unavailable(url, e))
    }
}

fn unavailable(url: &str, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Scheduler(SchedError::Unavailable(format!(
        "the scheduler leader's controller ({url}) cannot start the build job: {e}"
    )))
}

#[async_trait]
impl JobRunner for BuildJobs {
    async fn start(&self, app: &App, job: HostJob) -> Result<String, RunnerError> {
        let Some(url) = self.leader() else {
            return JobRunner::start(&self.scheduler, app, job).await;
        };
        let client = Self::client(&url, &self.api_key)?;
        let started = client
            .start_build_job(&app.id.to_string(), &job, &self.cluster_token)
            .await
            .map_err(|e| unavailable(&url, e))?;
        Ok(started.id)
    }

    async fn output(
        &self,
        app: &App,
        id: &str,
    ) -> Result<BoxStream<'static, LogLine>, RunnerError> {
        JobRunner::output(&self.scheduler, app, id).await
    }

    async fn wait(&self, app: &App, id: &str) -> Result<JobExit, RunnerError> {
        JobRunner::wait(&self.scheduler, app, id).await
    }

    async fn stop(&self, app: &App, id: &str) -> Result<(), RunnerError> {
        let Some(url) = self.leader() else {
            return JobRunner::stop(&self.scheduler, app, id).await;
        };
        Self::client(&url, &self.api_key)?
            .kill_job(&app.id.to_string(), id)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&url, e))
    }
}

#[derive(Clone)]
struct Internal {
    scheduler: Scheduler,
    store: Arc<dyn slipway_store::Store>,
    cluster_token: Arc<str>,
}

/// `POST /internal/apps/{app}/build-jobs`: a build job from another controller, started here
/// if this scheduler leads. Only for holders of the API key *and* the cluster token: a build
/// job's description may mount host paths, which the API key alone must not reach.
pub fn router(
    scheduler: Scheduler,
    store: Arc<dyn slipway_store::Store>,
    cluster_token: &str,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/internal/apps/{app}/build-jobs",
            axum::routing::post(start),
        )
        .with_state(Internal {
            scheduler,
            store,
            cluster_token: Arc::from(cluster_token),
        })
}

async fn start(
    State(s): State<Internal>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Job>, ApiErr> {
    // Behind the controller's API key check; the cluster token comes in its own header.
    let presented = headers
        .get(slipway_client::CLUSTER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !slipway_types::secret_eq(presented.as_bytes(), s.cluster_token.as_bytes()) {
        return Err(ApiErr::new(
            ErrorCode::Unauthorized,
            "build jobs from other controllers need the cluster token (header Slipway-Cluster-Token)",
        ));
    }
    let app_id: Id = app
        .parse()
        .map_err(|_| ApiErr::new(ErrorCode::NotFound, format!("app {app:?} not found")))?;
    let job: HostJob = serde_json::from_slice(&body).map_err(|e| {
        ApiErr::new(
            ErrorCode::BadRequest,
            format!("the body is not a build job: {e}"),
        )
    })?;
    let app = s.store.get_app(app_id).await.map_err(ApiErr::from)?;
    let release = app.release;
    s.scheduler
        .run_host_job(&app, release, job)
        .await
        .map(axum::Json)
        .map_err(crate::controller::api_err)
}
