//! The scheduler: turns the controller's formations into jobs on hosts, and keeps them there.
//!
//! Level-triggered on purpose: every round reads the whole desired state (formations from the
//! [`Store`]) and the whole actual state (what the hosts reported), plans with the pure
//! [`plan::plan`] and acts. Events (formation writes, host job events, restart deadlines) only
//! say *when* to run a round; a missed event costs at most one resync interval, never a wrong
//! cluster. It drives hosts only through [`HostApi`], so one in-process agent and a hundred
//! remote ones are the same code.
//!
//! The scheduler is the only writer of job rows: every state change of a tracked job is queued
//! to one writer task in order, so the store's job events (what `ps`, `scale` and the deployer
//! read) follow the order things happened.

#![forbid(unsafe_code)]

mod attach;
pub mod drain;
mod fencing;
mod gate;
pub mod hostjob;
pub mod leader;
pub mod membership;
mod oneoff;
pub mod plan;
mod state;

pub use fencing::SCHEDULER_ROLE;
pub use gate::TrafficGate;
pub use leader::{Election, Leadership};
use plan::{Action, HostView, Key, Phase, Want};
use slipway_host::{HostApi, JobInfo};
use slipway_store::Store;
use slipway_types::{App, Id, Job, JobState, Release, Timestamp};
use state::{State, Tracked};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

pub use hostjob::NO_IMAGE;

/// The host job metadata key the scheduler marks its one-off jobs with (`slipway run`, build
/// jobs): a scheduler that finds such a job on a host (after a restart, or as a follower)
/// tracks it as a one-off, never as one of a formation's jobs, even when it has a process type
/// (`build`); so no scheduler stops a build because no formation wants it. Whoever started a
/// one-off stops it (a builder stops its dead builds' jobs at start).
pub const ONE_OFF_META: &str = "slipway.one-off";
/// Why a job is `blocked` when the scheduler follows no host at all.
pub const NO_HOST: &str = "no host is available: waiting for one";

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Full resync of every host's job list and every formation (Flynn: jobs every 30 s).
    pub resync_interval: Duration,
    /// How often each host is checked (Flynn: 1 s while unhealthy).
    pub host_check_interval: Duration,
    /// Consecutive failed checks after which a host is lost and its jobs replaced (Flynn: 10).
    pub max_host_checks: u32,
    /// Stack a release without artifacts runs on.
    pub stack: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            resync_interval: Duration::from_secs(10),
            host_check_interval: Duration::from_secs(1),
            max_host_checks: 10,
            stack: "busybox".into(),
        }
    }
}

/// Why a request to the scheduler was refused, in words for users.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot work as asked (attaching to a job not started attached).
    #[error("{0}")]
    BadRequest(String),
}

/// What one round did (tests and the benchmark read it).
#[derive(Clone, Debug, Default)]
pub struct RoundStats {
    pub started: usize,
    pub stopped: usize,
    pub blocked: usize,
    pub plan_time: Duration,
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    cfg: SchedulerConfig,
    state: Mutex<State>,
    wake: Notify,
    releases: Mutex<HashMap<Id, Release>>,
    seq: AtomicU64,
    rows: mpsc::UnboundedSender<Job>,
    /// The router's side of up and stop (see [`gate`]); unset without a router.
    gate: std::sync::OnceLock<Arc<dyn TrafficGate>>,
    /// Whether and under which epoch this scheduler acts (see [`fencing`]).
    acting: Arc<fencing::Acting>,
    /// The election, when this scheduler is one of several ([`Scheduler::elect`]).
    election: std::sync::OnceLock<Election>,
    /// Where hosts register, when they are followed from there ([`Scheduler::follow_hosts`]).
    members: std::sync::OnceLock<Arc<dyn slipway_discovery::Registry>>,
    /// The drained hosts ([`drain`]): where they are kept, and the set as last read.
    drain_book: std::sync::OnceLock<Arc<dyn drain::DrainBook>>,
    drained: Mutex<std::collections::BTreeSet<String>>,
}

