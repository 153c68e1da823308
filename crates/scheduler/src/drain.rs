//! Host drain (`slipway host drain HOST`): the operator takes a host out before maintenance.
//! A drained host gets no new job, and each of its formation jobs is moved: the replacement
//! starts elsewhere, and the old job stops only once enough replacements serve (up and in the
//! routers; [`crate::plan::plan`]), out of the routers and drained of its requests before
//! SIGTERM like any stop ([`crate::TrafficGate`]). Omni jobs are not moved: they stop.
//!
//! The drained set is the cluster's, not one scheduler's: it is kept in a [`DrainBook`] (etcd
//! in a cluster, a file beside a lone controller), so a new leader, or a restarted one, keeps
//! it. Every scheduler re-reads it every [`DRAIN_POLL`], so a drain asked of any controller
//! reaches the leader within a second.

use crate::{SchedError, Scheduler};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the drained set is re-read from its book.
pub const DRAIN_POLL: Duration = Duration::from_secs(1);

/// Where the drained hosts are kept.
#[async_trait::async_trait]
pub trait DrainBook: Send + Sync + 'static {
    async fn drained(&self) -> anyhow::Result<BTreeSet<String>>;
    async fn set_drained(&self, host: &str, drained: bool) -> anyhow::Result<()>;
}

/// A book in memory: for tests and a scheduler with no persistent place.
#[derive(Default)]
pub struct MemoryDrainBook(Mutex<BTreeSet<String>>);

#[async_trait::async_trait]
impl DrainBook for MemoryDrainBook {
    async fn drained(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self.0.lock().expect("drained").clone())
    }
    async fn set_drained(&self, host: &str, drained: bool) -> anyhow::Result<()> {
        let mut set = self.0.lock().expect("drained");
        match drained {
            true => set.insert(host.to_string()),
            false => set.remove(host),
        };
        Ok(())
    }
}

/// Where a drain stands (`GET /hosts/{id}/drain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainProgress {
    pub drained: bool,
    /// Formation jobs still on the host (not finished): 0 once every job moved.
    pub jobs_left: usize,
}

impl Scheduler {
    /// Keeps the drained set in `book` (set once, before the scheduler runs): read now, then
    /// every [`DRAIN_POLL`]; a change wakes a round.
    pub async fn set_drain_book(&self, book: Arc<dyn DrainBook>) {
        if self.inner.drain_book.set(book.clone()).is_err() {
            return;
        }
        if let Ok(set) = book.drained().await {
            *self.inner.drained.lock().expect("drained") = set;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(DRAIN_POLL).await;
                let Some(inner) = weak.upgrade() else { return };
                let Ok(Ok(set)) = tokio::time::timeout(DRAIN_POLL * 3, book.drained()).await else {
                    // Unreadable: the last set read stands.
                    continue;
                };
                let changed = {
                    let mut cur = inner.drained.lock().expect("drained");
                    let changed = *cur != set;
                    *cur = set;
                    changed
                };
                if changed {
                    Scheduler { inner }.wake();
                }
            }
        });
    }

    /// The drained hosts as last read.
    pub fn drained_hosts(&self) -> BTreeSet<String> {
        self.inner.drained.lock().expect("drained").clone()
    }

    /// Drains (`true`) or undrains a host. `NotFound` for a host this scheduler neither
    /// follows nor has drained.
    pub async fn set_drained(&self, host: &str, drained: bool) -> Result<(), SchedError> {
        if !self.follows(host) && !self.drained_hosts().contains(host) {
            return Err(SchedError::NotFound(format!(
                "host {host} not found: `slipway host list` shows the cluster's hosts"
            )));
        }
        let book = self
            .inner
            .drain_book
            .get_or_init(|| Arc::new(MemoryDrainBook::default()))
            .clone();
        book.set_drained(host, drained).await.map_err(|e| {
            SchedError::Unavailable(format!("cannot record the drain of host {host}: {e:#}"))
        })?;
        {
            let mut set = self.inner.drained.lock().expect("drained");
            match drained {
                true => set.insert(host.to_string()),
                false => set.remove(host),
            };
        }
        tracing::info!(
            host,
            "host {}",
            if drained { "drained" } else { "undrained" }
        );
        self.wake();
        Ok(())
    }

    /// Where the drain of `host` stands: `NotFound` as [`Scheduler::set_drained`].
    pub fn drain_progress(&self, host: &str) -> Result<DrainProgress, SchedError> {
        let drained = self.drained_hosts().contains(host);
        if !drained && !self.follows(host) {
            return Err(SchedError::NotFound(format!("host {host} not found")));
        }
        let jobs_left = self
            .lock()
            .jobs
            .values()
            .filter(|t| {
                t.key.is_some()
                    && t.job.host_id.as_deref() == Some(host)
                    && !t.job.state.is_finished()
            })
            .count();
        Ok(DrainProgress { drained, jobs_left })
    }
}
