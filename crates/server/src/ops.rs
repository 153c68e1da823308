//! The operator's views of the cluster that the controller role serves (`GET /hosts`,
//! `GET /cluster/status`): the scheduler's hosts with how long they have been in their state,
//! the etcd members each asked on its own, the leaders of the singleton roles and the
//! controllers and routers in discovery. Read-only; a part that cannot be read becomes a
//! warning in the answer, never an error of the whole status (an operator asks exactly when
//! something is broken).

use slipway_discovery::Registry;
use slipway_scheduler::plan::HostView;
use slipway_types::{
    ClusterStatus, Coordination, EtcdMember, HostInfo, HostState, Job, JobState, RoleLeader,
    ServiceMember, StringMap, Timestamp,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Discovery's service of the controllers (each registers itself; see `controller::register`).
pub const CONTROLLER_SERVICE: &str = "slipway-controller";
/// Discovery's service of the routers.
pub const ROUTER_SERVICE: &str = "slipway-router";
/// Discovery's service of the host agents (address and tags of each).
pub const HOST_SERVICE: &str = "slipway-host";
/// The singleton roles and the discovery service their candidates campaign in.
pub const SINGLETON_ROLES: [(&str, &str); 2] = [
    ("scheduler", "slipway-scheduler"),
    ("housekeeping", "slipway-housekeeping"),
];
/// How long one etcd member or one discovery read may take before it counts as unanswered:
/// `cluster status` answers within about this long even with members down.
const PART_TIMEOUT: Duration = Duration::from_secs(3);
/// Lost hosts remembered (oldest forgotten first), so a cluster that churns through host ids
/// does not grow this without bound.
const MAX_LOST: usize = 256;

/// A host as last seen, and since when it is in its state.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    state: HostState,
    since: Timestamp,
    tags: StringMap,
}

