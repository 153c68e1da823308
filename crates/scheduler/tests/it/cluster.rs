//! Several processes' worth of scheduling on one store: hosts followed through their
//! registration in discovery (over real HTTP), leader election and fencing between two
//! schedulers (docs/scheduler.md).

use crate::harness::*;
use slipway_discovery::{Instance, LocalRegistry, NewInstance, Registry, Watch};
use slipway_host::client::HttpHost;
use slipway_host::{HostApi, JobStatus};
use slipway_scheduler::membership::{Connect, HOST_SERVICE};
use slipway_scheduler::{Election, Scheduler, leader};
use slipway_store::Store;
use slipway_types::JobState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);
/// The cluster token the test hosts take.
const TOKEN: &str = "test-cluster-token";

/// Serves a test host's API over HTTP; returns its address.
async fn serve(host: Arc<TestHost>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(slipway_host::http::serve(host, listener, TOKEN));
    addr
}

/// Registers a host the way its process does, until aborted (then it expires).
fn heartbeat(registry: Arc<dyn Registry>, id: &str, addr: &str) -> tokio::task::JoinHandle<()> {
    let (id, new) = (
        id.to_string(),
        NewInstance {
            addr: addr.to_string(),
            ..Default::default()
        },
    );
    tokio::spawn(async move {
        loop {
            registry.register(HOST_SERVICE, &id, &new).await.unwrap();
            tokio::time::sleep(TTL / 4).await;
        }
    })
}

fn connect() -> Connect {
    Arc::new(|i: &Instance| -> Arc<dyn HostApi> {
        Arc::new(HttpHost::new(&format!("http://{}", i.addr), TOKEN))
    })
}

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    (Arc::new(slipway_store::open(&url).await.unwrap()), dir)
}

