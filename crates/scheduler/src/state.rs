//! What the scheduler knows: the hosts it follows and the jobs it tracks, kept up to date from
//! the hosts' job events, their job lists (resync) and their heartbeats.

use crate::Scheduler;
use crate::plan::{self, HostView, JobView, Key, Phase};
use futures_util::StreamExt;
use slipway_host::{EventKind, HostApi, JobInfo, JobStatus};
use slipway_types::{Job, JobState, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct HostEntry {
    pub api: Arc<dyn HostApi>,
    pub view: HostView,
    pub failures: u32,
    /// Which time the host was added: the tasks that follow an earlier addition (the host was
    /// lost and rejoined meanwhile) end.
    pub addition: u64,
}

/// A restart waiting for its backoff.
pub(crate) struct Restart {
    /// The restart count the new job will have.
    pub n: u32,
    pub ready: Instant,
}

pub(crate) struct Tracked {
    pub job: Job,
    /// None for one-off jobs.
    pub key: Option<Key>,
    /// Some while the job counts towards its formation.
    pub phase: Option<Phase>,
    pub seq: u64,
    pub stop_requested: bool,
    /// The start call has not returned yet.
    pub in_flight: bool,
    pub running_since: Option<Instant>,
    pub finished_at: Option<Instant>,
    /// The traffic gate said the router has it (or the job needs no route): it may be `up`.
    pub routed: bool,
    /// A wait for the router is under way.
    pub route_wait: bool,
    /// The job ended for the scheduler (its host was lost) but the host reports it running
    /// (the host came back): a stop was sent.
    pub orphan_stopped: bool,
}

impl Tracked {
    pub fn new(job: Job, key: Option<Key>, seq: u64, placed: bool) -> Tracked {
        Tracked {
            job,
            key,
            phase: Some(if placed {
                Phase::Pending
            } else {
                Phase::Blocked
            }),
            seq,
            stop_requested: false,
            in_flight: placed,
            running_since: None,
            finished_at: None,
            routed: false,
            route_wait: false,
            orphan_stopped: false,
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub hosts: BTreeMap<String, HostEntry>,
    pub jobs: HashMap<String, Tracked>,
    pub restarts: HashMap<Key, VecDeque<Restart>>,
    pub next_restart: Option<Instant>,
    /// Host additions so far (see [`HostEntry::addition`]).
    pub host_additions: u64,
}

/// Finished jobs stay tracked this long (so `kill` of a just-finished job says so), then go.
const KEEP_FINISHED: Duration = Duration::from_secs(300);

fn rank(s: JobState) -> u8 {
    match s {
        JobState::Pending | JobState::Blocked => 0,
        JobState::Starting => 1,
        JobState::Up => 2,
        JobState::Stopping => 3,
        JobState::Down | JobState::Crashed | JobState::Failed => 4,
    }
}

impl State {
    /// Follows a host; returns the addition's generation.
    pub fn add_host(
        &mut self,
        id: String,
        api: Arc<dyn HostApi>,
        tags: BTreeMap<String, String>,
    ) -> u64 {
        self.host_additions += 1;
        let addition = self.host_additions;
        let view = HostView {
            id: id.clone(),
            tags,
            shutting_down: false,
            drained: false,
            unreachable: false,
        };
        self.hosts.insert(
            id,
            HostEntry {
                api,
                view,
                failures: 0,
                addition,
            },
        );
        addition
    }

    pub fn live_counts(&mut self) -> HashMap<Key, usize> {
        let now = Instant::now();
        self.jobs
            .retain(|_, t| t.finished_at.is_none_or(|f| now - f < KEEP_FINISHED));
        let mut counts = HashMap::new();
        for t in self.jobs.values() {
            if let (Some(k), Some(_)) = (&t.key, t.phase) {
                *counts.entry(k.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn job_views(&self) -> Vec<JobView> {
        self.jobs
            .values()
            .filter_map(|t| {
                Some(JobView {
                    id: t.job.id.clone(),
                    key: t.key.clone()?,
                    host: t.job.host_id.clone(),
                    phase: t.phase?,
                    seq: t.seq,
                    serving: t.job.state == JobState::Up,
                })
            })
            .collect()
    }

    pub fn jobs_on(&self, host: &str) -> usize {
        self.jobs
            .values()
            .filter(|t| !t.job.state.is_finished() && t.job.host_id.as_deref() == Some(host))
            .count()
    }

    /// Keeps at most `missing` queued restarts of `key`; returns how many still wait.
    pub fn deferred(&mut self, key: &Key, missing: usize, now: Instant) -> usize {
        let Some(q) = self.restarts.get_mut(key) else {
            return 0;
        };
        q.truncate(missing);
        q.iter().filter(|r| r.ready > now).count()
    }

    /// The restart count of the next job of `key`: a due restart's, or 0 for a fresh job.
    pub fn take_ready_restart(&mut self, key: &Key, now: Instant) -> u32 {
        let Some(q) = self.restarts.get_mut(key) else {
            return 0;
        };
        match q.iter().position(|r| r.ready <= now) {
            Some(i) => q.remove(i).map_or(0, |r| r.n),
            None => 0,
        }
    }

    /// Records a job's end. A formation job that ended on its own (`crashed`) is queued for a
    /// restart with Flynn's backoff; one-off jobs and stopped jobs are not.
    pub fn finish(&mut self, sched: &Scheduler, id: &str, state: JobState, crashed: bool) {
        let Some(t) = self.jobs.get_mut(id) else {
            return;
        };
        if t.job.state.is_finished() {
            return;
        }
        tracing::debug!(
            job = id,
            "job {} -> {}",
            t.job.state.as_str(),
            state.as_str()
        );
        t.job.state = state;
        t.job.updated_at = Timestamp::now();
        t.phase = None;
        t.finished_at = Some(Instant::now());
        sched.send(t.job.clone());
        if let (true, Some(key)) = (crashed && !t.stop_requested, t.key.clone()) {
            let worked = t
                .running_since
                .is_some_and(|s| s.elapsed() >= plan::RESTART_RESET_AFTER);
            let n = if worked { 1 } else { t.job.restarts + 1 };
            let ready = Instant::now() + plan::backoff(n);
            tracing::info!(
                job = id,
                restarts = n,
                "job exited; restarting in {:?}",
                plan::backoff(n)
            );
            self.restarts
                .entry(key)
                .or_default()
                .push_back(Restart { n, ready });
        }
    }
}

impl Scheduler {
    /// Applies what a host says about a job. Stale reports (older than what is known) are
    /// ignored, except a health check going down.
    pub(crate) fn on_host_job(
        &self,
        st: &mut State,
        host: &str,
        info: &JobInfo,
        health_down: bool,
    ) {
        let id = info.job.id.as_str();
        if !st.jobs.contains_key(id) {
            // A job started by an earlier scheduler: adopt it if it is one of ours.
            let (Ok(app), Ok(release)) = (info.job.app_id.parse(), info.job.release_id.parse())
            else {
                return;
            };
            let ptype = Some(info.job.process_type.clone()).filter(|t| !t.is_empty());
            // A one-off (a build job has a process type too) is never a formation's.
            let one_off = info.job.metadata.contains_key(crate::ONE_OFF_META);
            let key = ptype.clone().filter(|_| !one_off).map(|t| Key {
                app,
                release,
                process_type: t,
            });
            let restarts = info
                .job
                .metadata
                .get("slipway.restarts")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let now = Timestamp::now();
            let job = Job {
                id: id.to_string(),
                app_id: app,
                release_id: release,
                process_type: ptype,
                host_id: Some(host.to_string()),
                state: JobState::Pending,
                args: info.job.config.args.clone(),
                exit_status: None,
                host_error: None,
                restarts,
                // A build job's row says whose build it is (`slipway.build`, `slipway.builder`).
                meta: if one_off {
                    info.job.metadata.clone()
                } else {
                    Default::default()
                },
                created_at: now,
                updated_at: now,
            };
            let seq = self
                .inner
                .seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut t = Tracked::new(job, key, seq, true);
            t.in_flight = false;
            // Adopted after a restart: it was counted up (and routed) by the previous process;
            // waiting for the router again would flash its row back to `starting`.
            t.routed = true;
            st.jobs.insert(id.to_string(), t);
        }
        let Some(t) = st.jobs.get_mut(id) else { return };
        if t.job.state.is_finished() {
            // A lost host that rejoined still runs what was replaced meanwhile: stop it (after
            // the state lock is released).
            let alive = !info.status.is_terminal() && !info.stop_requested;
            if alive && !t.orphan_stopped && t.job.host_id.as_deref() == Some(host) {
                t.orphan_stopped = true;
                tracing::info!(job = %id, host, "stopping a job that was replaced while its host was lost");
                let (sched, host, id) = (self.clone(), host.to_string(), id.to_string());
                tokio::spawn(async move { sched.spawn_stop(host, id) });
            }
            return;
        }
        let has_checks = info.job.config.ports.iter().any(|p| p.check.is_some());
        let new = match info.status {
            JobStatus::Starting => JobState::Starting,
            JobStatus::Running if !has_checks || info.up => JobState::Up,
            JobStatus::Running => JobState::Starting,
            JobStatus::Stopping => JobState::Stopping,
            JobStatus::Done => JobState::Down,
            JobStatus::Crashed => JobState::Crashed,
            JobStatus::Failed => JobState::Failed,
        };
        let old = t.job.state;
        if rank(new) < rank(old) && !(health_down && old == JobState::Up) {
            return;
        }
        if info.error.is_some() {
            t.job.host_error = info.error.clone();
        }
        t.job.exit_status = info.exit.as_ref().map(|e| e.code);
        if new.is_finished() {
            let crashed = !t.stop_requested && !info.stop_requested;
            st.finish(self, id, new, crashed);
            self.wake();
            return;
        }
        // A formation job is up for deploys and `scale` only once the router sends it requests.
        let mut new = new;
        if new == JobState::Up && !t.routed && t.key.is_some() && self.traffic_gate().is_some() {
            if !t.route_wait {
                t.route_wait = true;
                self.spawn_route_wait(host.to_string(), info.clone());
            }
            new = JobState::Starting;
            if new == old {
                return;
            }
        }
        if new == JobState::Stopping {
            t.phase = None;
        } else if t.phase.is_some() {
            t.phase = Some(Phase::Running);
        }
        if new == JobState::Up && t.running_since.is_none() {
            t.running_since = Some(Instant::now());
        }
        if new != old {
            tracing::debug!(job = %id, "job {} -> {}", old.as_str(), new.as_str());
            t.job.state = new;
            t.job.updated_at = Timestamp::now();
            self.send(t.job.clone());
            // A drain stops an old job once its replacement serves: now, not at the resync.
            if new == JobState::Up && !self.inner.drained.lock().expect("drained").is_empty() {
                self.wake();
            }
        }
    }

    /// Reads a host's whole job list: catches up on missed events, and finishes jobs the host
    /// no longer has.
    pub(crate) async fn resync_host(&self, host: &str, api: &Arc<dyn HostApi>) {
        let Ok(list) = api.list_jobs().await else {
            return;
        };
        let mut st = self.lock();
        let seen: HashSet<&str> = list.iter().map(|j| j.job.id.as_str()).collect();
        for info in &list {
            self.on_host_job(&mut st, host, info, false);
        }
        let gone: Vec<String> = st
            .jobs
            .values()
            .filter(|t| {
                t.job.host_id.as_deref() == Some(host)
                    && !t.in_flight
                    && !t.job.state.is_finished()
                    && !seen.contains(t.job.id.as_str())
            })
            .map(|t| t.job.id.clone())
            .collect();
        for id in &gone {
            if let Some(t) = st.jobs.get_mut(id) {
                t.job.host_error = Some(format!("host {host} has no record of this job"));
            }
            st.finish(self, id, JobState::Failed, true);
        }
        if !gone.is_empty() {
            self.wake();
        }
    }

    /// A host that stopped answering, or whose registration went: its jobs are down (with
    /// `reason`) and get replaced elsewhere.
    pub(crate) fn lose_host(&self, host: &str, reason: &str) {
        let mut st = self.lock();
        if st.hosts.remove(host).is_none() {
            return;
        }
        tracing::warn!(host, "{reason}; replacing its jobs");
        let ids: Vec<String> = st
            .jobs
            .values()
            .filter(|t| t.job.host_id.as_deref() == Some(host) && !t.job.state.is_finished())
            .map(|t| t.job.id.clone())
            .collect();
        for id in ids {
            if let Some(t) = st.jobs.get_mut(&id) {
                t.job.host_error = Some(reason.to_string());
            }
            st.finish(self, &id, JobState::Down, false);
        }
        drop(st);
        self.wake();
    }

    /// Whether the host is still followed as the same addition.
    fn still_followed(&self, host: &str, addition: u64) -> bool {
        self.lock()
            .hosts
            .get(host)
            .is_some_and(|h| h.addition == addition)
    }
}

/// Follows a host's job events for as long as the host is followed, resubscribing (and
/// resyncing, since events may have been missed) when the stream ends.
pub(crate) async fn follow_events(
    sched: Scheduler,
    host: String,
    api: Arc<dyn HostApi>,
    addition: u64,
) {
    let interval = sched.inner.cfg.host_check_interval;
    while sched.still_followed(&host, addition) {
        if let Ok(mut events) = api.events().await {
            sched.resync_host(&host, &api).await;
            while let Some(ev) = events.next().await {
                if !sched.still_followed(&host, addition) {
                    return;
                }
                let mut st = sched.lock();
                sched.on_host_job(&mut st, &host, &ev.job, ev.kind == EventKind::Down);
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Heartbeat: checks the host every `host_check_interval`, follows its tags, resyncs its jobs
/// every `resync_interval`, and declares it lost after `max_host_checks` failures in a row.
pub(crate) async fn check_host(
    sched: Scheduler,
    host: String,
    api: Arc<dyn HostApi>,
    addition: u64,
) {
    let cfg = sched.inner.cfg.clone();
    let mut last_resync = Instant::now();
    loop {
        tokio::time::sleep(cfg.host_check_interval).await;
        let res = tokio::time::timeout(
            cfg.host_check_interval.max(Duration::from_millis(500)),
            api.status(),
        )
        .await;
        let mut wake = false;
        {
            let mut st = sched.lock();
            let Some(h) = st.hosts.get_mut(&host).filter(|h| h.addition == addition) else {
                return;
            };
            match res {
                Ok(Ok(status)) => {
                    h.failures = 0;
                    if h.view.unreachable {
                        // It takes new jobs again.
                        h.view.unreachable = false;
                        wake = true;
                    }
                    if h.view.tags != status.tags {
                        tracing::info!(host, "host tags changed");
                        h.view.tags = status.tags;
                        wake = true;
                    }
                }
                _ => {
                    h.failures += 1;
                    // No new jobs there meanwhile: placed on a dead host (the fewest jobs of
                    // all, once its own are gone), each start fails at once and a crash
                    // backoff builds up, delaying the replacements elsewhere. From the second
                    // failure in a row: one slow answer under load is not a dead host.
                    if h.failures >= 2 {
                        h.view.unreachable = true;
                    }
                    tracing::warn!(host, failures = h.failures, "host check failed");
                    if h.failures >= cfg.max_host_checks {
                        drop(st);
                        let n = cfg.max_host_checks;
                        let reason = format!("host {host} was lost: it missed {n} health checks");
                        sched.lose_host(&host, &reason);
                        return;
                    }
                    continue;
                }
            }
        }
        if wake {
            sched.wake();
        }
        if last_resync.elapsed() >= cfg.resync_interval {
            last_resync = Instant::now();
            sched.resync_host(&host, &api).await;
        }
    }
}
