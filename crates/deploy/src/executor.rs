//! The deployment executor: moves an app's formation from its current release to a new one
//! without downtime, following the deployment's strategy (Flynn's `controller/worker/deployment`).
//!
//! It works only through the store: it writes formations (the scheduler converges them) and
//! reads job rows (the scheduler writes them), so it runs the same next to one host or a
//! hundred. A new job counts as up when its row says `up` (the host's health checks passed). If
//! new jobs keep failing ([`FAILURE_THRESHOLD`] times) or the deploy timeout passes, the old
//! formation is restored and the deployment fails with an error that names the process type
//! and the reason, so the old release keeps serving.
//!
//! Several deployers may run on one database (one per server): a deployment is run by the one
//! that claims it ([`Store::claim_deployment`], atomic), which renews its claim every third of
//! [`CLAIM_TTL`] while it runs and stops at once if it finds the claim gone. A deployment left
//! `running` is taken over — failed and rolled back, as its steps cannot be resumed — only
//! once its claim has expired, so a server that restarts no longer fails the deployment
//! another server is running.

use slipway_store::Store;
use slipway_types::{
    DeployStrategy, Deployment, DeploymentStatus, Formation, FormationUpdate, Id, Job, JobState,
    StringMap,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flynn's `newJobFailureThreshold`: new jobs may fail this many times before the deploy fails
/// (a first deploy's initial jobs too, see [`crate::wait`]).
pub const FAILURE_THRESHOLD: usize = 5;

/// How long a deployer's claim on a deployment lasts unless renewed: how long a deployment
/// whose deployer died waits before another takes it over.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

/// Error of a deployment the server stopped in the middle of.
pub const INTERRUPTED: &str =
    "the deployment was interrupted (the server stopped); the previous formation was restored";

#[derive(Clone, Debug)]
pub struct DeployerConfig {
    /// How often pending deployments and job states are re-read when no event wakes us.
    pub poll: Duration,
    /// Batch size of `in-batches` when the app sets none (Flynn: the host count).
    pub default_batch_size: u32,
}

impl Default for DeployerConfig {
    fn default() -> Self {
        DeployerConfig {
            poll: Duration::from_millis(500),
            default_batch_size: 1,
        }
    }
}

#[derive(Clone)]
pub struct Deployer {
    store: Arc<dyn Store>,
    cfg: DeployerConfig,
    running: Arc<Mutex<HashSet<Id>>>,
    /// This deployer's name in claims: unique per process start.
    id: Arc<str>,
    claim_ttl: Duration,
}

/// What a step waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// At least n jobs up.
    Up(u32),
    /// An omni type's (its count is per host, the host count unknown here): at least n jobs
    /// up and every job not finished up (the scheduler starts those of every host at once).
    UpOmni(u32),
    /// At most n jobs not finished.
    Down(u32),
}

impl Deployer {
    pub fn new(store: Arc<dyn Store>, cfg: DeployerConfig) -> Deployer {
        Deployer {
            cfg,
            running: Default::default(),
            // SQLite is one process's database: a claim in it is this server's from before a
            // restart, taken back at once (as before claims). On PostgreSQL each start is a
            // deployer of its own, whose claims others wait out.
            id: Arc::from(match store.backend() {
                "sqlite" => "deployer-local".to_string(),
                _ => format!("deployer-{}", Id::new_v4()),
            }),
            store,
            claim_ttl: CLAIM_TTL,
        }
    }

    /// Another claim length than [`CLAIM_TTL`] (tests).
    pub fn with_claim_ttl(mut self, ttl: Duration) -> Deployer {
        self.claim_ttl = ttl;
        self
    }

    /// This deployer's name in deployment claims.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Picks up pending deployments forever (woken by store events, else every `poll`), and
    /// takes over deployments left `running` by a deployer whose claim expired: they are failed
    /// and rolled back, as their steps cannot be resumed and an unfinished deployment would
    /// block every later one.
    pub async fn run(self) {
        let mut notifier = self.store.event_notifier();
        loop {
            if let Err(e) = self.pick_up().await {
                tracing::warn!("deployer: {e}");
            }
            let _ = tokio::time::timeout(self.cfg.poll * 2, notifier.changed()).await;
        }
    }

