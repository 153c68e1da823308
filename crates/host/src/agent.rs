//! The host agent: keeps the job table (persisted in `<data>/jobs/<id>.json`), drives a
//! [`Runtime`], stops jobs with a grace period, runs health checks and publishes job events.
//! It implements [`HostApi`] in-process.

use crate::api::{HostApi, HostError, HostResult};
use crate::health;
use crate::runtime::{Recovered, Runtime};
use crate::types::*;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};

#[derive(Clone)]
pub struct AgentConfig {
    /// Host id, reported in status.
    pub id: String,
    pub tags: BTreeMap<String, String>,
    /// Where job records live (`<data_dir>/jobs`).
    pub data_dir: PathBuf,
    /// Finished jobs (records and logs) kept on disk; the oldest beyond this are forgotten, so
    /// the disk does not fill up with the history of a busy host.
    pub max_finished_jobs: usize,
    /// Unpacked layers no live job uses are removed once no job started with them for this
    /// long (checked hourly), so the disk does not fill up with old releases' layers.
    pub layer_idle: Duration,
    /// Where jobs' `layer_refs` are fetched from (the server's blob store, in-process or over
    /// HTTP). `None`: jobs with layer refs fail with a clear error.
    pub blobs: Option<Arc<dyn slipway_blobstore::BlobStore>>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("id", &self.id)
            .field("tags", &self.tags)
            .field("data_dir", &self.data_dir)
            .field("max_finished_jobs", &self.max_finished_jobs)
            .field("layer_idle", &self.layer_idle)
            .field("blobs", &self.blobs.is_some())
            .finish()
    }
}

impl AgentConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        // A stable id across restarts: stored in the data dir on first start.
        let id_file = data_dir.join("host-id");
        let id = std::fs::read_to_string(&id_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let id = format!("host-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let _ = std::fs::create_dir_all(&data_dir);
                let _ = std::fs::write(&id_file, &id);
                id
            });
        AgentConfig {
            id,
            tags: BTreeMap::new(),
            data_dir,
            max_finished_jobs: 1000,
            layer_idle: Duration::from_secs(24 * 3600),
            blobs: None,
        }
    }
}

pub(crate) struct Inner {
    cfg: AgentConfig,
    runtime: Arc<dyn Runtime>,
    /// Unpacked blob-store layers (`<data_dir>/layers`), shared by the jobs that name them.
    layers: crate::layers::LayerCache,
    /// Jobs' blob-store files (`<data_dir>/job-files`): a build's source, cache and output.
    files: crate::job_files::JobFileStore,
    jobs: Mutex<HashMap<String, JobInfo>>,
    /// Per job, per checked port: passing or not.
    checks: Mutex<HashMap<String, Vec<bool>>>,
    /// Jobs whose runtime resources are not released yet.
    uncleaned: Mutex<HashSet<String>>,
    events: broadcast::Sender<JobEvent>,
    changed: Notify,
    /// The newest scheduler epoch seen (leader fencing, docs/scheduler.md), kept in
    /// `<data_dir>/epoch` so a restarted agent does not forget it. Fenced calls hold it shared
    /// while they act; [`HostApi::fence`] takes it exclusively, so once a new epoch is
    /// announced no call of an older one is still running.
    epoch: tokio::sync::RwLock<u64>,
}

/// The agent. Cheap to clone; all clones share one job table.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

/// How often unused layers are looked for.
const LAYER_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

fn now() -> Option<OffsetDateTime> {
    Some(OffsetDateTime::now_utc())
}