impl Scheduler {
    /// A scheduler over `store` with no hosts yet. Call [`Scheduler::add_host`] and spawn
    /// [`Scheduler::run`].
    pub fn new(store: Arc<dyn Store>, cfg: SchedulerConfig) -> Scheduler {
        let (rows, mut rx) = mpsc::unbounded_channel::<Job>();
        let writer = store.clone();
        let acting = Arc::new(fencing::Acting::default());
        let fence = acting.clone();
        tokio::spawn(async move {
            // Rows queued meanwhile go in one transaction: one commit per batch, not per row.
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 1000).await > 0 {
                fence.write_rows(&*writer, &batch).await;
                batch.clear();
            }
        });
        Scheduler {
            inner: Arc::new(Inner {
                store,
                cfg,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                releases: Mutex::new(HashMap::new()),
                seq: AtomicU64::new(1),
                rows,
                gate: std::sync::OnceLock::new(),
                acting,
                election: std::sync::OnceLock::new(),
                members: std::sync::OnceLock::new(),
                drain_book: std::sync::OnceLock::new(),
                drained: Mutex::new(Default::default()),
            }),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.cfg
    }

    /// Asks for a round soon (coalesced with other requests).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Follows a host: adopts the jobs it already runs, subscribes to its job events and checks
    /// it every `host_check_interval`. Returns its id.
    pub async fn add_host(&self, api: Arc<dyn HostApi>) -> anyhow::Result<String> {
        let status = api.status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = status.id.clone();
        let jobs = api.list_jobs().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let addition = {
            let mut st = self.lock();
            let addition = st.add_host(id.clone(), api.clone(), status.tags);
            for info in &jobs {
                self.on_host_job(&mut st, &id, info, false);
            }
            addition
        };
        tokio::spawn(state::follow_events(
            self.clone(),
            id.clone(),
            api.clone(),
            addition,
        ));
        tokio::spawn(state::check_host(self.clone(), id.clone(), api, addition));
        self.wake();
        Ok(id)
    }

    /// Graceful shutdown of a host: no new jobs go there, and its jobs are replaced elsewhere
    /// and then stopped.
    pub fn drain_host(&self, id: &str) {
        if let Some(h) = self.lock().hosts.get_mut(id) {
            h.view.shutting_down = true;
        }
        self.wake();
    }

    /// Host ids and tags as the scheduler sees them (drained ones marked).
    pub fn hosts(&self) -> Vec<HostView> {
        let drained = self.drained_hosts();
        self.lock()
            .hosts
            .values()
            .map(|h| {
                let mut v = h.view.clone();
                v.drained = drained.contains(&v.id);
                v
            })
            .collect()
    }

    /// The jobs the scheduler tracks (live and recently finished).
    pub fn jobs(&self) -> Vec<Job> {
        self.lock().jobs.values().map(|t| t.job.clone()).collect()
    }