    async fn pick_up(&self) -> Result<(), slipway_store::StoreError> {
        for app in self.store.list_apps().await? {
            for d in self.store.list_deployments(app.id).await? {
                if d.status.is_finished() || !self.running.lock().expect("running").insert(d.id) {
                    continue;
                }
                // Ours from here on, unless another deployer holds a live claim on it. Read
                // again once ours: what we listed may have moved on meanwhile (pending then,
                // running since under a deployer that has died).
                let ours = match self
                    .store
                    .claim_deployment(d.id, &self.id, self.claim_ttl)
                    .await
                {
                    Ok(true) => self.store.get_deployment(d.id).await.map(Some),
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                let d = match ours {
                    Ok(Some(fresh)) if !fresh.status.is_finished() => fresh,
                    other => {
                        self.running.lock().expect("running").remove(&d.id);
                        other?;
                        continue;
                    }
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let id = d.id;
                    if d.status == DeploymentStatus::Running {
                        me.take_over(&d).await;
                    } else {
                        me.execute(d).await;
                    }
                    me.running.lock().expect("running").remove(&id);
                });
            }
        }
        Ok(())
    }

    /// Fails and rolls back a deployment left `running` by a deployer whose claim expired
    /// (we hold the claim now).
    async fn take_over(&self, d: &Deployment) {
        tracing::warn!(deployment = %d.id, "deployer: taking over a deployment whose deployer stopped; it is failed and the old formation restored");
        self.restore(d).await;
        if let Err(e) = self
            .store
            .update_deployment(d.id, DeploymentStatus::Failed, Some(INTERRUPTED))
            .await
        {
            tracing::warn!(deployment = %d.id, "deployer: cannot fail an interrupted deployment: {e}");
        }
    }

