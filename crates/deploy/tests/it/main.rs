//! Deployers on one PostgreSQL (one per server): a deployment is run by exactly one of them,
//! and another takes it over only once the first one's claim has expired.

use slipway_deploy::{Deployer, DeployerConfig, INTERRUPTED};
use slipway_store::{SqlStore, Store};
use slipway_types::{
    AppUpdate, DeploymentStatus, EventFilter, FormationUpdate, Id, NewRelease, ProcessType,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_millis(1500);

/// A deployer in a runtime of its own, as in a server process of its own: `stop` drops the
/// runtime with every task of it, as a `kill -9` would (its claim is simply no longer renewed).
struct Process {
    id: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn start(url: &str) -> Process {
        Self::start_with(url, TTL)
    }

    fn start_with(url: &str, ttl: Duration) -> Process {
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let url = url.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store: std::sync::Arc<dyn Store> =
                    std::sync::Arc::new(SqlStore::open(&url).await.unwrap());
                let cfg = DeployerConfig {
                    poll: Duration::from_millis(100),
                    default_batch_size: 1,
                };
                let deployer = Deployer::new(store, cfg).with_claim_ttl(ttl);
                id_tx.send(deployer.id().to_string()).unwrap();
                tokio::spawn(deployer.run());
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            });
            rt.shutdown_background();
        });
        Process {
            id: id_rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn release(types: &[&str]) -> NewRelease {
    let mut r = NewRelease::default();
    for t in types {
        r.processes.insert(
            t.to_string(),
            ProcessType {
                args: vec!["run".into()],
                ..Default::default()
            },
        );
    }
    r
}

async fn web_counts(store: &SqlStore, app: Id, releases: [Id; 2]) -> [u32; 2] {
    let mut out = [0; 2];
    for (i, r) in releases.iter().enumerate() {
        out[i] = store
            .get_formation(app, *r)
            .await
            .map(|f| f.processes.get("web").copied().unwrap_or(0))
            .unwrap_or(0);
    }
    out
}

/// An app running v1 (web=1) and a pending deployment of v2 that no job will ever satisfy.
async fn pending_deployment(store: &SqlStore) -> (Id, Id, Id, slipway_types::Deployment) {
    let app = store
        .create_app("claimed", &Default::default(), None)
        .await
        .unwrap();
    // No scheduler runs: the new release's jobs never come up, so the deployment stays
    // `running` for as long as its deployer lives (the timeout is far).
    let update = AppUpdate {
        deploy_timeout: Some(600),
        ..Default::default()
    };
    store.update_app(app.id, &update).await.unwrap();
    let v1 = store
        .create_release(app.id, &release(&["web"]))
        .await
        .unwrap();
    store.set_app_release(app.id, v1.id).await.unwrap();
    let web1 = FormationUpdate {
        processes: BTreeMap::from([("web".to_string(), 1)]),
        ..Default::default()
    };
    store.put_formation(app.id, v1.id, &web1).await.unwrap();
    let v2 = store
        .create_release(app.id, &release(&["web"]))
        .await
        .unwrap();
    let d = store.create_deployment(app.id, v2.id).await.unwrap();
    (app.id, v1.id, v2.id, d)
}

async fn until_running(store: &SqlStore, d: Id) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get_deployment(d).await.unwrap().status != DeploymentStatus::Running {
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_finished(store: &SqlStore, d: Id, within: Duration) -> slipway_types::Deployment {
    let deadline = Instant::now() + within;
    loop {
        let now = store.get_deployment(d).await.unwrap();
        if now.status.is_finished() {
            return now;
        }
        assert!(Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployer_runs_a_deployment_another_takes_over_only_after_its_claim_expired() {
    let Some(db) = slipway_testkit::postgres_database().await else {
        return;
    };
    let store = SqlStore::open(&db.url).await.unwrap();
    let (app, v1, v2, d) = pending_deployment(&store).await;

    // Two deployers start at once.
    let mut procs = [Process::start(&db.url), Process::start(&db.url)];
    until_running(&store, d.id).await;
    let (owner, _) = store
        .deployment_claim(d.id)
        .await
        .unwrap()
        .expect("a claim");
    let winner = procs
        .iter()
        .position(|p| p.id == owner)
        .expect("claimed by one of them");
    // Running, then the new formation written (all at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    while web_counts(&store, app, [v1, v2]).await != [1, 1] {
        assert!(
            Instant::now() < deadline,
            "the new formation was never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three claim lengths later: still the winner's (renewed), still running, started once.
    tokio::time::sleep(TTL * 3).await;
    let d_now = store.get_deployment(d.id).await.unwrap();
    assert_eq!(d_now.status, DeploymentStatus::Running);
    let (still, until) = store.deployment_claim(d.id).await.unwrap().unwrap();
    assert_eq!(
        still, owner,
        "the claim changed hands while its deployer lived"
    );
    assert!(until > now_ms(), "the claim was not renewed");
    let filter = EventFilter {
        object_id: Some(d.id.to_string()),
        limit: Some(1000),
        ..Default::default()
    };
    let started = store
        .list_events(&filter)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.data["status"] == "running")
        .count();
    assert_eq!(started, 1, "the deployment was started more than once");

    // The winner dies; its claim runs out; only then does the other take the deployment over
    // (failed and rolled back: its steps cannot be resumed).
    procs[winner].kill();
    let (_, expires) = store.deployment_claim(d.id).await.unwrap().unwrap();
    let done = until_finished(&store, d.id, TTL * 4 + Duration::from_secs(5)).await;
    assert!(
        now_ms() >= expires,
        "taken over {} ms before the claim expired",
        expires - now_ms()
    );
    assert_eq!(done.status, DeploymentStatus::Failed);
    assert_eq!(done.error.as_deref(), Some(INTERRUPTED));
    let (taker, _) = store.deployment_claim(d.id).await.unwrap().unwrap();
    assert_eq!(taker, procs[1 - winner].id);
    assert_eq!(web_counts(&store, app, [v1, v2]).await, [1, 0]);
    // The app deploys again.
    store.create_deployment(app, v2).await.unwrap();
}

/// SQLite is one server's database: a deployment its previous process was running is taken
/// back at once after a restart (failed and rolled back), not after a claim length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_restarted_server_takes_its_deployment_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db").display());
    let store = SqlStore::open(&url).await.unwrap();
    let (app, v1, v2, d) = pending_deployment(&store).await;
    let long = Duration::from_secs(600);
    let mut first = Process::start_with(&url, long);
    until_running(&store, d.id).await;
    first.kill();
    let t0 = Instant::now();
    let _second = Process::start_with(&url, long);
    let done = until_finished(&store, d.id, Duration::from_secs(20)).await;
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(done.status, DeploymentStatus::Failed);
    assert_eq!(done.error.as_deref(), Some(INTERRUPTED));
    assert_eq!(web_counts(&store, app, [v1, v2]).await, [1, 0]);
}