    /// Rounds forever: on every wake-up, on formation events in the store, at restart deadlines,
    /// and every `resync_interval` in any case.
    ///
    /// With an election ([`Scheduler::elect`]) a round runs only while this scheduler leads,
    /// after it took over (see [`fencing`]); meanwhile it follows its hosts all the same.
    pub async fn run(self) {
        let mut notifier = self.inner.store.event_notifier();
        let mut last_event = *notifier.borrow_and_update();
        let mut leadership = self.inner.election.get().map(Election::watch);
        loop {
            if self.lead().await
                && let Err(e) = self.round().await
            {
                tracing::warn!("scheduler round failed (retrying): {e:#}");
            }
            let deadline = {
                let st = self.lock();
                let resync = Instant::now() + self.inner.cfg.resync_interval;
                st.next_restart.map_or(resync, |d| d.min(resync))
            };
            loop {
                tokio::select! {
                    _ = self.inner.wake.notified() => break,
                    changed = async {
                        match &mut leadership {
                            Some(l) => l.changed().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if changed.is_err() {
                            leadership = None;
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => break,
                    r = notifier.changed() => {
                        if r.is_err() {
                            tokio::time::sleep(self.inner.cfg.resync_interval).await;
                            break;
                        }
                        let newest = *notifier.borrow_and_update();
                        if self.formations_changed(last_event).await {
                            last_event = newest;
                            break;
                        }
                        last_event = newest;
                    }
                }
            }
        }
    }

    /// Whether a formation changed since the event `since`, or an app went: deleting an app
    /// removes its formations without formation events, and its jobs should stop now, not at
    /// the next resync.
    async fn formations_changed(&self, since: i64) -> bool {
        let filter = slipway_types::EventFilter {
            object_types: vec![
                slipway_types::ObjectType::Formation,
                slipway_types::ObjectType::App,
            ],
            since_id: Some(since),
            limit: Some(1),
            ..Default::default()
        };
        self.inner
            .store
            .list_events(&filter)
            .await
            .map(|e| !e.is_empty())
            .unwrap_or(true)
    }

    /// One reconcile round: reads the formations, plans against the tracked jobs and acts.
    pub async fn round(&self) -> anyhow::Result<RoundStats> {
        let t0 = Instant::now();
        let (wants, ctx) = self.desired().await?;
        tracing::debug!("round timing: desired state read in {:?}", t0.elapsed());
        let now = Instant::now();
        let mut stats = RoundStats::default();
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        {
            let mut st = self.lock();
            let mut wants = wants;
            let live = st.live_counts();
            let n_hosts = st.hosts.len();
            for w in &mut wants {
                // An omni key wants its count on every host (at most).
                let target = match w.omni {
                    true => w.count as usize * n_hosts,
                    false => w.count as usize,
                };
                let missing = target.saturating_sub(live.get(&w.key).copied().unwrap_or(0));
                w.deferred = st.deferred(&w.key, missing, now) as u32;
            }
            st.restarts
                .retain(|k, q| !q.is_empty() && wants.iter().any(|w| &w.key == k));
            st.next_restart = st.restarts.values().flatten().map(|r| r.ready).min();
            let drained = self.drained_hosts();
            let hosts: Vec<HostView> = st
                .hosts
                .values()
                .map(|h| {
                    let mut v = h.view.clone();
                    v.drained = drained.contains(&v.id);
                    v
                })
                .collect();
            let views = st.job_views();
            let t0 = Instant::now();
            let actions = plan::plan(&wants, &hosts, &views);
            stats.plan_time = t0.elapsed();
            for a in actions {
                match a {
                    Action::Start { key, host } => {
                        let restarts = st.take_ready_restart(&key, now);
                        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
                        let id = match &host {
                            Some(h) => format!("{h}-{}", uuid::Uuid::new_v4().simple()),
                            None => uuid::Uuid::new_v4().simple().to_string(),
                        };
                        let mut job = new_job(&id, &key, host.as_deref(), restarts);
                        if host.is_none() {
                            stats.blocked += 1;
                            if hosts.is_empty() {
                                job.host_error = Some(NO_HOST.into());
                            }
                        }
                        let t = Tracked::new(job, Some(key.clone()), seq, host.is_some());
                        self.put(&mut st, t);
                        if let Some(h) = host {
                            starts.push((h, id, key));
                        }
                    }
                    Action::Place { job_id, host } => {
                        let Some(old) = st.jobs.get_mut(&job_id) else {
                            continue;
                        };
                        let id = format!("{host}-{}", uuid::Uuid::new_v4().simple());
                        old.phase = None;
                        old.job.state = JobState::Down;
                        old.job.host_error = Some(format!("a host matched: started as {id}"));
                        old.job.updated_at = Timestamp::now();
                        let (key, restarts) =
                            (old.key.clone().expect("formation job"), old.job.restarts);
                        let row = old.job.clone();
                        self.send(row);
                        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
                        let t = Tracked::new(
                            new_job(&id, &key, Some(&host), restarts),
                            Some(key.clone()),
                            seq,
                            true,
                        );
                        self.put(&mut st, t);
                        starts.push((host, id, key));
                    }
                    Action::Stop { job_id } => {
                        if let Some(s) = self.mark_stopping(&mut st, &job_id) {
                            stops.push(s);
                        }
                    }
                }
            }
        }
        stats.started = starts.len();
        stats.stopped = stops.len();
        for (host, id, key) in starts {
            let Some((app, release)) = ctx.get(&(key.app, key.release)) else {
                continue;
            };
            let restarts = self
                .lock()
                .jobs
                .get(&id)
                .map(|t| t.job.restarts)
                .unwrap_or(0);
            let built = match self.release_artifacts(release).await {
                Ok(artifacts) => hostjob::host_job_with(
                    &id,
                    app,
                    release,
                    &artifacts,
                    Some(&key.process_type),
                    &[],
                    &Default::default(),
                    &self.inner.cfg.stack,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match built {
                Ok(mut hj) => {
                    hj.metadata
                        .insert("slipway.restarts".into(), restarts.to_string());
                    self.spawn_start(host, hj);
                }
                Err(msg) => self.start_failed(&id, msg),
            }
        }
        for (host, id) in stops {
            self.spawn_stop(host, id);
        }
        Ok(stats)
    }

    /// A job's output (stdout, stderr and the host's `init` lines) until it exits, for an
    /// attached `slipway run`. Waits for the host to have the job first.
    pub async fn job_output(
        &self,
        app_id: Id,
        job_id: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, slipway_host::LogLine>, SchedError> {
        // A job that could not start has no output to follow: its start error says why.
        let host = self
            .host_of_started_job(app_id, job_id, SchedError::Unavailable)
            .await?;
        host.logs(job_id, true).await.map_err(|e| {
            SchedError::Unavailable(format!("cannot read the output of {job_id}: {e}"))
        })
    }

    /// At start, after the hosts are added: job rows the store shows alive but no host reports
    /// (they ended while no scheduler was running) are marked `down`, so `ps` tells the truth
    /// and the formation gets replacements.
    pub async fn mark_lost_rows(&self) -> anyhow::Result<usize> {
        let mut lost = Vec::new();
        for app in self.inner.store.list_apps().await? {
            for mut job in self.inner.store.list_jobs(app.id).await? {
                if job.state.is_finished() || self.lock().jobs.contains_key(&job.id) {
                    continue;
                }
                job.state = JobState::Down;
                job.host_error = Some("no host reports this job any more (it ended while the scheduler was not running)".into());
                lost.push(job);
            }
        }
        let n = lost.len();
        if n > 0 {
            self.inner
                .acting
                .write_rows_now(&*self.inner.store, &lost)
                .await?;
        }
        Ok(n)
    }

    /// Stops a job (`slipway kill`). A formation job is replaced, like any job that goes away.
    pub async fn stop_job(&self, app_id: Id, job_id: &str) -> Result<Job, SchedError> {
        self.ensure_leader()?;
        let (stop, row) = {
            let mut st = self.lock();
            let Some(t) = st.jobs.get(job_id).filter(|t| t.job.app_id == app_id) else {
                return Err(SchedError::NotFound(format!("job {job_id} not found")));
            };
            if t.job.state.is_finished() {
                return Err(SchedError::Invalid(format!(
                    "job {job_id} has already finished ({})",
                    t.job.state.as_str()
                )));
            }
            let stop = self.mark_stopping(&mut st, job_id);
            (stop, st.jobs.get(job_id).map(|t| t.job.clone()))
        };
        if let Some((host, id)) = stop {
            self.spawn_stop(host, id);
        }
        self.wake();
        row.ok_or_else(|| SchedError::NotFound(format!("job {job_id} not found")))
    }

    /// Desired state: one [`Want`] per process type with a count, and the apps and releases the
    /// starts need (releases never change, so they are cached).
    #[allow(clippy::type_complexity)]
    async fn desired(&self) -> anyhow::Result<(Vec<Want>, HashMap<(Id, Id), (App, Release)>)> {
        let store = &self.inner.store;
        let mut wants = Vec::new();
        let mut ctx = HashMap::new();
        for app in store.list_apps().await? {
            for f in store.list_formations(app.id).await? {
                if f.processes.values().all(|n| *n == 0) {
                    continue;
                }
                let release = self.release(f.release_id).await?;
                for (t, n) in &f.processes {
                    if *n == 0 || !release.processes.contains_key(t) {
                        continue;
                    }
                    let mut tags = f.tags.get(t).cloned().unwrap_or_default();
                    let host = tags.remove("host");
                    let omni = release.processes.get(t).is_some_and(|p| p.omni);
                    wants.push(Want {
                        key: Key {
                            app: app.id,
                            release: f.release_id,
                            process_type: t.clone(),
                        },
                        count: *n,
                        tags,
                        host,
                        deferred: 0,
                        omni,
                    });
                }
                ctx.insert((app.id, f.release_id), (app.clone(), release));
            }
        }
        Ok((wants, ctx))
    }

    async fn release(&self, id: Id) -> anyhow::Result<Release> {
        if let Some(r) = self.inner.releases.lock().expect("releases").get(&id) {
            return Ok(r.clone());
        }
        let r = self.inner.store.get_release(id).await?;
        self.inner
            .releases
            .lock()
            .expect("releases")
            .insert(id, r.clone());
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("scheduler state")
    }

    fn send(&self, job: Job) {
        let _ = self.inner.rows.send(job);
    }

    fn put(&self, st: &mut State, t: Tracked) {
        self.send(t.job.clone());
        st.jobs.insert(t.job.id.clone(), t);
    }

    /// Marks a job stopping; returns the host call to make, if any.
    fn mark_stopping(&self, st: &mut State, job_id: &str) -> Option<(String, String)> {
        let t = st.jobs.get_mut(job_id)?;
        t.stop_requested = true;
        let was_blocked = t.phase == Some(Phase::Blocked);
        t.phase = None;
        t.job.state = if was_blocked {
            JobState::Down
        } else {
            JobState::Stopping
        };
        t.job.updated_at = Timestamp::now();
        let row = t.job.clone();
        let host = t.job.host_id.clone();
        let in_flight = t.in_flight;
        self.send(row);
        if was_blocked || in_flight {
            // An in-flight start is stopped when the host answers (see `on_started`).
            return None;
        }
        host.map(|h| (h, job_id.to_string()))
    }

    fn spawn_start(&self, host: String, hj: slipway_host::HostJob) {
        let api = self.lock().hosts.get(&host).map(|h| h.api.clone());
        let sched = self.clone();
        let epoch = self.inner.acting.epoch();
        tokio::spawn(async move {
            let id = hj.id.clone();
            let t0 = Instant::now();
            let res = match (api, epoch) {
                (Some(api), Ok(None)) => api.add_job(hj).await.map_err(|e| e.to_string()),
                (Some(api), Ok(Some(e))) => {
                    let res = api.add_job_fenced(hj, e).await;
                    if let Err(err) = &res {
                        sched.inner.acting.on_host_error(e, err);
                    }
                    res.map_err(|e| e.to_string())
                }
                (Some(_), Err(msg)) => Err(msg),
                (None, _) => Err(format!("host {host} is gone")),
            };
            tracing::debug!(job = %id, "start timing: the host started it in {:?}", t0.elapsed());
            sched.on_started(&host, &id, res);
        });
    }

    fn on_started(&self, host: &str, id: &str, res: Result<JobInfo, String>) {
        let stop = {
            let mut st = self.lock();
            if let Some(t) = st.jobs.get_mut(id) {
                t.in_flight = false;
            }
            match res {
                Ok(info) => {
                    self.on_host_job(&mut st, host, &info, false);
                    st.jobs
                        .get(id)
                        .is_some_and(|t| t.stop_requested && !t.job.state.is_finished())
                }
                Err(e) => {
                    drop(st);
                    self.start_failed(id, format!("the job could not start: {e}"));
                    false
                }
            }
        };
        if stop {
            self.spawn_stop(host.to_string(), id.to_string());
        }
    }

    /// A start that failed before the host ran anything: recorded as `failed` and, for a
    /// formation job, restarted with backoff like a crash.
    fn start_failed(&self, id: &str, msg: String) {
        let mut st = self.lock();
        if let Some(t) = st.jobs.get_mut(id) {
            t.in_flight = false;
            t.job.host_error = Some(msg);
        }
        st.finish(self, id, JobState::Failed, true);
        self.wake();
    }

    fn spawn_stop(&self, host: String, id: String) {
        let api = self.lock().hosts.get(&host).map(|h| h.api.clone());
        let gate = self.traffic_gate();
        let epoch = match self.inner.acting.epoch() {
            Ok(e) => e,
            Err(msg) => {
                tracing::warn!(job = %id, "stop not sent: {msg}");
                return;
            }
        };
        let acting = self.inner.acting.clone();
        if let Some(api) = api {
            tokio::spawn(async move {
                // Out of the router, and its requests done, before SIGTERM.
                let t0 = Instant::now();
                if let Some(gate) = gate {
                    gate.drain(&id).await;
                }
                tracing::debug!(job = %id, "stop timing: drained in {:?}", t0.elapsed());
                let res = match epoch {
                    Some(epoch) => {
                        let res = api.stop_job_fenced(&id, epoch).await;
                        if let Err(e) = &res {
                            acting.on_host_error(epoch, e);
                        }
                        res
                    }
                    None => api.stop_job(&id).await,
                };
                if let Err(e) = res {
                    tracing::warn!(job = %id, "stop failed: {e}");
                }
                tracing::debug!(job = %id, "stop timing: stop sent at {:?}", t0.elapsed());
            });
        }
    }
}

fn new_job(id: &str, key: &Key, host: Option<&str>, restarts: u32) -> Job {
    let now = Timestamp::now();
    Job {
        id: id.to_string(),
        app_id: key.app,
        release_id: key.release,
        process_type: Some(key.process_type.clone()),
        host_id: host.map(str::to_string),
        state: if host.is_some() {
            JobState::Pending
        } else {
            JobState::Blocked
        },
        args: Vec::new(),
        exit_status: None,
        host_error: host
            .is_none()
            .then(|| "no host matches the formation's tags: waiting for one".to_string()),
        restarts,
        meta: Default::default(),
        created_at: now,
        updated_at: now,
    }
}