impl Agent {
    /// Starts an agent on `runtime`: loads persisted jobs and re-adopts the ones still running
    /// (their exit will be reported as usual), records the ones that ended meanwhile.
    pub async fn start(cfg: AgentConfig, runtime: Arc<dyn Runtime>) -> anyhow::Result<Agent> {
        let jobs_dir = cfg.data_dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir)?;
        let mut jobs = HashMap::new();
        for e in std::fs::read_dir(&jobs_dir)?.flatten() {
            if let Ok(info) = serde_json::from_slice::<JobInfo>(&std::fs::read(e.path())?) {
                jobs.insert(info.job.id.clone(), info);
            }
        }
        let (events, _) = broadcast::channel(4096);
        let epoch = std::fs::read_to_string(cfg.data_dir.join("epoch"))
            .ok()
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(0);
        let layers =
            crate::layers::LayerCache::open(cfg.data_dir.join("layers"), cfg.blobs.clone())?;
        let files = crate::job_files::JobFileStore::open(
            cfg.data_dir.join("job-files"),
            cfg.blobs.clone(),
        )?;
        let agent = Agent {
            inner: Arc::new(Inner {
                cfg,
                runtime: runtime.clone(),
                layers,
                files,
                jobs: Mutex::new(jobs),
                checks: Mutex::new(HashMap::new()),
                uncleaned: Mutex::new(HashSet::new()),
                events,
                changed: Notify::new(),
                epoch: tokio::sync::RwLock::new(epoch),
            }),
        };
        let found: HashMap<String, Recovered> = runtime.recover().await?.into_iter().collect();
        let pending: Vec<JobInfo> = agent
            .inner
            .jobs
            .lock()
            .expect("jobs")
            .values()
            .filter(|j| !j.status.is_terminal())
            .cloned()
            .collect();
        for info in pending {
            let id = info.job.id.clone();
            agent
                .inner
                .uncleaned
                .lock()
                .expect("uncleaned")
                .insert(id.clone());
            match found.get(&id) {
                Some(Recovered::Running { .. }) => {
                    tracing::info!(job = %id, "re-adopted running job");
                    agent.spawn_waiter(id.clone());
                    agent.spawn_checks(&info);
                    if info.stop_requested {
                        // The previous agent's SIGKILL timer died with it: start a new one.
                        let grace = info
                            .job
                            .config
                            .stop_grace_ms
                            .unwrap_or(DEFAULT_STOP_GRACE_MS);
                        agent
                            .stop_after_grace(id.clone(), Duration::from_millis(grace))
                            .await;
                    }
                }
                Some(Recovered::Exited(st)) => agent.finished(&id, Ok(st.clone())).await,
                Some(Recovered::StartFailed(e)) => agent.finished(&id, Err(e.clone())).await,
                Some(Recovered::Lost) | None => {
                    agent
                        .finished(
                            &id,
                            Err("the job was lost while the host agent was down (its shim \
                                 is gone without an exit status)"
                                .into()),
                        )
                        .await
                }
            }
        }
        // Containers without a job record (agent died mid-start), or of finished jobs whose
        // cleanup was interrupted: release them now.
        for (id, _) in found {
            let finished = agent
                .inner
                .jobs
                .lock()
                .expect("jobs")
                .get(&id)
                .is_none_or(|j| j.status.is_terminal());
            if finished {
                let _ = runtime.cleanup(&id).await;
            }
        }
        // Files of jobs that no longer run (an agent killed between a job's end and its
        // cleanup, or during a start) go too; the runtime's own leftovers went in `recover`.
        let running: HashSet<String> = agent
            .inner
            .jobs
            .lock()
            .expect("jobs")
            .values()
            .filter(|j| !j.status.is_terminal())
            .map(|j| j.job.id.clone())
            .collect();
        let swept = agent.inner.files.sweep(&running).await;
        if swept > 0 {
            tracing::info!("start-up sweep removed the files of {swept} jobs that no longer run");
        }
        let weak = Arc::downgrade(&agent.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(LAYER_PRUNE_INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let agent = Agent { inner };
                if let Err(e) = agent.prune_layers(agent.inner.cfg.layer_idle).await {
                    tracing::warn!("pruning unused layers failed: {e:#}");
                }
            }
        });
        Ok(agent)
    }

    /// Removes unpacked layers that no unfinished (or not yet cleaned up) job names and that no
    /// job started with for `idle`; returns their digests.
    pub async fn prune_layers(&self, idle: Duration) -> anyhow::Result<Vec<String>> {
        // A finished job's overlay stays mounted until its cleanup: its layers are still in use.
        let uncleaned = self.inner.uncleaned.lock().expect("uncleaned").clone();
        let in_use: HashSet<String> = self
            .inner
            .jobs
            .lock()
            .expect("jobs")
            .values()
            .filter(|j| !j.status.is_terminal() || uncleaned.contains(&j.job.id))
            .flat_map(|j| j.job.config.layer_refs.iter().map(|l| l.digest.clone()))
            .collect();
        self.inner.layers.prune(&in_use, idle).await
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    /// Layer cache hits and misses since the agent started.
    pub fn layer_cache_stats(&self) -> crate::layers::LayerCacheStats {
        self.inner.layers.stats()
    }

    /// The job as the runtime gets it: each `layer_refs` entry fetched and unpacked (once per
    /// host) and put below the job's own `layers`, bottom first.
    async fn resolve_layers(&self, job: &HostJob) -> anyhow::Result<HostJob> {
        if job.config.layer_refs.is_empty() && job.config.files.is_empty() {
            return Ok(job.clone());
        }
        let mut layers = Vec::new();
        for r in &job.config.layer_refs {
            layers.push(self.inner.layers.resolve(&r.digest).await?);
        }
        let mut job = job.clone();
        job.config
            .mounts
            .extend(self.inner.files.prepare(&job).await?);
        layers.append(&mut job.config.layers);
        job.config.layers = layers;
        job.config.layer_refs.clear();
        Ok(job)
    }

    fn persist(&self, info: &JobInfo) {
        let dir = self.inner.cfg.data_dir.join("jobs");
        let tmp = dir.join(format!("{}.json.tmp", info.job.id));
        let res = serde_json::to_vec(info)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, dir.join(format!("{}.json", info.job.id))));
        if let Err(e) = res {
            tracing::error!(job = %info.job.id, "could not persist job state: {e}");
        }
    }

    /// Applies `f` to a job, persists it, and emits `kind` (if any).
    fn update(
        &self,
        id: &str,
        kind: Option<EventKind>,
        f: impl FnOnce(&mut JobInfo),
    ) -> Option<JobInfo> {
        let info = {
            let mut jobs = self.inner.jobs.lock().expect("jobs");
            let j = jobs.get_mut(id)?;
            f(j);
            j.clone()
        };
        self.persist(&info);
        if let Some(kind) = kind {
            let _ = self.inner.events.send(JobEvent {
                kind,
                job_id: id.to_string(),
                job: info.clone(),
            });
        }
        self.inner.changed.notify_waiters();
        Some(info)
    }

    fn get(&self, id: &str) -> Option<JobInfo> {
        self.inner.jobs.lock().expect("jobs").get(id).cloned()
    }

    fn spawn_waiter(&self, id: String) {
        let agent = self.clone();
        tokio::spawn(async move {
            let res = agent
                .inner
                .runtime
                .wait(&id)
                .await
                .map_err(|e| format!("{e:#}"));
            agent.finished(&id, res).await;
        });
    }

    /// Records a job's end, then releases its resources.
    async fn finished(&self, id: &str, res: Result<ExitStatus, String>) {
        tracing::debug!(job = id, "stop timing: exit seen");
        let t0 = std::time::Instant::now();
        // Collected before the job is seen as ended, so a waiter finds its outputs.
        let (mut outputs, mut res) = (Default::default(), res);
        if let Some(job) = self
            .get(id)
            .map(|j| j.job)
            .filter(|j| !j.config.files.is_empty())
        {
            if let Ok(st) = &mut res
                && st.code != 0
                && self.inner.files.full(&job)
            {
                st.disk_full = true;
                st.disk_limit = Some(job.resources.disk());
            }
            let errors;
            (outputs, errors) = self.inner.files.collect(&job).await;
            if !errors.is_empty() {
                self.update(id, None, |j| j.error = Some(errors.join("; ")));
            }
            self.inner.files.remove(id).await;
        }
        match res {
            Ok(st) => {
                self.update(id, Some(EventKind::Stop), |j| {
                    j.outputs = outputs;
                    j.status = if st.code == 0 || (j.stop_requested && !st.oom_killed) {
                        JobStatus::Done
                    } else {
                        JobStatus::Crashed
                    };
                    if st.oom_killed {
                        j.error = Some(st.to_string());
                    }
                    j.up = false;
                    j.exit = Some(st);
                    j.finished_at = now();
                });
            }
            Err(e) => {
                self.update(id, Some(EventKind::Error), |j| {
                    j.status = JobStatus::Failed;
                    j.error = Some(e);
                    j.up = false;
                    j.finished_at = now();
                });
            }
        }
        if let Err(e) = self.inner.runtime.cleanup(id).await {
            tracing::warn!(job = id, "cleanup failed: {e:#}");
            self.update(id, Some(EventKind::Error), |j| {
                j.error.get_or_insert(format!("cleanup failed: {e:#}"));
            });
        } else {
            self.update(id, Some(EventKind::Cleanup), |_| {});
        }
        tracing::debug!(job = id, "stop timing: cleaned up in {:?}", t0.elapsed());
        self.inner.checks.lock().expect("checks").remove(id);
        self.inner.uncleaned.lock().expect("uncleaned").remove(id);
        self.inner.changed.notify_waiters();
        self.forget_old_jobs();
    }

    /// Removes the oldest finished jobs beyond `max_finished_jobs` (record and logs).
    fn forget_old_jobs(&self) {
        let old: Vec<String> = {
            let mut jobs = self.inner.jobs.lock().expect("jobs");
            let mut done: Vec<(Option<OffsetDateTime>, String)> = jobs
                .values()
                .filter(|j| j.status.is_terminal())
                .map(|j| (j.finished_at, j.job.id.clone()))
                .collect();
            if done.len() <= self.inner.cfg.max_finished_jobs {
                return;
            }
            done.sort();
            let n = done.len() - self.inner.cfg.max_finished_jobs;
            let old: Vec<String> = done.into_iter().take(n).map(|(_, id)| id).collect();
            for id in &old {
                jobs.remove(id);
            }
            old
        };
        let dir = self.inner.cfg.data_dir.join("jobs");
        for id in old {
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
            self.inner.runtime.forget(&id);
        }
    }

    fn spawn_checks(&self, info: &JobInfo) {
        let checked: Vec<(u16, HealthCheck)> = info
            .job
            .config
            .ports
            .iter()
            .filter_map(|p| p.check.clone().map(|c| (p.port, c)))
            .collect();
        if checked.is_empty() {
            return;
        }
        let host = if info.job.config.host_network {
            std::net::Ipv4Addr::LOCALHOST
        } else {
            match info.ip {
                Some(ip) => ip,
                None => return,
            }
        };
        self.inner
            .checks
            .lock()
            .expect("checks")
            .insert(info.job.id.clone(), vec![false; checked.len()]);
        for (i, (port, check)) in checked.into_iter().enumerate() {
            let agent = self.clone();
            let id = info.job.id.clone();
            tokio::spawn(async move {
                health::run(agent, id, i, (host, port).into(), check).await;
            });
        }
    }

    pub(crate) fn is_terminal(&self, id: &str) -> bool {
        self.get(id).is_none_or(|j| j.status.is_terminal())
    }

    /// Called by a health check when its result flips.
    pub(crate) fn check_result(&self, id: &str, index: usize, pass: bool, why: Option<String>) {
        let (was_up, now_up) = {
            let mut checks = self.inner.checks.lock().expect("checks");
            let Some(c) = checks.get_mut(id) else { return };
            let was = c.iter().all(|x| *x);
            c[index] = pass;
            (was, c.iter().all(|x| *x))
        };
        if now_up && !was_up {
            tracing::debug!(job = id, "start timing: health checks passed");
            self.update(id, Some(EventKind::Up), |j| j.up = true);
        } else if !now_up && (was_up || why.is_some()) {
            self.update(id, Some(EventKind::Down), |j| {
                j.up = false;
                if let Some(w) = why {
                    j.error = Some(w);
                }
            });
        }
    }

    /// Kills a job whose health check is down (`kill_down`).
    pub(crate) async fn kill_down(&self, id: &str, why: String) {
        tracing::warn!(job = id, "{why}: killing it");
        self.update(id, None, |j| {
            j.error = Some(format!("{why}; killed (kill_down)"))
        });
        let _ = self.inner.runtime.signal(id, libc::SIGKILL).await;
    }

    async fn stop_after_grace(&self, id: String, grace: Duration) {
        let t0 = std::time::Instant::now();
        if let Err(e) = self.inner.runtime.signal(&id, libc::SIGTERM).await {
            tracing::debug!(job = %id, "SIGTERM: {e:#}");
        }
        tracing::debug!(job = %id, "stop timing: SIGTERM sent in {:?}", t0.elapsed());
        let agent = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(grace, agent.wait_terminal(&id))
                .await
                .is_err()
            {
                tracing::info!(job = %id, "did not stop within {grace:?}: sending SIGKILL");
                let _ = agent.inner.runtime.signal(&id, libc::SIGKILL).await;
            }
        });
    }

    async fn wait_terminal(&self, id: &str) -> Option<JobInfo> {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let j = self.get(id)?;
            if j.status.is_terminal() && self.cleaned(id) {
                return Some(j);
            }
            notified.await;
        }
    }

    /// True once the runtime released the job's resources.
    fn cleaned(&self, id: &str) -> bool {
        !self.inner.uncleaned.lock().expect("uncleaned").contains(id)
    }
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

