//! One-off jobs handed over ready-made: the build pipeline's `build` jobs. They are placed like
//! `slipway run` jobs (the host with the fewest jobs), tracked as job rows with their process
//! type (so `ps` shows `build` and `kill` stops them), and never restarted.

use crate::state::Tracked;
use crate::{SchedError, Scheduler};
use slipway_host::{HostApi, HostJob, JobInfo};
use slipway_types::{App, Id, Job, JobState, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Scheduler {
    /// Starts `hj` as a one-off job of `app`. The job's id becomes `<host>-<uuid>` (Flynn's form)
    /// and its app fields are `app`'s; `release` is recorded in the row (a build before the
    /// first release has none: the nil id). Returns the row, `pending` until the host answers.
    pub async fn run_host_job(
        &self,
        app: &App,
        release: Option<Id>,
        mut hj: HostJob,
    ) -> Result<Job, SchedError> {
        let host = {
            let st = self.lock();
            st.hosts
                .values()
                .filter(|h| !h.view.shutting_down)
                .min_by_key(|h| (st.jobs_on(&h.view.id), h.view.id.clone()))
                .map(|h| h.view.id.clone())
        }
        .ok_or_else(|| SchedError::Unavailable("no host is available to run the job".into()))?;
        let release = release.unwrap_or(Id::nil());
        hj.id = format!("{host}-{}", uuid::Uuid::new_v4().simple());
        hj.app_id = app.id.to_string();
        hj.app_name = app.name.clone();
        hj.release_id = release.to_string();
        let now = Timestamp::now();
        let job = Job {
            id: hj.id.clone(),
            app_id: app.id,
            release_id: release,
            process_type: Some(hj.process_type.clone()).filter(|t| !t.is_empty()),
            host_id: Some(host.clone()),
            state: JobState::Pending,
            args: hj.config.args.clone(),
            exit_status: None,
            host_error: None,
            restarts: 0,
            meta: hj.metadata.clone(),
            created_at: now,
            updated_at: now,
        };
        {
            let mut st = self.lock();
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            self.put(&mut st, Tracked::new(job.clone(), None, seq, true));
        }
        self.spawn_start(host, hj);
        Ok(job)
    }

    /// The host of one-off job `job_id` of `app`, once the host has it (up to 60 s). A job that
    /// could not start gives `failed(its start error)`: callers choose how that reads.
    pub(crate) async fn host_of_started_job(
        &self,
        app_id: Id,
        job_id: &str,
        failed: fn(String) -> SchedError,
    ) -> Result<Arc<dyn HostApi>, SchedError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let api = loop {
            let (in_flight, state, error, api) = {
                let st = self.lock();
                let Some(t) = st.jobs.get(job_id).filter(|t| t.job.app_id == app_id) else {
                    return Err(SchedError::NotFound(format!("job {job_id} not found")));
                };
                let api = t
                    .job
                    .host_id
                    .as_ref()
                    .and_then(|h| st.hosts.get(h))
                    .map(|h| h.api.clone());
                (t.in_flight, t.job.state, t.job.host_error.clone(), api)
            };
            if state == JobState::Failed {
                return Err(failed(
                    error.unwrap_or_else(|| format!("job {job_id} could not start")),
                ));
            }
            if !in_flight || Instant::now() > deadline {
                break api;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        api.ok_or_else(|| {
            SchedError::Unavailable(format!("the host of job {job_id} is not available"))
        })
    }

    /// Waits until a job of `app` has exited; returns what its host says about it (exit code,
    /// the reason it failed). Waits for the host to have the job first. Returns as soon as the
    /// host reports the exit, without waiting for the host to release the job's resources
    /// (unmounts, network namespace: 0.1–0.3 s a build would otherwise wait for).
    pub async fn wait_job(&self, app_id: Id, job_id: &str) -> Result<JobInfo, SchedError> {
        // Never started: the host may not know it at all.
        let api = self
            .host_of_started_job(app_id, job_id, SchedError::Unavailable)
            .await?;
        let exited = async {
            // Quick checks first (callers usually wait once the output ended), then slower
            // ones, so a long job costs few requests to a remote host.
            let mut every = Duration::from_millis(10);
            loop {
                match api.get_job(job_id).await {
                    Ok(info) if info.status.is_terminal() => return Ok(info),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(every).await;
                every = (every * 2).min(Duration::from_secs(1));
            }
        };
        let res = tokio::select! {
            r = api.wait_job(job_id) => r,
            r = exited => r,
        };
        res.map_err(|e| SchedError::Unavailable(format!("waiting for job {job_id}: {e}")))
    }
}