/// Jobs a host runs (not finished).
async fn live_on(host: &TestHost) -> usize {
    let jobs = host.agent.list_jobs().await.unwrap();
    jobs.iter().filter(|j| !j.status.is_terminal()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_hosts_are_followed_lost_when_their_registration_expires_and_rejoin() {
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(TTL));
    let (store, dir) = store().await;
    let (a, b) = (
        TestHost::new("ha", &[]).await,
        TestHost::new("hb", &[]).await,
    );
    let (addr_a, addr_b) = (serve(a.clone()).await, serve(b.clone()).await);
    let beat_a = heartbeat(registry.clone(), "ha", &addr_a);
    let _beat_b = heartbeat(registry.clone(), "hb", &addr_b);
    let sched = Scheduler::new(store.clone(), fast());
    sched.follow_hosts(registry.clone(), None, connect());
    tokio::spawn(sched.clone().run());
    let c = Cluster::from_parts(store, sched, vec![a.clone(), b.clone()], dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(c.sched.follows("ha") && c.sched.follows("hb")) {
        assert!(Instant::now() < deadline, "registered hosts not followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (app, release) = c.app(&[("web", &["serve"])]).await;
    c.scale(&app, &release, &[("web", 2)], &[]).await;
    let jobs = c
        .wait_jobs(&app, Duration::from_secs(10), "one job per host", |j| {
            per_host(j) == [("ha".to_string(), 1), ("hb".to_string(), 1)]
        })
        .await;
    assert_eq!(up(&jobs).len(), 2);

    // Host a stops heartbeating (its agent still answers): the registration decides.
    beat_a.abort();
    let t0 = Instant::now();
    let jobs = c
        .wait_jobs(
            &app,
            Duration::from_secs(15),
            "a's job replaced on b",
            |j| per_host(j) == [("hb".to_string(), 2)],
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let lost: Vec<_> = jobs
        .iter()
        .filter(|j| j.host_id.as_deref() == Some("ha"))
        .collect();
    assert_eq!(lost.len(), 1, "{:#?}", summary(&jobs));
    assert_eq!(lost[0].state, JobState::Down);
    assert_eq!(
        lost[0].host_error.as_deref(),
        Some("host ha was lost: its registration in discovery expired")
    );
    assert!(!c.sched.follows("ha"));

    // It registers again: followed again, what was replaced meanwhile is stopped there, and it
    // gets new jobs.
    let _beat_a = heartbeat(registry.clone(), "ha", &addr_a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(c.sched.follows("ha") && live_on(&a).await == 0) {
        assert!(Instant::now() < deadline, "ha did not rejoin cleanly");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.scale(&app, &release, &[("web", 4)], &[]).await;
    c.wait_jobs(&app, Duration::from_secs(10), "two jobs per host", |j| {
        per_host(j) == [("ha".to_string(), 2), ("hb".to_string(), 2)]
    })
    .await;
    assert_eq!(live_on(&a).await, 2);
}

/// A registry whose registrations from one process can be cut, as a paused or partitioned
/// process's would be: its heartbeats fail, everything else works.
struct Partition {
    inner: Arc<dyn Registry>,
    cut: AtomicBool,
}

#[async_trait::async_trait]
impl Registry for Partition {
    async fn register(
        &self,
        service: &str,
        id: &str,
        new: &NewInstance,
    ) -> slipway_discovery::Result<Instance> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(slipway_discovery::Error::Unavailable("cut off".into()));
        }
        self.inner.register(service, id, new).await
    }
    async fn deregister(&self, service: &str, id: &str) -> slipway_discovery::Result<()> {
        self.inner.deregister(service, id).await
    }
    async fn instances(&self, service: &str) -> slipway_discovery::Result<Vec<Instance>> {
        self.inner.instances(service).await
    }
    async fn watch(&self, service: Option<&str>) -> slipway_discovery::Result<Watch> {
        self.inner.watch(service).await
    }
}

async fn candidate(
    store: &Arc<dyn Store>,
    registry: &Arc<dyn Registry>,
    hosts: &[Arc<TestHost>],
    name: &str,
) -> (Scheduler, Arc<Partition>) {
    let part = Arc::new(Partition {
        inner: registry.clone(),
        cut: AtomicBool::new(false),
    });
    let sched = Scheduler::new(store.clone(), fast());
    for h in hosts {
        sched.add_host(h.clone()).await.unwrap();
    }
    let new = NewInstance {
        addr: "127.0.0.1:7070".into(),
        ..Default::default()
    };
    let election = Election::campaign(part.clone(), leader::SCHEDULER_SERVICE, name, new, TTL)
        .await
        .unwrap();
    sched.elect(election);
    tokio::spawn(sched.clone().run());
    (sched, part)
}

/// Every job any host was ever asked to start.
async fn started(hosts: &[Arc<TestHost>]) -> usize {
    let mut n = 0;
    for h in hosts {
        n += h.agent.list_jobs().await.unwrap().len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_start_each_job_once_and_the_survivor_takes_over_fenced() {
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(TTL));
    let (store, dir) = store().await;
    let hosts = vec![
        TestHost::new("ha", &[]).await,
        TestHost::new("hb", &[]).await,
    ];
    let (s1, cut1) = candidate(&store, &registry, &hosts, "s1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s2, _) = candidate(&store, &registry, &hosts, "s2").await;
    let c = Cluster::from_parts(store.clone(), s2.clone(), hosts.clone(), dir);
    let (app, release) = c.app(&[("web", &["serve"])]).await;
    c.scale(&app, &release, &[("web", 3)], &[]).await;
    c.wait_jobs(&app, Duration::from_secs(10), "3 up", |j| up(j).len() == 3)
        .await;
    // A few more rounds of both: still exactly the three starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(started(&hosts).await, 3, "a job was started twice");
    assert_eq!(store.list_jobs(app.id).await.unwrap().len(), 3);
    let e1 = s1.epoch().expect("the first candidate leads");
    assert!(!s2.is_acting());
    assert_eq!(hosts[0].agent.epoch().await, e1);

    // The leader is cut off (its heartbeats fail, as when paused): it stops acting once its
    // lease passes, the other takes over with a newer epoch and finishes a scale issued
    // meanwhile.
    cut1.cut.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while s1.is_acting() {
        assert!(t0.elapsed() < TTL * 2, "the cut-off leader still acts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() < TTL,
        "stopped after its lease: {:?}",
        t0.elapsed()
    );
    c.scale(&app, &release, &[("web", 5)], &[]).await;
    c.wait_jobs(&app, Duration::from_secs(15), "5 up", |j| up(j).len() == 5)
        .await;
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!s1.is_acting());
    let e2 = s2.epoch().expect("the survivor leads");
    assert!(e2 > e1, "{e2} > {e1}");
    for h in &hosts {
        assert_eq!(h.agent.epoch().await, e2);
    }
    assert_eq!(started(&hosts).await, 5);
    // The old leader's epoch can neither start nor stop a job, nor write a job row.
    let job = hosts[0].agent.list_jobs().await.unwrap().remove(0);
    let err = hosts[0]
        .agent
        .stop_job_fenced(&job.job.id, e1)
        .await
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert_eq!(
        hosts[0].agent.get_job(&job.job.id).await.unwrap().status,
        JobStatus::Running
    );
    let row = store.list_jobs(app.id).await.unwrap().remove(0);
    let written = store
        .put_jobs_fenced(slipway_scheduler::SCHEDULER_ROLE, e1, &[row])
        .await
        .unwrap();
    assert!(written.is_none());
    // Back in touch, the old leader stays a follower: the survivor is the oldest now.
    cut1.cut.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!s1.is_acting());
    assert_eq!(s2.epoch(), Some(e2));
    assert_eq!(started(&hosts).await, 5);
}
