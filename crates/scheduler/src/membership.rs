//! Host membership: every host agent registers itself in discovery (service `slipway-host`,
//! instance id = host id, address = its host API), and the scheduler follows that set. A host
//! that registers is followed (over HTTP, or in-process when it is the local one); a host whose
//! registration goes (expired: the agent or its machine died; removed: it shut down) is lost
//! and its jobs are replaced; a host that registers again rejoins.
//!
//! Level-triggered like the rest: every [`MEMBER_POLL`] the registered set is compared with
//! the followed one, so a missed event or a failed first contact costs a poll, never a host.

use crate::Scheduler;
use slipway_discovery::{Instance, Registry};
use slipway_host::HostApi;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The service hosts register in.
pub const HOST_SERVICE: &str = "slipway-host";
/// How often the registered hosts are compared with the followed ones.
pub const MEMBER_POLL: Duration = Duration::from_secs(1);

/// Makes the host API of a registered host (an `HttpHost` at its address, with the cluster's
/// credentials).
pub type Connect = Arc<dyn Fn(&Instance) -> Arc<dyn HostApi> + Send + Sync>;

/// Follows the hosts registered in `registry` until the returned task is aborted. `local`: the
/// host agent of this process (id and API), followed in-process when it registers. `on_new`
/// is called with every host API that is newly followed (the log aggregator, the discovery
/// bridge follow them too).
pub fn follow_members(
    registry: Arc<dyn Registry>,
    local: Option<(String, Arc<dyn HostApi>)>,
    connect: Connect,
    mut on_member: impl FnMut(Member) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut known: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(MEMBER_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(Ok(list)) =
                tokio::time::timeout(MEMBER_POLL * 5, registry.instances(HOST_SERVICE)).await
            else {
                // Discovery unreachable: nothing is concluded from silence.
                continue;
            };
            let now: HashSet<String> = list.iter().map(|i| i.id.clone()).collect();
            for gone in known.difference(&now).cloned().collect::<Vec<_>>() {
                known.remove(&gone);
                on_member(Member::Gone(gone));
            }
            for inst in list {
                if known.contains(&inst.id) {
                    continue;
                }
                known.insert(inst.id.clone());
                let api = match &local {
                    Some((id, api)) if *id == inst.id => api.clone(),
                    _ => connect(&inst),
                };
                on_member(Member::Up(inst, api));
            }
        }
    })
}

/// A change of the registered host set.
pub enum Member {
    /// A host registered (or this follower just started): its instance and its API.
    Up(Instance, Arc<dyn HostApi>),
    /// Its registration expired or was removed.
    Gone(String),
}

impl Scheduler {
    /// Follows the hosts registered in discovery (see the module doc): added when they
    /// register, lost when their registration goes. Hosts added otherwise ([`Scheduler::add_host`])
    /// are left alone.
    pub fn follow_hosts(
        &self,
        registry: Arc<dyn Registry>,
        local: Option<(String, Arc<dyn HostApi>)>,
        connect: Connect,
    ) -> tokio::task::JoinHandle<()> {
        let _ = self.inner.members.set(registry.clone());
        let sched = self.clone();
        // Registered hosts, each with the generation of its registration: one task per
        // registration keeps it followed (again after a loss by failed checks) until it goes.
        let members: Arc<std::sync::Mutex<HashMap<String, u64>>> = Default::default();
        let mut generation = 0u64;
        let keep_following = {
            let (sched, members) = (sched.clone(), members.clone());
            move |inst: Instance, api: Arc<dyn HostApi>, addition: u64| {
                let (sched, members) = (sched.clone(), members.clone());
                tokio::spawn(async move {
                    let mut warned = false;
                    while members.lock().expect("members").get(&inst.id) == Some(&addition) {
                        if !sched.follows(&inst.id) {
                            match sched.add_member(&inst, api.clone()).await {
                                Ok(()) => warned = false,
                                Err(e) if !warned => {
                                    warned = true;
                                    tracing::warn!(host = %inst.id, addr = %inst.addr, "cannot follow a registered host (retrying every {MEMBER_POLL:?}): {e:#}");
                                }
                                Err(_) => {}
                            }
                        }
                        tokio::time::sleep(MEMBER_POLL).await;
                    }
                });
            }
        };
        follow_members(registry, local, connect, move |m| match m {
            Member::Up(inst, api) => {
                generation += 1;
                members
                    .lock()
                    .expect("members")
                    .insert(inst.id.clone(), generation);
                keep_following(inst, api, generation);
            }
            Member::Gone(id) => {
                members.lock().expect("members").remove(&id);
                sched.lose_host(
                    &id,
                    &format!("host {id} was lost: its registration in discovery expired"),
                );
            }
        })
    }

    /// Adds a registered host after checking that the agent at its address is that host.
    async fn add_member(&self, inst: &Instance, api: Arc<dyn HostApi>) -> anyhow::Result<()> {
        let status = api.status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if status.id != inst.id {
            anyhow::bail!(
                "discovery says host {} is at {}, but the agent there is {}",
                inst.id,
                inst.addr,
                status.id
            );
        }
        let id = self.add_host(api).await?;
        tracing::info!(host = %id, addr = %inst.addr, "following a registered host");
        Ok(())
    }

    /// Waits (up to `timeout`) until every host registered now is followed: a new leader must
    /// not take the jobs of hosts it has not reached yet for lost.
    pub(crate) async fn await_members(&self, timeout: Duration) {
        let Some(registry) = self.inner.members.get().cloned() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let registered =
                tokio::time::timeout_at(deadline, registry.instances(HOST_SERVICE)).await;
            let Ok(Ok(list)) = registered else { return };
            let missing: Vec<String> = list
                .into_iter()
                .map(|i| i.id)
                .filter(|id| !self.follows(id))
                .collect();
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    ?missing,
                    "taking over without registered hosts it cannot reach yet"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the host is followed.
    pub fn follows(&self, host: &str) -> bool {
        self.lock().hosts.contains_key(host)
    }
}
