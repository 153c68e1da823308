//! Fencing of a partitioned host: a host agent cut off from etcd for longer than its lease
//! stops its jobs, so that it does not go on serving (stale data, leader locks its jobs hold)
//! after the scheduler replaced them elsewhere.
//!
//! Timeline, with the host's registration TTL of 10 s ([`slipway_discovery::DEFAULT_TTL`]):
//! its last heartbeat at T; its lease lapses at T + 10 s, when etcd drops its registration
//! (and the discovery bridge its jobs'), the routers stop sending to it and the scheduler
//! replaces its jobs on other hosts (up a second or two later). At T + 10 s + `--fence-grace`
//! (default 5 s: etcd's own expiry may lag by up to half a second, and the replacements get a
//! few seconds to come up first), the host stops its jobs (SIGTERM, like any stop).
//!
//! Cut off from etcd is not the same as etcd down: when etcd lost its quorum for everyone, or
//! its only member is stopped (a restart, an upgrade: the README's one-member cluster), no
//! scheduler can replace anything, and the cluster's running jobs must keep serving. So the
//! host fences only when it is **isolated**: no etcd member answers at all (a member that
//! answers "no leader" means the coordination is lost for the whole cluster, or that the
//! host's link to a majority is: the second case is not fenced, see docs/scheduler.md), *and*
//! fewer than half of the other hosts answer a TCP connect on their registered host API
//! address (the hosts last listed in `slipway-host`; etcd dead for everyone leaves them
//! reachable, while a host or a group of hosts cut off reaches at most a minority), *and* there
//! is another host at all (alone, nobody could have taken its jobs over). Without `--etcd`
//! (one discovery process) nothing is fenced: there is no telling a partition from a
//! discovery restart.
//!
//! When the link comes back, the registration's heartbeat registers the host again (a new
//! registration: the scheduler follows it anew) and the host reports its stopped jobs as
//! finished: nothing it ran before comes back, and no job runs twice.

use slipway_discovery::{Registration, Registry};
use slipway_host::HostApi;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the lease is looked at.
const CHECK: Duration = Duration::from_secs(1);
/// How often (in checks, while the lease holds) the other hosts' addresses are listed again.
const PEERS_EVERY: u32 = 5;
/// How long a connect to another host may take before it counts as no answer.
const PEER_CONNECT: Duration = Duration::from_secs(1);
/// At most this many other hosts are tried (concurrently) when deciding.
const MAX_PEERS: usize = 16;

/// What one look decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Nothing,
    /// Stop every job now.
    Fence,
    /// The lease is renewed after a fence: the host is back.
    Rejoined,
}

/// The fencing decision, pure (fed the time and what was observed).
#[derive(Debug)]
pub(crate) struct FenceClock {
    grace: Duration,
    /// Since when the lease has lapsed with no etcd member answering.
    cut_since: Option<Instant>,
    fenced: bool,
}

impl FenceClock {
    pub(crate) fn new(grace: Duration) -> FenceClock {
        FenceClock {
            grace,
            cut_since: None,
            fenced: false,
        }
    }

    /// `lease_ok`: the registration is within its lease; `connected`: some etcd member or
    /// another host answered (asked only when the lease lapsed): not isolated.
    pub(crate) fn step(&mut self, now: Instant, lease_ok: bool, connected: bool) -> Step {
        if lease_ok {
            self.cut_since = None;
            return match std::mem::take(&mut self.fenced) {
                true => Step::Rejoined,
                false => Step::Nothing,
            };
        }
        if connected {
            // The coordination is down for everyone: nobody replaced these jobs.
            self.cut_since = None;
            return Step::Nothing;
        }
        let since = *self.cut_since.get_or_insert(now);
        if !self.fenced && now.duration_since(since) >= self.grace {
            self.fenced = true;
            return Step::Fence;
        }
        Step::Nothing
    }
}

/// The other hosts of the cluster, as last listed in `slipway-host` (not this one).
pub struct Peers {
    pub registry: Arc<dyn Registry>,
    /// This host's id (left out of the list).
    pub own: String,
}

impl Peers {
    /// The other hosts' registered API addresses; `None` when discovery cannot be read now.
    async fn list(&self) -> Option<Vec<SocketAddr>> {
        let listed = tokio::time::timeout(
            Duration::from_secs(3),
            self.registry
                .instances(slipway_scheduler::membership::HOST_SERVICE),
        )
        .await
        .ok()?
        .ok()?;
        Some(
            listed
                .into_iter()
                .filter(|i| i.id != self.own)
                .filter_map(|i| i.addr.parse().ok())
                .take(MAX_PEERS)
                .collect(),
        )
    }
}

