//! The two ways a build job runs: through the scheduler (`slipway server`: the job is placed
//! like a one-off job, shows in `ps` as type `build` and can be killed), or straight on one
//! host agent (tools and tests that have no controller).

use crate::pipeline::{JobExit, JobRunner, RunnerError};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use slipway_host::{HostApi, HostJob, LogLine};
use slipway_scheduler::Scheduler;
use slipway_types::App;
use std::sync::Arc;

#[async_trait]
impl JobRunner for Scheduler {
    async fn start(&self, app: &App, job: HostJob) -> Result<String, RunnerError> {
        self.run_host_job(app, app.release, job)
            .await
            .map(|j| j.id)
            .map_err(RunnerError::from)
    }

    async fn output(
        &self,
        app: &App,
        id: &str,
    ) -> Result<BoxStream<'static, LogLine>, RunnerError> {
        self.job_output(app.id, id).await.map_err(RunnerError::from)
    }

    async fn wait(&self, app: &App, id: &str) -> Result<JobExit, RunnerError> {
        match self.wait_job(app.id, id).await {
            Ok(info) => Ok(JobExit {
                exit: info.exit,
                error: info.error,
                outputs: info.outputs,
            }),
            Err(slipway_scheduler::SchedError::Unavailable(msg)) => Ok(JobExit {
                exit: None,
                error: Some(msg),
                outputs: Default::default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn stop(&self, app: &App, id: &str) -> Result<(), RunnerError> {
        self.stop_job(app.id, id)
            .await
            .map(|_| ())
            .map_err(RunnerError::from)
    }
}

/// Runs build jobs straight on one host agent.
pub struct HostRunner(pub Arc<dyn HostApi>);

#[async_trait]
impl JobRunner for HostRunner {
    async fn start(&self, _app: &App, job: HostJob) -> Result<String, RunnerError> {
        let info = self.0.add_job(job).await.map_err(RunnerError::from)?;
        Ok(info.job.id)
    }

    async fn output(
        &self,
        _app: &App,
        id: &str,
    ) -> Result<BoxStream<'static, LogLine>, RunnerError> {
        self.0.logs(id, true).await.map_err(RunnerError::from)
    }

    async fn wait(&self, _app: &App, id: &str) -> Result<JobExit, RunnerError> {
        let info = self.0.wait_job(id).await.map_err(RunnerError::from)?;
        Ok(JobExit {
            exit: info.exit,
            error: info.error,
            outputs: info.outputs,
        })
    }

    async fn stop(&self, _app: &App, id: &str) -> Result<(), RunnerError> {
        self.0
            .stop_job(id)
            .await
            .map(|_| ())
            .map_err(RunnerError::from)
    }
}
