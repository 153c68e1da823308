//! One-off jobs: `slipway run` jobs and the build pipeline's `build` jobs (handed over
//! ready-made). Both are placed the same way (the host with the fewest jobs), tracked as job rows
//! (so `ps` shows them and `kill` stops them; a build's row has its process type `build`), and
//! never restarted.

use crate::state::Tracked;
use crate::{SchedError, Scheduler, hostjob};
use slipway_host::{HostApi, HostJob, JobInfo};
use slipway_types::{App, Id, Job, JobState, Release, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Scheduler {
    /// Starts a one-off job (`slipway run`) of `release` on the host with the fewest jobs.
    /// One-off jobs are never restarted.
    pub async fn run_job(
        &self,
        app: &App,
        release: &Release,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<Job, SchedError> {
        let host = self.one_off_host()?;
        let id = format!("{host}-{}", uuid::Uuid::new_v4().simple());
        let artifacts = self
            .release_artifacts(release)
            .await
            .map_err(SchedError::Unavailable)?;
        let hj = hostjob::host_job_with(
            &id,
            app,
            release,
            &artifacts,
            None,
            args,
            env,
            &self.inner.cfg.stack,
        )
        .map_err(|e| SchedError::Invalid(e.to_string()))?;
        let job = one_off_row(&id, app.id, release.id, &host, &hj);
        Ok(self.start_one_off(host, job, hj))
    }

    /// Starts `hj` as a one-off job of `app`. The job's id becomes `<host>-<uuid>` (Flynn's form)
    /// and its app fields are `app`'s; `release` is recorded in the row (a build before the
    /// first release has none: the nil id). Returns the row, `pending` until the host answers.
    pub async fn run_host_job(
        &self,
        app: &App,
        release: Option<Id>,
        mut hj: HostJob,
    ) -> Result<Job, SchedError> {
        let host = self.one_off_host()?;
        let release = release.unwrap_or(Id::nil());
        hj.id = format!("{host}-{}", uuid::Uuid::new_v4().simple());
        hj.app_id = app.id.to_string();
        hj.app_name = app.name.clone();
        hj.release_id = release.to_string();
        let job = Job {
            process_type: Some(hj.process_type.clone()).filter(|t| !t.is_empty()),
            meta: hj.metadata.clone(),
            ..one_off_row(&hj.id, app.id, release, &host, &hj)
        };
        Ok(self.start_one_off(host, job, hj))
    }

    /// Where a one-off job goes: the host with the fewest jobs (the lowest id of those), never
    /// one that is shutting down.
    fn one_off_host(&self) -> Result<String, SchedError> {
        self.ensure_leader()?;
        let st = self.lock();
        st.hosts
            .values()
            .filter(|h| !h.view.shutting_down)
            .min_by_key(|h| (st.jobs_on(&h.view.id), h.view.id.clone()))
            .map(|h| h.view.id.clone())
            .ok_or_else(|| SchedError::Unavailable("no host is available to run the job".into()))
    }

    /// Tracks a one-off's new row (never restarted) and starts `hj` on `host`. Returns the row.
    fn start_one_off(&self, host: String, job: Job, mut hj: HostJob) -> Job {
        // So a scheduler that adopts it from its host tracks it as a one-off too.
        hj.metadata
            .insert(crate::ONE_OFF_META.into(), "true".into());
        {
            let mut st = self.lock();
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            self.put(&mut st, Tracked::new(job.clone(), None, seq, true));
        }
        self.spawn_start(host, hj);
        job
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
        let unknown_until = Instant::now() + Duration::from_secs(10);
        let api = loop {
            // A scheduler that does not lead learns of the leader's jobs from the hosts: a job
            // started a moment ago may not have reached it yet, nor be running.
            let follower = !self.is_acting();
            let seen = {
                let st = self.lock();
                st.jobs
                    .get(job_id)
                    .filter(|t| t.job.app_id == app_id)
                    .map(|t| {
                        let api = t
                            .job
                            .host_id
                            .as_ref()
                            .and_then(|h| st.hosts.get(h))
                            .map(|h| h.api.clone());
                        (t.in_flight, t.job.state, t.job.host_error.clone(), api)
                    })
            };
            let Some((in_flight, state, error, api)) = seen else {
                if follower && Instant::now() < unknown_until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                return Err(SchedError::NotFound(format!("job {job_id} not found")));
            };
            if state == JobState::Failed {
                return Err(failed(
                    error.unwrap_or_else(|| format!("job {job_id} could not start")),
                ));
            }
            let starting = follower && matches!(state, JobState::Pending | JobState::Starting);
            if !(in_flight || starting) || Instant::now() > deadline {
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

/// A one-off job's new row: `pending` on `host`, with `hj`'s command, no process type and no
/// meta (a caller that has them sets them).
fn one_off_row(id: &str, app_id: Id, release_id: Id, host: &str, hj: &HostJob) -> Job {
    let now = Timestamp::now();
    Job {
        id: id.to_string(),
        app_id,
        release_id,
        process_type: None,
        host_id: Some(host.to_string()),
        state: JobState::Pending,
        args: hj.config.args.clone(),
        exit_status: None,
        host_error: None,
        restarts: 0,
        meta: Default::default(),
        created_at: now,
        updated_at: now,
    }
}
