use super::*;
use crate::{Deployer, DeployerConfig};
use slipway_types::{AppUpdate, NewRelease, ProcessType};
use std::sync::Mutex;

fn formation(processes: &[(&str, u32)]) -> Formation {
    serde_json::from_value(serde_json::json!({
        "app_id": "0b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
        "release_id": "1b7c8a64-7f5e-4c5b-9d6e-1f2a3b4c5d6e",
        "processes": processes.iter().cloned().collect::<BTreeMap<_, _>>(),
        "created_at": "2026-11-22T05:00:00Z",
        "updated_at": "2026-11-22T05:00:00Z",
    }))
    .unwrap()
}

fn new_release(types: &[&str]) -> NewRelease {
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

#[test]
fn a_deploy_is_first_when_nothing_ran_before() {
    assert!(is_first_deploy(None), "no previous release or formation");
    assert!(is_first_deploy(Some(&formation(&[]))));
    assert!(
        is_first_deploy(Some(&formation(&[("web", 0), ("worker", 0)]))),
        "all zeros: also what a failed first deploy leaves"
    );
    assert!(!is_first_deploy(Some(&formation(&[
        ("web", 0),
        ("worker", 1)
    ]))));
}

#[test]
fn a_first_deploy_starts_web_only() {
    let r = |types: &[&str]| Release {
        id: Id::new_v4(),
        app_id: Id::new_v4(),
        artifacts: vec![],
        env: Default::default(),
        meta: Default::default(),
        processes: new_release(types).processes,
        created_at: slipway_types::Timestamp::now(),
    };
    assert_eq!(
        initial_formation(&r(&["web", "worker"])),
        BTreeMap::from([("web".to_string(), 1)])
    );
    assert!(
        initial_formation(&r(&["app"])).is_empty(),
        "an image's generated type waits for an explicit scale"
    );
    assert!(initial_formation(&r(&["worker", "api-web"])).is_empty());
}

/// A SQLite store in a temp dir with an app named `name` (deploy timeout 1 s).
async fn store(dir: &tempfile::TempDir, name: &str) -> (Arc<dyn Store>, slipway_types::App) {
    let url = format!("sqlite://{}", dir.path().join("db").display());
    let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await.unwrap());
    let app = store
        .create_app(name, &Default::default(), None)
        .await
        .unwrap();
    let update = AppUpdate {
        deploy_timeout: Some(1),
        ..Default::default()
    };
    let app = store.update_app(app.id, &update).await.unwrap();
    (store, app)
}

fn deployer(store: &Arc<dyn Store>) {
    let cfg = DeployerConfig {
        poll: Duration::from_millis(50),
        default_batch_size: 1,
    };
    tokio::spawn(Deployer::new(store.clone(), cfg).run());
}

#[tokio::test]
async fn a_first_deploy_without_web_completes_with_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = store(&dir, "quiet").await;
    deployer(&store);
    let rel = store
        .create_release(app.id, &new_release(&["app"]))
        .await
        .unwrap();
    let said = Mutex::new(Vec::new());
    let done = deploy_and_wait(&store, &rel, |l| said.lock().unwrap().push(l))
        .await
        .unwrap();
    assert_eq!(done.deployment.status, DeploymentStatus::Complete);
    assert!(done.processes.values().all(|n| *n == 0), "{done:?}");
    assert!(said.lock().unwrap().is_empty(), "nothing scaled");
    let f = store.get_formation(app.id, rel.id).await.unwrap();
    assert!(f.processes.values().all(|n| *n == 0), "{f:?}");
    let app = store.list_apps().await.unwrap().remove(0);
    assert_eq!(app.release, Some(rel.id));
}

/// No scheduler runs here, so the initial web job never comes up: the deploy says why, and the
/// release stays current at web=0 so that the next push is a first deploy again.
#[tokio::test]
async fn a_first_deploy_with_web_scales_it_to_one_and_back_to_zero_if_it_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = store(&dir, "first").await;
    deployer(&store);
    let rel = store
        .create_release(app.id, &new_release(&["web", "worker"]))
        .await
        .unwrap();
    let said = Mutex::new(Vec::new());
    let err = deploy_and_wait(&store, &rel, |l| said.lock().unwrap().push(l))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeployError::Initial { ptype, reason }
            if ptype == "web" && reason.contains("no web job was up after 1s")),
        "{err}"
    );
    assert!(
        err.to_string().contains("The release is kept with web=0"),
        "{err}"
    );
    assert_eq!(
        *said.lock().unwrap(),
        ["=====> Scaling initial release to web=1"]
    );
    let f = store.get_formation(app.id, rel.id).await.unwrap();
    assert_eq!(f.processes.get("web"), Some(&0));
    let app = store.list_apps().await.unwrap().remove(0);
    assert_eq!(app.release, Some(rel.id));
    let old = store.get_formation(app.id, rel.id).await.ok();
    assert!(
        is_first_deploy(old.as_ref()),
        "the next deploy starts web again"
    );
}

#[tokio::test]
async fn a_deploy_refused_by_an_unfinished_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = store(&dir, "busy").await;
    // No deployer: the first deployment stays pending.
    let r1 = store
        .create_release(app.id, &new_release(&["web"]))
        .await
        .unwrap();
    let r2 = store
        .create_release(app.id, &new_release(&["web"]))
        .await
        .unwrap();
    store.create_deployment(app.id, r1.id).await.unwrap();
    let err = start(&store, &r2).await.err().expect("refused");
    assert!(
        matches!(err, DeployError::Start(StoreError::Conflict(_))),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("cannot start the deployment: "),
        "{err}"
    );
    assert_eq!(store.list_deployments(app.id).await.unwrap().len(), 1);
}