impl Agent {
    /// The newest scheduler epoch this host has seen (0: none).
    pub async fn epoch(&self) -> u64 {
        *self.inner.epoch.read().await
    }

    /// Holds the epoch shared for a fenced call of `epoch`, raising it first if `epoch` is
    /// newer (a new leader's first call may race its announcement); refuses an older one.
    async fn hold_epoch(&self, epoch: u64) -> HostResult<tokio::sync::RwLockReadGuard<'_, u64>> {
        {
            let held = self.inner.epoch.read().await;
            if *held == epoch {
                return Ok(held);
            }
            if *held > epoch {
                return Err(HostError::fenced(*held));
            }
        }
        self.fence(epoch).await?;
        let held = self.inner.epoch.read().await;
        if *held > epoch {
            return Err(HostError::fenced(*held));
        }
        Ok(held)
    }
}

#[async_trait]
impl HostApi for Agent {
    async fn fence(&self, epoch: u64) -> HostResult<()> {
        let mut held = self.inner.epoch.write().await;
        if *held > epoch {
            return Err(HostError::fenced(*held));
        }
        if *held < epoch {
            let path = self.inner.cfg.data_dir.join("epoch");
            std::fs::write(&path, epoch.to_string()).map_err(|e| {
                HostError::Internal(format!(
                    "cannot record the scheduler epoch in {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(epoch, "a new scheduler leads: older epochs are refused");
            *held = epoch;
        }
        Ok(())
    }

    async fn add_job_fenced(&self, job: HostJob, epoch: u64) -> HostResult<JobInfo> {
        let _held = self.hold_epoch(epoch).await?;
        self.add_job(job).await
    }

    async fn stop_job_fenced(&self, id: &str, epoch: u64) -> HostResult<JobInfo> {
        let _held = self.hold_epoch(epoch).await?;
        self.stop_job(id).await
    }

    async fn add_job(&self, job: HostJob) -> HostResult<JobInfo> {
        let id_ok = !job.id.is_empty()
            && job.id.len() <= 128
            && !job.id.starts_with('.')
            && job
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !id_ok {
            return Err(HostError::BadRequest(format!(
                "job id {:?} must be 1-128 letters, digits, '-', '_' or '.' (not starting with '.')",
                job.id
            )));
        }
        if job.config.args.is_empty() {
            return Err(HostError::BadRequest(
                "the job has no command (args is empty)".into(),
            ));
        }
        let id = job.id.clone();
        let info = JobInfo {
            job: job.clone(),
            status: JobStatus::Starting,
            up: false,
            ip: None,
            pid: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            exit: None,
            error: None,
            stop_requested: false,
            outputs: Default::default(),
        };
        {
            let mut jobs = self.inner.jobs.lock().expect("jobs");
            if jobs.contains_key(&id) {
                return Err(HostError::Conflict(format!(
                    "job {id} already exists on this host"
                )));
            }
            jobs.insert(id.clone(), info);
        }
        self.inner
            .uncleaned
            .lock()
            .expect("uncleaned")
            .insert(id.clone());
        self.update(&id, Some(EventKind::Create), |_| {});
        let t0 = std::time::Instant::now();
        let started = match self.resolve_layers(&job).await {
            Ok(resolved) => {
                tracing::debug!(job = %id, "start timing: layers resolved in {:?}", t0.elapsed());
                self.inner.runtime.start(&resolved).await
            }
            Err(e) => Err(e),
        };
        tracing::debug!(job = %id, "start timing: runtime start returned at {:?}", t0.elapsed());
        match started {
            Ok(started) => {
                for w in &started.warnings {
                    tracing::warn!(job = %id, "{w}");
                }
                let info = self
                    .update(&id, Some(EventKind::Start), |j| {
                        j.status = if j.stop_requested {
                            JobStatus::Stopping
                        } else {
                            JobStatus::Running
                        };
                        j.ip = started.ip;
                        j.pid = started.pid;
                        j.started_at = now();
                    })
                    .expect("job exists");
                self.spawn_checks(&info);
                self.spawn_waiter(id.clone());
                if info.stop_requested {
                    let grace = job.config.stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS);
                    self.stop_after_grace(id, Duration::from_millis(grace))
                        .await;
                }
                Ok(info)
            }
            Err(e) => {
                // The runtime already undid what it prepared; the job's files are undone here.
                self.inner.files.remove(&id).await;
                self.inner.uncleaned.lock().expect("uncleaned").remove(&id);
                Ok(self
                    .update(&id, Some(EventKind::Error), |j| {
                        j.status = JobStatus::Failed;
                        j.error = Some(format!("the job could not start: {e:#}"));
                        j.finished_at = now();
                    })
                    .expect("job exists"))
            }
        }
    }

    async fn list_jobs(&self) -> HostResult<Vec<JobInfo>> {
        let mut v: Vec<JobInfo> = self
            .inner
            .jobs
            .lock()
            .expect("jobs")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.job.id.cmp(&b.job.id))
        });
        Ok(v)
    }