    /// Renews this deployer's claim on `id` every third of its length; returns when the claim
    /// is lost (another deployer took it over, or the store refused it for a whole claim
    /// length).
    async fn hold_claim(&self, id: Id) {
        let period = self.claim_ttl / 3;
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(period).await;
            match self
                .store
                .claim_deployment(id, &self.id, self.claim_ttl)
                .await
            {
                Ok(true) => failing_since = None,
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(deployment = %id, "deployer: cannot renew the claim: {e}");
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() + period >= self.claim_ttl {
                        return;
                    }
                }
            }
        }
    }

    /// Runs one deployment to `complete` or `failed`, if this deployer can claim it; stops
    /// (recording nothing) if it loses the claim on the way.
    pub async fn execute(&self, d: Deployment) {
        match self
            .store
            .claim_deployment(d.id, &self.id, self.claim_ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(deployment = %d.id, "deployer: cannot claim the deployment: {e}");
                return;
            }
        }
        let run = async {
            match self
                .store
                .update_deployment(d.id, DeploymentStatus::Running, None)
                .await
            {
                Ok(_) => self.steps(&d).await,
                Err(e) => Err(Failure::plain(format!("cannot start the deployment: {e}"))),
            }
        };
        let res = tokio::select! {
            res = run => res,
            _ = self.hold_claim(d.id) => {
                tracing::warn!(deployment = %d.id, "deployer: lost the claim on the deployment; another deployer takes it over");
                return;
            }
        };
        let outcome = match res {
            Ok(()) => {
                self.store
                    .update_deployment(d.id, DeploymentStatus::Complete, None)
                    .await
            }
            Err(f) => {
                tracing::warn!(deployment = %d.id, "deployment failed: {}", f.message);
                if f.restore {
                    self.restore(&d).await;
                }
                self.store
                    .update_deployment(d.id, DeploymentStatus::Failed, Some(&f.message))
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(deployment = %d.id, "could not record the deployment's end: {e}");
        }
    }

    async fn steps(&self, d: &Deployment) -> Result<(), Failure> {
        let t0 = Instant::now();
        let mark = |what: &str| {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            tracing::debug!(deployment = %d.id, "deploy timing: {what} at +{ms:.1} ms");
        };
        let old = match d.old_release_id {
            Some(r) => self.store.get_formation(d.app_id, r).await.ok(),
            None => None,
        };
        let tags = old.as_ref().map(|f| f.tags.clone()).unwrap_or_default();
        let counts = &d.processes;
        // Omni types (a count per host): their jobs are not counted in all, so each moves in
        // one step and waits for its jobs on every host (`Until::UpOmni`).
        let omni: HashSet<String> = match self.store.get_release(d.new_release_id).await {
            Ok(r) => r
                .processes
                .into_iter()
                .filter(|(_, p)| p.omni)
                .map(|(t, _)| t)
                .collect(),
            Err(e) => return Err(Failure::plain(format!("cannot read the release: {e}"))),
        };
        let up = |t: &str, n: u32| match omni.contains(t) {
            true => Until::UpOmni(n),
            false => Until::Up(n),
        };
        let deadline = Instant::now() + Duration::from_secs(u64::from(d.deploy_timeout.max(1)));
        let mut new_f: BTreeMap<String, u32> = counts.keys().map(|t| (t.clone(), 0)).collect();
        let mut old_f: BTreeMap<String, u32> = old
            .as_ref()
            .map(|f| f.processes.clone())
            .unwrap_or_default();
        if counts.values().all(|n| *n == 0) {
            self.put(d.app_id, d.new_release_id, counts, &tags).await?;
            return Ok(());
        }
        match d.strategy {
            DeployStrategy::AllAtOnce => {
                self.put(d.app_id, d.new_release_id, counts, &tags).await?;
                mark("new formation written");
                for (t, n) in counts {
                    self.wait(d, d.new_release_id, t, up(t, *n), deadline)
                        .await?;
                }
                mark("new jobs up");
                if let Some(o) = d.old_release_id {
                    // Only the old scale-down is left: a failure here keeps the new release.
                    old_f.values_mut().for_each(|n| *n = 0);
                    self.put(d.app_id, o, &old_f, &tags)
                        .await
                        .map_err(Failure::keep)?;
                    mark("old formation scaled to 0");
                    for t in counts.keys() {
                        self.wait(d, o, t, Until::Down(0), deadline)
                            .await
                            .map_err(Failure::keep)?;
                    }
                    mark("old jobs down");
                }
            }
            DeployStrategy::OneByOne | DeployStrategy::InBatches => {
                let batch = match d.strategy {
                    DeployStrategy::OneByOne => 1,
                    _ => d
                        .deploy_batch_size
                        .unwrap_or(self.cfg.default_batch_size)
                        .max(1),
                };
                for (t, n) in counts {
                    while new_f[t] < *n {
                        let step = match omni.contains(t) {
                            true => *n,
                            false => batch.min(n - new_f[t]),
                        };
                        *new_f.get_mut(t).expect("type") += step;
                        self.put(d.app_id, d.new_release_id, &new_f, &tags).await?;
                        self.wait(d, d.new_release_id, t, up(t, new_f[t]), deadline)
                            .await?;
                        if let (Some(o), Some(cur)) = (d.old_release_id, old_f.get_mut(t)) {
                            // An omni type's old jobs go in one step too (per host).
                            *cur = match omni.contains(t) {
                                true => 0,
                                false => cur.saturating_sub(step),
                            };
                            let left = *cur;
                            self.put(d.app_id, o, &old_f, &tags).await?;
                            self.wait(d, o, t, Until::Down(left), deadline).await?;
                        }
                    }
                }
                if let Some(o) = d.old_release_id {
                    old_f.values_mut().for_each(|n| *n = 0);
                    self.put(d.app_id, o, &old_f, &tags).await?;
                }
            }
        }
        Ok(())
    }

    async fn put(
        &self,
        app: Id,
        release: Id,
        processes: &BTreeMap<String, u32>,
        tags: &BTreeMap<String, StringMap>,
    ) -> Result<Formation, Failure> {
        let update = FormationUpdate {
            processes: processes.clone(),
            tags: tags.clone(),
        };
        self.store
            .put_formation(app, release, &update)
            .await
            .map_err(|e| Failure::plain(format!("cannot scale release {release}: {e}")))
    }

    /// Waits until the jobs of `release`'s `ptype` meet `until`. New jobs that fail count
    /// towards the failure threshold.
    async fn wait(
        &self,
        d: &Deployment,
        release: Id,
        ptype: &str,
        until: Until,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let mut notifier = self.store.event_notifier();
        loop {
            let jobs = release_jobs(&*self.store, d.app_id, release, ptype)
                .await
                .map_err(|e| Failure::plain(format!("cannot read jobs: {e}")))?;
            match until {
                Until::Up(n) | Until::UpOmni(n) => match up_or_failed(&jobs, n) {
                    Ok(true)
                        if until == Until::Up(n)
                            || jobs
                                .iter()
                                .all(|j| j.state.is_finished() || j.state == JobState::Up) =>
                    {
                        return Ok(());
                    }
                    Ok(true) => {}
                    Ok(false) => {}
                    Err(last) => {
                        return Err(Failure::plain(format!(
                            "{ptype} job failed to start: {}",
                            reason(last)
                        )));
                    }
                },
                Until::Down(n) => {
                    if jobs.iter().filter(|j| !j.state.is_finished()).count() <= n as usize {
                        return Ok(());
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let what = match until {
                    Until::Up(n) => format!("{n} {ptype} job(s) of the new release to be up"),
                    Until::UpOmni(n) => {
                        format!("{n} {ptype} job(s) per host of the new release to be up (omni)")
                    }
                    Until::Down(n) => {
                        format!("{ptype} jobs of the old release to stop (down to {n})")
                    }
                };
                return Err(Failure::plain(format!(
                    "timed out after {}s waiting for {what}",
                    d.deploy_timeout
                )));
            }
            let wait = self.cfg.poll.min(deadline - now);
            let _ = tokio::time::timeout(wait, notifier.changed()).await;
        }
    }

    /// Puts the old formation back and scales the new release to zero.
    async fn restore(&self, d: &Deployment) {
        let Some(old) = d.old_release_id else { return };
        let tags = match self.store.get_formation(d.app_id, old).await {
            Ok(f) => f.tags,
            Err(_) => Default::default(),
        };
        let zero: BTreeMap<String, u32> = d.processes.keys().map(|t| (t.clone(), 0)).collect();
        let mut back = d.processes.clone();
        if let Ok(f) = self.store.get_formation(d.app_id, old).await {
            for (t, n) in f.processes {
                back.entry(t).or_insert(n);
            }
        }
        let _ = self.put(d.app_id, old, &back, &tags).await;
        let _ = self.put(d.app_id, d.new_release_id, &zero, &tags).await;
    }
}

/// The jobs that count towards [`FAILURE_THRESHOLD`]: crashed, failed to start, or exited
/// with an error.
/// The jobs of `ptype` of release `release` of app `app`, as the store has them now.
pub(crate) async fn release_jobs(
    store: &dyn Store,
    app: Id,
    release: Id,
    ptype: &str,
) -> Result<Vec<Job>, slipway_store::StoreError> {
    Ok(store
        .list_jobs(app)
        .await?
        .into_iter()
        .filter(|j| j.release_id == release && j.process_type.as_deref() == Some(ptype))
        .collect())
}

/// Whether `n` of `jobs` are up (`Ok(true)`), or, once [`FAILURE_THRESHOLD`] of them have
/// failed, the last to fail (`Err`): the one rule both the executor and the first deploy wait by.
pub(crate) fn up_or_failed(jobs: &[Job], n: u32) -> Result<bool, &Job> {
    if jobs.iter().filter(|j| j.state == JobState::Up).count() >= n as usize {
        return Ok(true);
    }
    let failed = failed_jobs(jobs);
    match failed.len() >= FAILURE_THRESHOLD {
        true => Err(failed
            .into_iter()
            .max_by_key(|j| j.updated_at)
            .expect("failed jobs")),
        false => Ok(false),
    }
}

pub(crate) fn failed_jobs(jobs: &[Job]) -> Vec<&Job> {
    jobs.iter()
        .filter(|j| {
            matches!(j.state, JobState::Crashed | JobState::Failed)
                || (j.state == JobState::Down && j.exit_status.is_some_and(|c| c != 0))
        })
        .collect()
}

/// A failed job's reason in words: the host's error, else how it exited.
pub(crate) fn reason(j: &Job) -> String {
    if let Some(e) = &j.host_error {
        let e = e.strip_prefix("the job could not start: ").unwrap_or(e);
        return runc_message(e).unwrap_or_else(|| e.to_string());
    }
    match j.exit_status {
        Some(c) => format!("exited with status {c}"),
        None => "got down job event".into(),
    }
}

/// runc reports in logfmt (`time=… level=error msg="runc run failed: unable to start container
/// process: exec: \"foo\": …"`): users need only the message, and only its last part.
fn runc_message(e: &str) -> Option<String> {
    let start = e.rfind("msg=\"")? + 5;
    let mut msg = String::new();
    let mut chars = e[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => msg.extend(chars.next()),
            '"' => break,
            c => msg.push(c),
        }
    }
    const PREFIX: &str = "unable to start container process: ";
    Some(match msg.find(PREFIX) {
        Some(i) => msg[i + PREFIX.len()..].to_string(),
        None => msg,
    })
}

struct Failure {
    message: String,
    /// Put the old formation back (false once the new release is fully up).
    restore: bool,
}

impl Failure {
    fn plain(message: String) -> Failure {
        Failure {
            message,
            restore: true,
        }
    }
    fn keep(f: Failure) -> Failure {
        Failure {
            restore: false,
            ..f
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runc_errors_are_shown_as_their_message() {
        let e = r#"runc run failed: time="2026-11-22T03:31:08Z" level=error msg="runc run failed: unable to start container process: exec: \"foo\": executable file not found in $PATH""#;
        assert_eq!(
            super::runc_message(e).unwrap(),
            r#"exec: "foo": executable file not found in $PATH"#
        );
        assert_eq!(super::runc_message("plain"), None);
    }
}
