//! Host membership: every host agent registers itself in discovery (service `slipway-host`,
//! instance id = host id, address = its host API), and the scheduler follows that set. A host
//! that registers is followed (over HTTP, or in-process when it is the local one); a host whose
//! registration goes (expired: the agent or its machine died; removed: it shut down) is lost
//! and its jobs are replaced; a host that registers again rejoins.
//!
//! Level-triggered like the rest: every [`MEMBER_POLL`] the registered set is compared with
//! the followed one, so a missed event or a failed first contact costs a poll, never a host.
//!
//! A registration is its id *and* its index and address: a host whose process restarted
//! registers the same id again, either after its old registration expired (a new index,
//! possibly between two polls, so the gap is never seen) or while it still lived (etcd: the
//! new process renews the old lease and rewrites the address). Either way it is a new agent,
//! most likely at a new address, and it is followed anew ([`Member::Up`] again) rather than
//! through the API of the process that died.

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
        // Followed registrations: id -> (index, address).
        let mut known: HashMap<String, (u64, String)> = HashMap::new();
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
            let now: HashSet<&str> = list.iter().map(|i| i.id.as_str()).collect();
            let gone: Vec<String> = known
                .keys()
                .filter(|id| !now.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                known.remove(&id);
                on_member(Member::Gone(id));
            }
            for inst in list {
                let registration = (inst.index, inst.addr.clone());
                if known.get(&inst.id) == Some(&registration) {
                    continue;
                }
                known.insert(inst.id.clone(), registration);
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
    /// A host registered (or this follower just started), or registered again (a new index or
    /// address: its process restarted): its instance and its API, which replaces any other.
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
            move |inst: Instance, api: Arc<dyn HostApi>, addition: u64, again: bool| {
                let (sched, members) = (sched.clone(), members.clone());
                tokio::spawn(async move {
                    let mut warned = false;
                    // A host that registered again is followed anew even while the entry of
                    // its previous process is still there: that one's API is a dead address.
                    let mut replace = again;
                    while members.lock().expect("members").get(&inst.id) == Some(&addition) {
                        if replace || !sched.follows(&inst.id) {
                            match sched.add_member(&inst, api.clone()).await {
                                Ok(()) => {
                                    warned = false;
                                    replace = false;
                                }
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
                let again = members
                    .lock()
                    .expect("members")
                    .insert(inst.id.clone(), generation)
                    .is_some();
                if again {
                    tracing::info!(host = %inst.id, addr = %inst.addr, "a followed host registered again (its process restarted): following the new one");
                }
                keep_following(inst, api, generation, again);
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

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_discovery::{LocalRegistry, NewInstance};

    fn at(addr: &str) -> NewInstance {
        NewInstance {
            addr: addr.into(),
            ..Default::default()
        }
    }

    /// Follows `registry`, sending every change as `(id, Some(addr))` or `(id, None)`.
    fn changes(
        registry: Arc<dyn Registry>,
    ) -> tokio::sync::mpsc::UnboundedReceiver<(String, Option<String>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connect: Connect = Arc::new(|i: &Instance| -> Arc<dyn HostApi> {
            Arc::new(slipway_host::client::HttpHost::new(
                &format!("http://{}", i.addr),
                "t",
            ))
        });
        follow_members(registry, None, connect, move |m| {
            let _ = tx.send(match m {
                Member::Up(i, _) => (i.id, Some(i.addr)),
                Member::Gone(id) => (id, None),
            });
        });
        rx
    }

    async fn next(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Option<String>)>,
    ) -> (String, Option<String>) {
        tokio::time::timeout(MEMBER_POLL * 5, rx.recv())
            .await
            .expect("a membership change within 5 polls")
            .expect("the follower runs")
    }

    /// The flake this fixes (CI, under load): a killed host restarted with the same id was
    /// never followed again, because the follower knew the id and kept the dead process's API.
    #[tokio::test]
    async fn a_host_that_registers_again_at_a_new_address_is_followed_anew() {
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
        registry
            .register(HOST_SERVICE, "h1", &at("127.0.0.1:1001"))
            .await
            .unwrap();
        let mut rx = changes(registry.clone());
        assert_eq!(
            next(&mut rx).await,
            ("h1".into(), Some("127.0.0.1:1001".into()))
        );
        // Its process restarted while the registration lived: same id, same index, new address.
        registry
            .register(HOST_SERVICE, "h1", &at("127.0.0.1:1002"))
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await,
            ("h1".into(), Some("127.0.0.1:1002".into()))
        );
        // A heartbeat of the same registration changes nothing.
        registry
            .register(HOST_SERVICE, "h1", &at("127.0.0.1:1002"))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(MEMBER_POLL * 3, rx.recv())
                .await
                .is_err(),
            "a heartbeat was taken for a new registration"
        );
    }

    #[tokio::test]
    async fn a_host_that_expired_and_registered_again_between_two_polls_is_followed_anew() {
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(Duration::from_secs(10)));
        let first = registry
            .register(HOST_SERVICE, "h1", &at("127.0.0.1:1001"))
            .await
            .unwrap();
        let mut rx = changes(registry.clone());
        assert_eq!(next(&mut rx).await.1.as_deref(), Some("127.0.0.1:1001"));
        // Gone and back (even at the same address) faster than a poll: a new registration.
        registry.deregister(HOST_SERVICE, "h1").await.unwrap();
        let second = registry
            .register(HOST_SERVICE, "h1", &at("127.0.0.1:1001"))
            .await
            .unwrap();
        assert_ne!(first.index, second.index);
        let mut seen = next(&mut rx).await;
        if seen.1.is_none() {
            // The poll fell between the two: the loss was seen too.
            seen = next(&mut rx).await;
        }
        assert_eq!(seen, ("h1".into(), Some("127.0.0.1:1001".into())));
    }
}