/// Holds the host's registration for as long as the process runs and, with `etcd` and a
/// grace (not zero), fences the host when it is isolated (module doc).
pub fn hold(
    reg: Registration,
    api: Arc<dyn HostApi>,
    etcd: Option<slipway_etcd::Client>,
    grace: Duration,
    peers: Peers,
) {
    tokio::spawn(async move {
        let Some(etcd) = etcd.filter(|_| !grace.is_zero()) else {
            let _reg = reg;
            return std::future::pending::<()>().await;
        };
        let mut clock = FenceClock::new(grace);
        let mut known: Vec<SocketAddr> = peers.list().await.unwrap_or_default();
        let mut checks = 0u32;
        let mut said_not_isolated = false;
        loop {
            tokio::time::sleep(CHECK).await;
            checks = checks.wrapping_add(1);
            let lease_ok = tokio::time::Instant::now() < reg.lease_deadline(Duration::ZERO);
            if lease_ok {
                said_not_isolated = false;
                if checks.is_multiple_of(PEERS_EVERY)
                    && let Some(list) = peers.list().await
                {
                    known = list;
                }
            }
            let connected = !lease_ok && {
                let etcd_answers = etcd_answers(&etcd).await;
                let isolated = !etcd_answers && isolated(&known).await;
                if !etcd_answers && !isolated && !said_not_isolated {
                    said_not_isolated = true;
                    tracing::warn!(
                        "fencing: no etcd member answers, but {}: etcd is down, not this host's \
                         link; its jobs keep running",
                        match known.is_empty() {
                            true => "no other host is known (none could take its jobs)",
                            false => "at least half of the other hosts answer",
                        }
                    );
                }
                !isolated
            };
            match clock.step(Instant::now(), lease_ok, connected) {
                Step::Nothing => {}
                Step::Fence => fence(&*api, grace).await,
                Step::Rejoined => tracing::warn!(
                    "fencing: etcd reached again and the host registered anew; the jobs \
                     stopped while it was cut off stay stopped (the scheduler replaced them)"
                ),
            }
        }
    });
}

/// Whether this host is cut off from the other hosts: there is at least one, and fewer than
/// half of them accept (or refuse: their machine answers) a TCP connection on their host API
/// address within [`PEER_CONNECT`].
pub(crate) async fn isolated(peers: &[SocketAddr]) -> bool {
    if peers.is_empty() {
        return false;
    }
    let mut tries = tokio::task::JoinSet::new();
    for &addr in peers {
        tries.spawn(async move {
            // Refused is an answer too: the peer's machine is reachable (its process is not).
            match tokio::time::timeout(PEER_CONNECT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                Err(_) => false,
            }
        });
    }
    let mut answered = 0;
    while let Some(a) = tries.join_next().await {
        answered += usize::from(a.unwrap_or(false));
        if answered * 2 >= peers.len() {
            return false;
        }
    }
    true
}

/// Whether any etcd member answers its status call (healthy or not).
async fn etcd_answers(etcd: &slipway_etcd::Client) -> bool {
    let (members, _) = crate::ops::etcd_members(etcd).await;
    members.iter().any(|m| m.version.is_some())
}

