//! Leader fencing (docs/scheduler.md). With an election ([`Scheduler::elect`]) the scheduler
//! acts only under an epoch, its instance's index in `slipway-scheduler`:
//!
//! - it takes over only after announcing the epoch to every host it follows (a host then
//!   refuses older epochs, and answers once no call of an older epoch is in flight) and to the
//!   store (`leader_epochs`, only ever raised);
//! - every start and stop it sends carries the epoch, every job-row write is conditional on
//!   the stored epoch being its own;
//! - it stops acting when the election says it no longer leads (its lease deadline passed: a
//!   pause, a partition) or when a host or the store says a newer epoch was announced.
//!
//! Without an election (one scheduler: embedded mode, the simulations) it always acts and
//! sends no epoch.

use crate::{Election, SchedError, Scheduler};
use slipway_host::{HostApi, HostError};
use slipway_store::Store;
use slipway_types::Job;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The scheduler's row in the store's `leader_epochs`.
pub const SCHEDULER_ROLE: &str = "scheduler";

/// How long a host may take to acknowledge a new epoch before the takeover goes on without it
/// (an unreachable host is fenced by the first fenced call it gets instead).
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new leader waits for the registered hosts to be followed before it takes over.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether, and under which epoch, the scheduler acts.
#[derive(Default)]
pub(crate) struct Acting {
    elected: AtomicBool,
    epoch: std::sync::Mutex<Option<u64>>,
}

impl Acting {
    /// `Ok(None)`: no election, act unfenced; `Ok(Some(e))`: act under epoch `e`; `Err`: not
    /// the leader, do not act.
    pub(crate) fn epoch(&self) -> Result<Option<u64>, String> {
        if !self.elected.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match *self.epoch.lock().expect("epoch") {
            Some(e) => Ok(Some(e)),
            None => Err("this scheduler is not the leader".into()),
        }
    }

    /// Stops acting under `epoch` (if that is still the epoch acted under).
    pub(crate) fn stop(&self, epoch: u64, why: &str) {
        let mut cur = self.epoch.lock().expect("epoch");
        if *cur == Some(epoch) {
            tracing::warn!(epoch, "the scheduler stops acting: {why}");
            *cur = None;
        }
    }

    pub(crate) fn on_host_error(&self, epoch: u64, e: &HostError) {
        if e.is_fenced() {
            self.stop(epoch, &e.to_string());
        }
    }

    /// Writes job rows as the scheduler acts: plainly without an election, conditionally on
    /// the stored epoch with one, not at all while not leading. One bad row (e.g. its app was
    /// just deleted) does not lose the others.
    pub(crate) async fn write_rows(&self, store: &dyn Store, rows: &[Job]) {
        match self.epoch() {
            Ok(None) => {
                if store.put_jobs(rows).await.is_err() {
                    for job in rows {
                        if let Err(e) = store.put_job(job).await {
                            tracing::warn!(job = %job.id, "could not record job state: {e}");
                        }
                    }
                }
            }
            Ok(Some(epoch)) => match store.put_jobs_fenced(SCHEDULER_ROLE, epoch, rows).await {
                Ok(Some(_)) => {}
                Ok(None) => self.stop(epoch, "the store has a newer scheduler epoch"),
                Err(_) => {
                    for job in rows {
                        match store
                            .put_jobs_fenced(SCHEDULER_ROLE, epoch, std::slice::from_ref(job))
                            .await
                        {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                self.stop(epoch, "the store has a newer scheduler epoch");
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(job = %job.id, "could not record job state: {e}")
                            }
                        }
                    }
                }
            },
            Err(_) => tracing::debug!(
                rows = rows.len(),
                "not leading: job rows left to the leader"
            ),
        }
    }

    /// [`Acting::write_rows`] for a caller that wants to know: an error when nothing could be
    /// written because this scheduler does not lead (any more).
    pub(crate) async fn write_rows_now(
        &self,
        store: &dyn Store,
        rows: &[Job],
    ) -> anyhow::Result<()> {
        match self.epoch() {
            Ok(None) => {
                store.put_jobs(rows).await?;
            }
            Ok(Some(epoch)) => {
                if store
                    .put_jobs_fenced(SCHEDULER_ROLE, epoch, rows)
                    .await?
                    .is_none()
                {
                    self.stop(epoch, "the store has a newer scheduler epoch");
                    anyhow::bail!("a newer scheduler leads: job rows not written");
                }
            }
            Err(msg) => anyhow::bail!("{msg}: job rows not written"),
        }
        Ok(())
    }
}

