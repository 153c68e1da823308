//! Attached one-off jobs (`slipway run` without `-d`): started with their stdin kept open (or a
//! pty), then attached through the job's host (see `slipway_host::attach` for the frames).

use crate::{SchedError, Scheduler, hostjob};
use slipway_host::attach::{AttachConfig, AttachStream};
use slipway_types::{App, Id, Job, NewJob, Release};

impl Scheduler {
    /// Starts a one-off job as `POST /apps/:app/jobs` asks: attachable when `job.attach`, with
    /// a pty when `job.tty`, with `job.meta` as its metadata. Never restarted.
    pub async fn run_one_off(
        &self,
        app: &App,
        release: &Release,
        job: &NewJob,
    ) -> Result<Job, SchedError> {
        // The release's slug or image layers: `slipway run` sees the app's code.
        let artifacts = self
            .release_artifacts(release)
            .await
            .map_err(SchedError::Unavailable)?;
        let mut hj = hostjob::host_job_with(
            "",
            app,
            release,
            &artifacts,
            None,
            &job.args,
            &job.env,
            &self.inner.cfg.stack,
        )
        .map_err(|e| SchedError::Invalid(e.to_string()))?;
        hj.metadata.extend(job.meta.clone());
        if job.attach {
            let size = job.tty.unwrap_or_default();
            hj.config.attach = Some(AttachConfig {
                tty: job.tty.is_some(),
                cols: size.cols,
                rows: size.rows,
            });
        }
        self.run_host_job(app, Some(release.id), hj).await
    }

    /// Connects to an attached job of `app` on its host, once the host has it. A job that could
    /// not start answers with its start error (e.g. `exec: "foo": executable file not found`).
    pub async fn attach(&self, app_id: Id, job_id: &str) -> Result<AttachStream, SchedError> {
        let api = self
            .host_of_started_job(app_id, job_id, SchedError::Invalid)
            .await?;
        api.attach(job_id).await.map_err(|e| match e {
            // The job was not started attached: the caller's mistake, not an outage.
            slipway_host::HostError::BadRequest(m) => SchedError::BadRequest(m),
            e => SchedError::Unavailable(format!("cannot attach to job {job_id}: {e}")),
        })
    }
}