/// Stops every job the host runs.
async fn fence(api: &dyn HostApi, grace: Duration) {
    let jobs = match api.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!("fencing: cannot list the host's jobs: {e}");
            return;
        }
    };
    let live: Vec<_> = jobs
        .into_iter()
        .filter(|j| !j.status.is_terminal())
        .collect();
    tracing::warn!(
        jobs = live.len(),
        "fencing: cut off from etcd (no member answers) for {grace:?} past the host's lease: \
         the scheduler has replaced its jobs elsewhere; stopping them here"
    );
    for j in live {
        if let Err(e) = api.stop_job(&j.job.id).await {
            tracing::warn!(job = %j.job.id, "fencing: stop failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_cut_off_past_its_lease_fences_after_the_grace_and_rejoins() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = FenceClock::new(s(5));
        assert_eq!(c.step(t0, true, false), Step::Nothing);
        // The lease lapsed, no member answers: the grace runs from now.
        assert_eq!(c.step(t0 + s(10), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(14), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(15), false, false), Step::Fence);
        // Once only.
        assert_eq!(c.step(t0 + s(16), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(30), false, true), Step::Nothing);
        // The heartbeat got through: back.
        assert_eq!(c.step(t0 + s(31), true, false), Step::Rejoined);
        assert_eq!(c.step(t0 + s(32), true, false), Step::Nothing);
    }

    #[test]
    fn etcd_down_for_everyone_fences_nothing() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = FenceClock::new(s(5));
        // Members answer (no quorum): never fenced, however long.
        for i in 10..100 {
            assert_eq!(c.step(t0 + s(i), false, true), Step::Nothing);
        }
        // A member answering resets the count: a short cut after it waits a whole grace.
        assert_eq!(c.step(t0 + s(100), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(102), false, true), Step::Nothing);
        assert_eq!(c.step(t0 + s(103), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(107), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(108), false, false), Step::Fence);
    }

    #[tokio::test]
    async fn a_host_that_reaches_fewer_than_half_of_the_others_is_isolated() {
        // Alone: nobody could have replaced its jobs.
        assert!(!isolated(&[]).await);
        let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listening.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (blackhole, _held) = silent().await;
        // Half of the others answer: not cut off (etcd is down for everyone).
        assert!(!isolated(&[blackhole, up]).await);
        // A refused connection is an answer: the machine is reachable.
        assert!(!isolated(&[blackhole, closed]).await);
        // A minority answers: this host and that one are cut off together.
        let (other, _held2) = silent().await;
        assert!(isolated(&[blackhole, other, up]).await);
        let t = Instant::now();
        assert!(isolated(&[blackhole]).await);
        assert!(t.elapsed() < PEER_CONNECT * 3, "{:?}", t.elapsed());
    }

    /// An address whose SYNs are dropped, as across a cut link: a listener with a backlog of
    /// 0 whose one queued connection is never accepted (Linux drops SYNs to a full queue; an
    /// outside address would depend on the machine's network). Keep the pair alive.
    async fn silent() -> (SocketAddr, (tokio::net::TcpListener, tokio::net::TcpStream)) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
        (addr, (listener, filler))
    }

    async fn agent_with_a_job(dir: &std::path::Path) -> Arc<dyn HostApi> {
        let agent = slipway_host::Agent::start(
            slipway_host::AgentConfig::new(dir),
            Arc::new(slipway_host::fake::FakeRuntime::new()),
        )
        .await
        .unwrap();
        let api: Arc<dyn HostApi> = Arc::new(agent);
        let job = slipway_host::HostJob {
            id: "j1".into(),
            app_id: "a".into(),
            app_name: "app".into(),
            release_id: "r".into(),
            process_type: "web".into(),
            metadata: Default::default(),
            config: slipway_host::JobConfig::new("busybox", &["run"]),
            resources: Default::default(),
        };
        api.add_job(job).await.unwrap();
        api
    }

    async fn running(api: &dyn HostApi) -> bool {
        let jobs = api.list_jobs().await.unwrap();
        jobs.iter().any(|j| !j.status.is_terminal())
    }

    /// Regression: etcd's only member stopped (a restart, an upgrade: the README's cluster)
    /// fenced every host, so every job of the cluster stopped. Now a host that still reaches
    /// another host keeps its jobs; one that reaches none (cut off) fences.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_stopped_for_everyone_fences_no_host_that_reaches_another() {
        let Some(mut etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let ttl = Duration::from_secs(2);
        let registry: Arc<dyn Registry> =
            Arc::new(slipway_discovery::EtcdRegistry::new(client.clone(), ttl));
        let service = slipway_scheduler::membership::HOST_SERVICE;
        let instance = |addr: String| slipway_discovery::NewInstance {
            addr,
            proto: Some("tcp".into()),
            meta: Default::default(),
        };
        // Another host, answering on its API address.
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = peer.local_addr().unwrap().to_string();
        let _peer_reg =
            Registration::start(registry.clone(), service, "h2", instance(peer_addr), ttl)
                .await
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let grace = Duration::from_secs(1);
        // h1: its peers from etcd (h2 answers).
        let h1 = agent_with_a_job(&dir.path().join("h1")).await;
        let reg = Registration::start(
            registry.clone(),
            service,
            "h1",
            instance("127.0.0.1:1".into()),
            ttl,
        )
        .await
        .unwrap();
        let peers = Peers {
            registry: registry.clone(),
            own: "h1".into(),
        };
        hold(reg, h1.clone(), Some(client.clone()), grace, peers);
        // h3: cut off from everything (its only known peer never answers).
        let h3 = agent_with_a_job(&dir.path().join("h3")).await;
        let reg = Registration::start(
            registry.clone(),
            service,
            "h3",
            instance("127.0.0.1:2".into()),
            ttl,
        )
        .await
        .unwrap();
        let (cut_peer, _held) = silent().await;
        let elsewhere = slipway_discovery::LocalRegistry::new(Duration::from_secs(600));
        elsewhere
            .register(service, "h9", &instance(cut_peer.to_string()))
            .await
            .unwrap();
        let peers = Peers {
            registry: Arc::new(elsewhere),
            own: "h3".into(),
        };
        hold(reg, h3.clone(), Some(client), grace, peers);
        assert!(running(&*h1).await && running(&*h3).await);

        etcd.stop_member(0);
        // The lease lapses within `ttl`, the grace follows: h3 fences.
        let deadline = Instant::now() + ttl + grace + Duration::from_secs(10);
        while running(&*h3).await {
            assert!(Instant::now() < deadline, "the cut-off host was not fenced");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Well past the same point: h1, which reaches h2, still runs its job.
        tokio::time::sleep(ttl + grace).await;
        assert!(
            running(&*h1).await,
            "a host that reaches another was fenced"
        );
    }
}