impl Scheduler {
    /// Makes this scheduler one of several: it acts only while `election` says it leads, and
    /// fenced (see the module doc). Call before [`Scheduler::run`].
    pub fn elect(&self, election: Election) {
        let mut leadership = election.watch();
        if self.inner.election.set(election).is_err() {
            return;
        }
        self.inner.acting.elected.store(true, Ordering::SeqCst);
        let acting = self.inner.acting.clone();
        let sched = self.clone();
        // Stop acting the moment the election says so, not at the next round.
        tokio::spawn(async move {
            loop {
                let epoch = leadership.borrow_and_update().epoch;
                let cur = *acting.epoch.lock().expect("epoch");
                if let Some(c) = cur.filter(|c| epoch != Some(*c)) {
                    acting.stop(
                        c,
                        "it no longer leads the election (lease passed or a newer leader)",
                    );
                }
                if epoch.is_some() && epoch != cur {
                    sched.wake();
                }
                if leadership.changed().await.is_err() {
                    if let Some(c) = cur {
                        acting.stop(c, "its election ended");
                    }
                    return;
                }
            }
        });
    }

    /// Makes this scheduler act on nothing (no start, stop or job row) until an election it
    /// gets later ([`Scheduler::elect`]) says it leads: call it before it follows any host
    /// when it will be one of several, so that what it learns meanwhile is not written.
    pub fn await_election(&self) {
        self.inner.acting.elected.store(true, Ordering::SeqCst);
    }

    /// Whether this scheduler acts now (always without an election).
    pub fn is_acting(&self) -> bool {
        self.inner.acting.epoch().is_ok()
    }

    /// The epoch this scheduler acts under (None: no election, or not leading).
    pub fn epoch(&self) -> Option<u64> {
        self.inner.acting.epoch().ok().flatten()
    }

    /// Why no scheduler can lead now, seen from here: this one does not lead and discovery
    /// (etcd) cannot be asked who does — e.g. etcd lost its quorum. `None` without an
    /// election, while leading, or while discovery answers.
    pub fn coordination_unavailable(&self) -> Option<String> {
        let election = self.inner.election.get()?;
        let state = election.watch().borrow().clone();
        match state.epoch {
            Some(_) => None,
            None => state.unreachable,
        }
    }

    /// The leader's controller URL (its registration's `url` meta), when another leads.
    pub fn leader_url(&self) -> Option<String> {
        let election = self.inner.election.get()?;
        let l = election.watch().borrow().leader.clone()?;
        l.meta.get("url").cloned()
    }

    /// Refuses what only the leader may do (start, stop) when this scheduler does not lead.
    pub(crate) fn ensure_leader(&self) -> Result<(), SchedError> {
        self.inner.acting.epoch().map(|_| ()).map_err(|msg| {
            SchedError::Unavailable(match self.leader_url() {
                Some(url) => format!("{msg}: the leader's controller is {url}, retry there"),
                None => format!("{msg} and no leader is known yet: retry in a few seconds"),
            })
        })
    }

    /// Whether to run a round: always without an election; with one, while leading, after
    /// taking over under the current epoch.
    pub(crate) async fn lead(&self) -> bool {
        let Some(election) = self.inner.election.get() else {
            return true;
        };
        let want = election.epoch();
        let cur = *self.inner.acting.epoch.lock().expect("epoch");
        match want {
            None => false,
            Some(e) if cur == Some(e) => true,
            Some(e) => self.take_over(e).await,
        }
    }

    /// Announces `epoch` to every host and to the store, catches up with what the hosts run,
    /// then acts: its rows rewritten from what it saw, rows no host reports marked down.
    async fn take_over(&self, epoch: u64) -> bool {
        tracing::info!(epoch, "taking over as the scheduler leader");
        self.await_members(MEMBERS_TIMEOUT).await;
        let hosts: Vec<(String, Arc<dyn HostApi>)> = self
            .lock()
            .hosts
            .iter()
            .map(|(id, h)| (id.clone(), h.api.clone()))
            .collect();
        for (id, api) in &hosts {
            match tokio::time::timeout(FENCE_TIMEOUT, api.fence(epoch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_fenced() => {
                    tracing::warn!(host = %id, epoch, "not taking over: {e}");
                    return false;
                }
                Ok(Err(e)) => tracing::warn!(host = %id, "cannot announce epoch {epoch}: {e}"),
                Err(_) => tracing::warn!(host = %id, "announcing epoch {epoch} timed out"),
            }
        }
        match self.inner.store.announce_epoch(SCHEDULER_ROLE, epoch).await {
            Ok(stored) if stored == epoch => {}
            Ok(stored) => {
                tracing::warn!(
                    epoch,
                    stored,
                    "not taking over: the store has a newer scheduler epoch"
                );
                return false;
            }
            Err(e) => {
                tracing::warn!(
                    epoch,
                    "cannot announce the epoch to the store (retrying): {e}"
                );
                return false;
            }
        }
        for (id, api) in &hosts {
            self.resync_host(id, api).await;
        }
        if self.inner.election.get().and_then(Election::epoch) != Some(epoch) {
            return false;
        }
        *self.inner.acting.epoch.lock().expect("epoch") = Some(epoch);
        let rows: Vec<Job> = self.lock().jobs.values().map(|t| t.job.clone()).collect();
        for row in rows {
            self.send(row);
        }
        match self.mark_lost_rows().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("marked {n} job row(s) no host reports as down"),
            Err(e) => tracing::warn!("cannot check job rows against the hosts: {e:#}"),
        }
        tracing::info!(epoch, "acting as the scheduler leader");
        true
    }
}