pub struct Ops {
    registry: Option<Arc<dyn Registry>>,
    etcd: Option<slipway_etcd::Client>,
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl Ops {
    pub fn new(registry: Option<Arc<dyn Registry>>, etcd: Option<slipway_etcd::Client>) -> Ops {
        Ops {
            registry,
            etcd,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records the scheduler's host set now: a new state starts its `since`; a host that left
    /// the set is lost.
    pub fn observe(&self, hosts: &[HostView]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        observe(&mut seen, hosts, Timestamp::now());
    }

    /// `GET /hosts`: every host seen, its running jobs counted from `jobs`, its API address
    /// from its `slipway-host` registration when it has one.
    pub async fn hosts(&self, jobs: &[Job]) -> Vec<HostInfo> {
        let addrs: HashMap<String, String> = match &self.registry {
            Some(r) => match tokio::time::timeout(PART_TIMEOUT, r.instances(HOST_SERVICE)).await {
                Ok(Ok(list)) => list.into_iter().map(|i| (i.id, i.addr)).collect(),
                Ok(Err(e)) => {
                    tracing::warn!("host list: cannot read {HOST_SERVICE} in discovery: {e}");
                    HashMap::new()
                }
                Err(_) => HashMap::new(),
            },
            None => HashMap::new(),
        };
        let mut running: HashMap<&str, usize> = HashMap::new();
        for j in jobs {
            if let (Some(h), true) = (&j.host_id, is_running(j.state)) {
                *running.entry(h.as_str()).or_default() += 1;
            }
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .map(|(id, s)| HostInfo {
                id: id.clone(),
                state: s.state,
                addr: addrs.get(id).cloned(),
                tags: s.tags.clone(),
                jobs: match s.state {
                    HostState::Lost => 0,
                    _ => running.get(id.as_str()).copied().unwrap_or(0),
                },
                since: s.since,
            })
            .collect()
    }

    /// Layer 0's part of `GET /cluster/status` (`hosts`: how many the scheduler follows).
    pub async fn status(&self, hosts: usize) -> ClusterStatus {
        let mut status = ClusterStatus {
            coordination: match (&self.etcd, &self.registry) {
                (Some(_), _) => Coordination::Etcd,
                (None, Some(_)) => Coordination::InProcess,
                (None, None) => Coordination::None,
            },
            hosts,
            ..ClusterStatus::default()
        };
        // Every part at once: with etcd down, the answer takes one timeout, not one per part.
        let etcd = async {
            match &self.etcd {
                Some(etcd) => Some(etcd_members(etcd).await),
                None => None,
            }
        };
        let discovery = async {
            match &self.registry {
                Some(r) => Some(discovery_parts(r.as_ref()).await),
                None => None,
            }
        };
        let (etcd, discovery) = tokio::join!(etcd, discovery);
        if let Some((members, error)) = etcd {
            status.etcd = members;
            status.etcd_error = error;
        }
        match discovery {
            Some(d) => {
                status.leaders = d.leaders;
                status.controllers = d.controllers;
                status.routers = d.routers;
                status.warnings.extend(d.warnings);
            }
            None => status.warnings.push(
                "this controller has no discovery (neither the discovery role nor --etcd): role leaders, controllers and routers are unknown".into(),
            ),
        }
        status
    }
}

/// What `cluster status` reads in discovery.
struct DiscoveryParts {
    leaders: Vec<RoleLeader>,
    controllers: Vec<ServiceMember>,
    routers: Vec<ServiceMember>,
    warnings: Vec<String>,
}

/// The role leaders, controllers and routers, read at once; a read that fails is a warning.
async fn discovery_parts(registry: &dyn Registry) -> DiscoveryParts {
    let leaders = SINGLETON_ROLES.map(|(role, service)| async move {
        (role, service, read(service, registry.leader(service)).await)
    });
    let lists = [CONTROLLER_SERVICE, ROUTER_SERVICE]
        .map(|service| async move { read(service, registry.instances(service)).await });
    let (leaders, [controllers, routers]) =
        tokio::join!(futures_util::future::join_all(leaders), async {
            futures_util::future::join_all(lists)
                .await
                .try_into()
                .expect("two reads")
        },);
    let mut warnings = Vec::new();
    let mut list = |r: Result<Vec<slipway_discovery::Instance>, String>| match r {
        Ok(l) => l.into_iter().map(member).collect(),
        Err(w) => {
            warnings.push(w);
            Vec::new()
        }
    };
    let (controllers, routers) = (list(controllers), list(routers));
    let leaders = leaders
        .into_iter()
        .map(|(role, service, r)| RoleLeader {
            role: role.into(),
            service: service.into(),
            leader: match r {
                Ok(l) => l.map(member),
                Err(w) => {
                    warnings.push(w);
                    None
                }
            },
        })
        .collect();
    DiscoveryParts {
        leaders,
        controllers,
        routers,
        warnings,
    }
}

/// A discovery read within [`PART_TIMEOUT`], its failure as a warning line.
async fn read<T>(
    service: &str,
    f: impl std::future::Future<Output = slipway_discovery::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(PART_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("cannot read {service} in discovery: {e}")),
        Err(_) => Err(format!(
            "cannot read {service} in discovery: no answer within {PART_TIMEOUT:?}"
        )),
    }
}

fn member(i: slipway_discovery::Instance) -> ServiceMember {
    ServiceMember {
        url: i.meta.get("url").cloned(),
        id: i.id,
        addr: i.addr,
    }
}

/// A job that occupies its host.
fn is_running(s: JobState) -> bool {
    matches!(s, JobState::Starting | JobState::Up | JobState::Stopping)
}

/// See [`Ops::observe`]; pure, for the tests.
fn observe(seen: &mut BTreeMap<String, Seen>, hosts: &[HostView], now: Timestamp) {
    let current: HashSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    for h in hosts {
        let state = match (h.shutting_down, h.drained) {
            (true, _) => HostState::ShuttingDown,
            (false, true) => HostState::Drained,
            (false, false) => HostState::Up,
        };
        match seen.get_mut(&h.id) {
            Some(s) if s.state == state => s.tags = h.tags.clone(),
            _ => {
                seen.insert(
                    h.id.clone(),
                    Seen {
                        state,
                        since: now,
                        tags: h.tags.clone(),
                    },
                );
            }
        }
    }
    for (id, s) in seen.iter_mut() {
        if s.state != HostState::Lost && !current.contains(id.as_str()) {
            s.state = HostState::Lost;
            s.since = now;
        }
    }
    let mut lost: Vec<(Timestamp, String)> = seen
        .iter()
        .filter(|(_, s)| s.state == HostState::Lost)
        .map(|(id, s)| (s.since, id.clone()))
        .collect();
    if lost.len() > MAX_LOST {
        lost.sort();
        for (_, id) in &lost[..lost.len() - MAX_LOST] {
            seen.remove(id);
        }
    }
}

/// Every etcd member with its own status: the member list (from any member that answers),
/// then each member asked alone, all at once. Without a list (no quorum, say) the URLs this
/// process was given stand in, and the error says why.
pub(crate) async fn etcd_members(etcd: &slipway_etcd::Client) -> (Vec<EtcdMember>, Option<String>) {
    let (listed, error) = match tokio::time::timeout(PART_TIMEOUT, etcd.member_list()).await {
        Ok(Ok(members)) => (
            members
                .into_iter()
                .map(|m| {
                    (
                        Some(format!("{:x}", m.id as u64)),
                        m.name,
                        m.client_urls.first().cloned(),
                    )
                })
                .collect::<Vec<_>>(),
            None,
        ),
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no member answered within {PART_TIMEOUT:?}"),
            };
            let given = etcd
                .endpoints()
                .iter()
                .map(|u| (None, String::new(), Some(u.clone())));
            (
                given.collect(),
                Some(format!(
                    "cannot list the etcd members: {why}; showing the --etcd URLs"
                )),
            )
        }
    };
    let asks = listed.into_iter().map(|(id, name, url)| async move {
        let Some(url) = url else {
            return EtcdMember {
                id: id.unwrap_or_default(),
                name,
                url: String::new(),
                healthy: false,
                leader: false,
                version: None,
                error: Some("it has no client URL yet (added but not started)".into()),
            };
        };
        let answer = tokio::time::timeout(PART_TIMEOUT, etcd.status_of(&url)).await;
        let mut m = EtcdMember {
            id: id.unwrap_or_default(),
            name,
            url,
            healthy: false,
            leader: false,
            version: None,
            error: None,
        };
        match answer {
            Ok(Ok(st)) => {
                if m.id.is_empty() {
                    m.id = format!("{:x}", st.header.member_id as u64);
                }
                m.version = Some(st.version);
                m.leader = st.leader != 0 && st.leader == st.header.member_id;
                m.healthy = st.leader != 0 && st.errors.is_empty();
                if st.leader == 0 {
                    m.error = Some("it sees no raft leader".into());
                } else if !st.errors.is_empty() {
                    m.error = Some(st.errors.join("; "));
                }
            }
            Ok(Err(e)) => m.error = Some(e.to_string()),
            Err(_) => m.error = Some(format!("no answer within {PART_TIMEOUT:?}")),
        }
        m
    });
    (futures_util::future::join_all(asks).await, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, shutting_down: bool) -> HostView {
        HostView {
            id: id.into(),
            tags: [("disk".to_string(), "ssd".to_string())].into(),
            shutting_down,
            drained: false,
            unreachable: false,
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn a_host_keeps_its_since_until_its_state_changes_and_a_vanished_one_is_lost() {
        let mut seen = BTreeMap::new();
        let (t0, t1, t2) = (
            at("2026-01-01T00:00:00.000000Z"),
            at("2026-01-01T00:01:00.000000Z"),
            at("2026-01-01T00:02:00.000000Z"),
        );
        observe(&mut seen, &[host("a", false), host("b", false)], t0);
        observe(&mut seen, &[host("a", false), host("b", true)], t1);
        assert_eq!(seen["a"].state, HostState::Up);
        assert_eq!(seen["a"].since, t0, "unchanged state keeps its since");
        assert_eq!(seen["b"].state, HostState::ShuttingDown);
        assert_eq!(seen["b"].since, t1);
        observe(&mut seen, &[host("a", false)], t2);
        assert_eq!(seen["b"].state, HostState::Lost);
        assert_eq!(seen["b"].since, t2);
        observe(
            &mut seen,
            &[host("a", false)],
            at("2026-01-01T00:03:00.000000Z"),
        );
        assert_eq!(seen["b"].since, t2, "lost stays lost from when it was lost");
        observe(&mut seen, &[host("a", false), host("b", false)], t2);
        assert_eq!(seen["b"].state, HostState::Up, "a lost host can come back");
    }

    #[test]
    fn lost_hosts_are_bounded() {
        let mut seen = BTreeMap::new();
        let t = at("2026-01-01T00:00:00.000000Z");
        let many: Vec<HostView> = (0..MAX_LOST + 10)
            .map(|i| host(&format!("h{i}"), false))
            .collect();
        observe(&mut seen, &many, t);
        observe(&mut seen, &[], at("2026-01-01T00:00:01.000000Z"));
        assert_eq!(seen.len(), MAX_LOST);
        assert!(seen.values().all(|s| s.state == HostState::Lost));
    }

    #[tokio::test]
    async fn every_etcd_member_is_asked_and_a_stopped_one_is_unhealthy() {
        let Some(mut etcd) = slipway_testkit::etcd::etcd_cluster(3) else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let (members, error) = etcd_members(&client).await;
        assert_eq!(error, None);
        assert_eq!(members.len(), 3, "{members:?}");
        assert!(members.iter().all(|m| m.healthy), "{members:?}");
        assert_eq!(
            members.iter().filter(|m| m.leader).count(),
            1,
            "{members:?}"
        );
        etcd.stop_member(2);
        let stopped = etcd.client_url(2);
        let (members, error) = etcd_members(&client).await;
        assert_eq!(error, None, "two of three still list the members");
        let down = members.iter().find(|m| m.url == stopped).expect("listed");
        assert!(!down.healthy && !down.leader, "{down:?}");
        assert!(down.error.is_some(), "{down:?}");
        assert_eq!(
            members.iter().filter(|m| m.healthy).count(),
            2,
            "{members:?}"
        );
    }

    #[tokio::test]
    async fn with_every_etcd_member_down_the_status_still_answers_within_seconds() {
        let Some(mut etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let ops = Ops::new(Some(crate::discovery::etcd_registry(&client)), Some(client));
        let st = ops.status(0).await;
        assert_eq!(st.coordination, Coordination::Etcd);
        assert!(st.warnings.is_empty(), "{st:?}");
        assert_eq!(st.leaders.len(), SINGLETON_ROLES.len());
        etcd.stop_member(0);
        let t0 = std::time::Instant::now();
        let st = ops.status(0).await;
        assert!(t0.elapsed() < PART_TIMEOUT * 2, "took {:?}", t0.elapsed());
        assert!(st.etcd_error.is_some(), "{st:?}");
        assert_eq!(st.etcd.len(), 1, "the --etcd URL stands in: {st:?}");
        assert!(!st.etcd[0].healthy && st.etcd[0].error.is_some(), "{st:?}");
        assert!(!st.warnings.is_empty(), "discovery unread: {st:?}");
    }
}