    async fn get_job(&self, id: &str) -> HostResult<JobInfo> {
        self.get(id)
            .ok_or_else(|| HostError::NotFound(format!("no job {id} on this host")))
    }

    async fn stop_job(&self, id: &str) -> HostResult<JobInfo> {
        let j = self.get_job(id).await?;
        if j.status.is_terminal() || j.stop_requested {
            return Ok(j);
        }
        let starting = j.status == JobStatus::Starting;
        let info = self
            .update(id, None, |j| {
                j.stop_requested = true;
                if !starting {
                    j.status = JobStatus::Stopping;
                }
            })
            .expect("job exists");
        if !starting {
            let grace = j.job.config.stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS);
            self.stop_after_grace(id.to_string(), Duration::from_millis(grace))
                .await;
        }
        Ok(info)
    }

    async fn attach(&self, id: &str) -> HostResult<crate::attach::AttachStream> {
        let j = self.get_job(id).await?;
        if j.job.config.attach.is_none() {
            return Err(HostError::BadRequest(format!(
                "job {id} was not started attached (run it without -d to attach)"
            )));
        }
        self.inner
            .runtime
            .attach(id)
            .await
            .map_err(|e| HostError::Conflict(format!("{e:#}")))
    }

    async fn signal_job(&self, id: &str, signal: i32) -> HostResult<()> {
        let j = self.get_job(id).await?;
        if j.status.is_terminal() {
            return Err(HostError::Conflict(format!("job {id} is not running")));
        }
        self.inner.runtime.signal(id, signal).await?;
        Ok(())
    }

    async fn wait_job(&self, id: &str) -> HostResult<JobInfo> {
        self.wait_terminal(id)
            .await
            .ok_or_else(|| HostError::NotFound(format!("no job {id} on this host")))
    }

    async fn events(&self) -> HostResult<BoxStream<'static, JobEvent>> {
        let rx = self.inner.events.subscribe();
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => return Some((e, rx)),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("event subscriber lagged; {n} events dropped");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )))
    }

    async fn logs(&self, id: &str, follow: bool) -> HostResult<BoxStream<'static, LogLine>> {
        self.get_job(id).await?;
        Ok(self.inner.runtime.logs(id, follow))
    }

    async fn status(&self) -> HostResult<HostStatus> {
        let (job_count, allocated) = {
            let jobs = self.inner.jobs.lock().expect("jobs");
            let live: Vec<&JobInfo> = jobs.values().filter(|j| !j.status.is_terminal()).collect();
            let allocated = Allocated {
                memory_bytes: live.iter().map(|j| j.job.resources.memory()).sum(),
                cpu_milli: live
                    .iter()
                    .map(|j| j.job.resources.cpu_milli.unwrap_or(DEFAULT_CPU_MILLI))
                    .sum(),
            };
            (live.len(), allocated)
        };
        Ok(HostStatus {
            id: self.inner.cfg.id.clone(),
            tags: self.inner.cfg.tags.clone(),
            runtime: self.inner.runtime.name().to_string(),
            capacity: Capacity {
                memory_bytes: total_memory(),
                cpus: std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
            },
            job_count,
            allocated,
            layer_cache: self.inner.layers.stats(),
        })
    }
}
