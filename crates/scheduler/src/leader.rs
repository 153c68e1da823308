//! Leader election for the singleton roles, through discovery's [`Registry`]: every candidate
//! registers an instance of the role's service (`slipway-scheduler`, `slipway-housekeeping`)
//! and leads while its instance is the oldest one — and only while its own lease surely holds
//! (the last successful heartbeat + TTL − a margin), so a leader that was paused or cut off
//! stops before another could take over. The leader's instance `index` is its **epoch**: a
//! newer leader always has a higher one (etcd's create revision; the local registry's indexes
//! continue from the clock), which is what hosts and the store fence with
//! (docs/scheduler.md).

use slipway_discovery::{Instance, NewInstance, Registration, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The scheduler's (and the deployer's) election.
pub const SCHEDULER_SERVICE: &str = "slipway-scheduler";
/// Housekeeping's election (blob collection).
pub const HOUSEKEEPING_SERVICE: &str = "slipway-housekeeping";

/// How long a leader's candidacy lives without a heartbeat (every third of it). Shorter than
/// discovery's 10 s so that a leader killed outright is replaced within 10 s with room to spare
/// (on etcd its lease ends 4–6 s after the kill, then the follower fences the hosts: 4.3 s
/// measured, against 7.3–9.8 s with the 10 s lease); a leader stalled for ~5 s stops acting and
/// campaigns again, which costs a takeover and nothing else.
pub const LEADER_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// What a candidate knows of its election.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// Some(epoch) while this candidate leads.
    pub epoch: Option<u64>,
    /// The leader as discovery last said (its meta has the leader's controller URL).
    pub leader: Option<Instance>,
    /// Why discovery could not be asked who leads, when its last answer was a failure (etcd
    /// without a quorum, a discovery process gone): the cluster can elect no one meanwhile.
    pub unreachable: Option<String>,
}

/// A candidacy: registered (and heartbeated) until dropped; [`Election::watch`] says whether
/// it leads.
pub struct Election {
    rx: watch::Receiver<Leadership>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Election {
    fn drop(&mut self) {
        // Drops the registration, which deregisters it: a follower takes over at once.
        self.task.abort();
    }
}

impl Election {
    /// Registers `id` as a candidate in `service` and follows who leads. Fails if discovery
    /// cannot register it.
    pub async fn campaign(
        registry: Arc<dyn Registry>,
        service: &str,
        id: &str,
        new: NewInstance,
        ttl: Duration,
    ) -> slipway_discovery::Result<Election> {
        let reg = Registration::start(registry.clone(), service, id, new, ttl).await?;
        let (tx, rx) = watch::channel(Leadership::default());
        let (service, id) = (service.to_string(), id.to_string());
        // Stop a fifth of the TTL before the lease could end, and look often enough that the
        // lease never runs past its deadline by more than a tick.
        let margin = ttl / 5;
        let tick = (ttl / 20).clamp(Duration::from_millis(20), Duration::from_millis(500));
        let task = tokio::spawn(async move {
            let reg = reg;
            let mut last_leader: Option<Instance> = None;
            let mut unreachable: Option<String> = None;
            loop {
                let deadline = reg.lease_deadline(margin);
                let asked = tokio::time::timeout(tick * 4, registry.leader(&service)).await;
                match asked {
                    Ok(Ok(leader)) => {
                        last_leader = leader;
                        unreachable = None;
                    }
                    // The first failure's text is kept while it lasts: watchers are woken by
                    // a change of state, not by each failed look.
                    Ok(Err(e)) => {
                        unreachable.get_or_insert_with(|| e.to_string());
                    }
                    Err(_) => {
                        unreachable.get_or_insert_with(|| {
                            format!("discovery did not answer within {:?}", tick * 4)
                        });
                    }
                }
                let mine = reg.instance();
                let leads = last_leader
                    .as_ref()
                    .is_some_and(|l| l.id == id && l.index == mine.index);
                let now = tokio::time::Instant::now();
                let state = Leadership {
                    epoch: (leads && now < deadline).then_some(mine.index),
                    leader: last_leader.clone(),
                    unreachable: unreachable.clone(),
                };
                tx.send_if_modified(|cur| {
                    let changed = *cur != state;
                    if changed {
                        if state.epoch != cur.epoch {
                            match state.epoch {
                                Some(e) => tracing::info!(%service, epoch = e, "leading"),
                                None => tracing::info!(%service, "not leading"),
                            }
                        }
                        *cur = state;
                    }
                    changed
                });
                tokio::time::sleep(tick).await;
            }
        });
        Ok(Election { rx, task })
    }

    /// Follows the candidacy's state; it reads "not leading" once the election is dropped.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    /// The epoch while this candidate leads.
    pub fn epoch(&self) -> Option<u64> {
        self.rx.borrow().epoch
    }
}

/// Runs `work` while `leadership` says this process leads: started (with the epoch) when it
/// becomes leader, aborted as soon as it is not any more. Returns when the election is gone.
pub async fn while_leading<F, Fut>(mut leadership: watch::Receiver<Leadership>, work: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running: Option<(u64, tokio::task::JoinHandle<()>)> = None;
    loop {
        let epoch = leadership.borrow_and_update().epoch;
        if running.as_ref().map(|r| r.0) != epoch {
            if let Some((_, task)) = running.take() {
                task.abort();
            }
            if let Some(e) = epoch {
                running = Some((e, tokio::spawn(work(e))));
            }
        }
        if leadership.changed().await.is_err() {
            if let Some((_, task)) = running.take() {
                task.abort();
            }
            return;
        }
    }
}
