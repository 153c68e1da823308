//! The deployment executor on the real scheduler over three fake hosts: each strategy's exact
//! ordered job events (as Flynn's deployer tests assert them), and a failing release that leaves
//! the old one serving.

use crate::harness::*;
use slipway_deploy::{Deployer, DeployerConfig};
use slipway_types::{
    App, AppUpdate, DeployStrategy, DeploymentStatus, EventFilter, Job, JobState, ObjectType,
    Release,
};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// The `web` count of each release's formation, in the order given.
async fn web_counts(c: &Cluster, app: &App, releases: [&Release; 2]) -> [u32; 2] {
    let mut counts = [0; 2];
    for (count, r) in counts.iter_mut().zip(releases) {
        *count = c.store.get_formation(app.id, r.id).await.unwrap().processes["web"];
    }
    counts
}

/// An app running `web=n` of release v1 (current), and a release v2 running `v2_args`.
async fn running(
    c: &Cluster,
    strategy: DeployStrategy,
    batch: Option<u32>,
    n: u32,
    v2_args: &[&str],
) -> (App, Release, Release) {
    let (app, v1) = c.app(&[("web", &["run"])]).await;
    let update = AppUpdate {
        strategy: Some(strategy),
        deploy_batch_size: batch,
        deploy_timeout: Some(20),
        ..Default::default()
    };
    c.store.update_app(app.id, &update).await.unwrap();
    c.scale(&app, &v1, &[("web", n)], &[]).await;
    c.wait_jobs(&app, T, "v1 up", |j| up(j).len() == n as usize)
        .await;
    let app = c.store.set_app_release(app.id, v1.id).await.unwrap();
    let mut new = slipway_types::NewRelease::default();
    new.processes.insert(
        "web".into(),
        slipway_types::ProcessType {
            args: v2_args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    new.env.insert("V".into(), "2".into());
    let v2 = c.store.create_release(app.id, &new).await.unwrap();
    (app, v1, v2)
}

/// Deploys v2 and returns the job transitions to up/down that followed, as `old web up`.
async fn deploy(
    c: &Cluster,
    app: &App,
    v1: &Release,
    v2: &Release,
) -> (slipway_types::Deployment, Vec<String>) {
    let since = c
        .store
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .last()
        .map(|e| e.id);
    let d = c.store.create_deployment(app.id, v2.id).await.unwrap();
    let deployer = Deployer::new(
        c.store.clone(),
        DeployerConfig {
            poll: Duration::from_millis(100),
            default_batch_size: 1,
        },
    );
    deployer.execute(d.clone()).await;
    let d = c.store.get_deployment(d.id).await.unwrap();
    let filter = EventFilter {
        app_id: Some(app.id),
        object_types: vec![ObjectType::Job],
        since_id: since,
        ..Default::default()
    };
    let mut last: HashMap<String, JobState> = HashMap::new();
    let mut seen = Vec::new();
    for e in c.store.list_events(&filter).await.unwrap() {
        let job: Job = serde_json::from_value(e.data).unwrap();
        let prev = last.insert(job.id.clone(), job.state);
        if prev == Some(job.state) || !matches!(job.state, JobState::Up | JobState::Down) {
            continue;
        }
        let rel = if job.release_id == v1.id {
            "old"
        } else if job.release_id == v2.id {
            "new"
        } else {
            "?"
        };
        seen.push(format!("{rel} web {}", job.state.as_str()));
    }
    (d, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_at_once_starts_every_new_job_then_stops_the_old_ones() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, v1, v2) = running(&c, DeployStrategy::AllAtOnce, None, 2, &["run"]).await;
    let (d, events) = deploy(&c, &app, &v1, &v2).await;
    assert_eq!(d.status, DeploymentStatus::Complete, "{:?}", d.error);
    assert_eq!(
        events,
        ["new web up", "new web up", "old web down", "old web down"]
    );
    assert_eq!(c.store.get_app(app.id).await.unwrap().release, Some(v2.id));
    assert_eq!(web_counts(&c, &app, [&v1, &v2]).await, [0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_alternates_new_up_and_old_down() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, v1, v2) = running(&c, DeployStrategy::OneByOne, None, 3, &["run"]).await;
    let (d, events) = deploy(&c, &app, &v1, &v2).await;
    assert_eq!(d.status, DeploymentStatus::Complete, "{:?}", d.error);
    assert_eq!(
        events,
        [
            "new web up",
            "old web down",
            "new web up",
            "old web down",
            "new web up",
            "old web down"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_batches_moves_the_app_batch_by_batch() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, v1, v2) = running(&c, DeployStrategy::InBatches, Some(2), 3, &["run"]).await;
    let (d, events) = deploy(&c, &app, &v1, &v2).await;
    assert_eq!(d.status, DeploymentStatus::Complete, "{:?}", d.error);
    assert_eq!(
        events,
        [
            "new web up",
            "new web up",
            "old web down",
            "old web down",
            "new web up",
            "old web down"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_cannot_start_fails_with_the_reason_and_the_old_one_keeps_serving() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, v1, v2) = running(&c, DeployStrategy::AllAtOnce, None, 2, &["fail-start"]).await;
    let before: Vec<String> = up(&c.store.list_jobs(app.id).await.unwrap())
        .iter()
        .map(|j| j.id.clone())
        .collect();
    let (d, events) = deploy(&c, &app, &v1, &v2).await;
    assert_eq!(d.status, DeploymentStatus::Failed);
    let err = d.error.unwrap();
    assert!(
        err.starts_with("web job failed to start: fake runtime: job ")
            && err.ends_with(" asked to fail at start"),
        "{err}"
    );
    assert!(
        events.iter().all(|e| !e.starts_with("old")),
        "old jobs were never stopped: {events:?}"
    );
    assert_eq!(c.store.get_app(app.id).await.unwrap().release, Some(v1.id));
    assert_eq!(web_counts(&c, &app, [&v1, &v2]).await, [2, 0]);
    let jobs = c
        .wait_jobs(&app, T, "no v2 job left", |j| {
            j.iter()
                .all(|j| j.release_id == v1.id || j.state.is_finished())
        })
        .await;
    let after: Vec<String> = up(&jobs).iter().map(|j| j.id.clone()).collect();
    assert_eq!(after, before, "the old release's jobs kept running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_interrupted_by_a_restart_fails_and_restores_the_old_formation() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let (app, v1, v2) = running(&c, DeployStrategy::AllAtOnce, None, 2, &["run"]).await;
    let d = c.store.create_deployment(app.id, v2.id).await.unwrap();
    // The previous server got this far, then died.
    c.store
        .update_deployment(d.id, DeploymentStatus::Running, None)
        .await
        .unwrap();
    c.scale(&app, &v2, &[("web", 2)], &[]).await;
    c.scale(&app, &v1, &[("web", 0)], &[]).await;
    let deployer = Deployer::new(
        c.store.clone(),
        DeployerConfig {
            poll: Duration::from_millis(100),
            default_batch_size: 1,
        },
    );
    tokio::spawn(deployer.run());
    let deadline = std::time::Instant::now() + T;
    let d = loop {
        let d = c.store.get_deployment(d.id).await.unwrap();
        if d.status.is_finished() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "still {:?}", d.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(d.status, DeploymentStatus::Failed);
    assert_eq!(d.error.as_deref(), Some(slipway_deploy::INTERRUPTED));
    assert_eq!(web_counts(&c, &app, [&v1, &v2]).await, [2, 0]);
    c.wait_jobs(&app, T, "2 v1 jobs up, no v2 job", |j| {
        up(j).len() == 2 && up(j).iter().all(|x| x.release_id == v1.id)
    })
    .await;
    // The app can deploy again.
    c.store.create_deployment(app.id, v2.id).await.unwrap();
}

/// `slipway_deploy::deploy_and_wait` as a `git push` or an image push runs it, on the real
/// scheduler: a first deploy of a release with a `web` type ends with one web job up, a later
/// deploy keeps the counts it finds, and a release whose only type is an image's generated
/// `app` runs nothing until scaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_starts_one_web_job_and_later_deploys_keep_the_counts() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[])], fast()).await;
    let deployer = Deployer::new(
        c.store.clone(),
        DeployerConfig {
            poll: Duration::from_millis(100),
            default_batch_size: 1,
        },
    );
    tokio::spawn(deployer.run());
    let (app, v1) = c.app(&[("web", &["run"]), ("worker", &["run"])]).await;
    let said = std::sync::Mutex::new(Vec::new());
    let done = slipway_deploy::deploy_and_wait(&c.store, &v1, |l| said.lock().unwrap().push(l))
        .await
        .unwrap();
    assert_eq!(done.processes.get("web"), Some(&1), "{:?}", done.processes);
    assert_eq!(
        *said.lock().unwrap(),
        [
            "=====> Scaling initial release to web=1",
            "=====> Initial web job started"
        ]
    );
    let jobs = c.store.list_jobs(app.id).await.unwrap();
    let web: Vec<_> = up(&jobs)
        .into_iter()
        .filter(|j| j.release_id == v1.id && j.process_type.as_deref() == Some("web"))
        .collect();
    assert_eq!(web.len(), 1, "{:?}", summary(&jobs));
    assert!(
        jobs.iter()
            .all(|j| j.process_type.as_deref() != Some("worker")),
        "only web starts: {:?}",
        summary(&jobs)
    );

    // Not a first deploy any more: the new release takes over web=1, nothing else is scaled.
    let mut next = slipway_types::NewRelease::from_release(&v1);
    next.env.insert("V".into(), "2".into());
    let v2 = c.store.create_release(app.id, &next).await.unwrap();
    said.lock().unwrap().clear();
    let done = slipway_deploy::deploy_and_wait(&c.store, &v2, |l| said.lock().unwrap().push(l))
        .await
        .unwrap();
    assert_eq!(done.processes.get("web"), Some(&1));
    assert!(
        said.lock().unwrap().is_empty(),
        "{:?}",
        said.lock().unwrap()
    );
    c.wait_jobs(&app, T, "one v2 web job up, v1 stopped", |j| {
        up(j).len() == 1 && up(j)[0].release_id == v2.id
    })
    .await;

    // An image's generated type waits for an explicit scale.
    let (image_app, a1) = c.app(&[("app", &["run"])]).await;
    let done = slipway_deploy::deploy_and_wait(&c.store, &a1, |l| said.lock().unwrap().push(l))
        .await
        .unwrap();
    assert!(done.processes.values().all(|n| *n == 0), "{done:?}");
    assert_eq!(
        c.store
            .get_formation(image_app.id, a1.id)
            .await
            .unwrap()
            .processes
            .get("app"),
        None,
        "nothing scaled"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.store.list_jobs(image_app.id).await.unwrap().is_empty());
}

/// An omni type's count is per host: one-by-one used to step it 1 by 1 and wait for the old
/// release's jobs to fall to `count - 1` in all, which never happens with a job on every host
/// (the deploy timed out and was rolled back). Each omni type now moves in one step, and the
/// deploy waits for its jobs on every host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omni_type_deploys_one_by_one_on_every_host() {
    let c = Cluster::new(&[("ha", &[]), ("hb", &[]), ("hc", &[])], fast()).await;
    let omni = |env: &str| {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "agent".into(),
            slipway_types::ProcessType {
                args: vec!["run".into()],
                omni: true,
                ..Default::default()
            },
        );
        r.env.insert("V".into(), env.into());
        r
    };
    let (app, _) = c.app(&[]).await;
    let update = AppUpdate {
        strategy: Some(DeployStrategy::OneByOne),
        deploy_timeout: Some(10),
        ..Default::default()
    };
    c.store.update_app(app.id, &update).await.unwrap();
    let v1 = c.store.create_release(app.id, &omni("1")).await.unwrap();
    c.scale(&app, &v1, &[("agent", 2)], &[]).await;
    c.wait_jobs(&app, T, "2 v1 agents on each of 3 hosts", |j| {
        up(j).len() == 6
    })
    .await;
    let app = c.store.set_app_release(app.id, v1.id).await.unwrap();
    let v2 = c.store.create_release(app.id, &omni("2")).await.unwrap();
    let d = c.store.create_deployment(app.id, v2.id).await.unwrap();
    let deployer = Deployer::new(
        c.store.clone(),
        DeployerConfig {
            poll: Duration::from_millis(100),
            default_batch_size: 1,
        },
    );
    deployer.execute(d.clone()).await;
    let d = c.store.get_deployment(d.id).await.unwrap();
    assert_eq!(d.status, DeploymentStatus::Complete, "{:?}", d.error);
    let jobs = c
        .wait_jobs(&app, T, "v1's agents gone", |j| {
            j.iter()
                .all(|j| j.release_id == v2.id || j.state.is_finished())
        })
        .await;
    let new: Vec<&Job> = up(&jobs)
        .into_iter()
        .filter(|j| j.release_id == v2.id)
        .collect();
    assert_eq!(
        per_host(&new.into_iter().cloned().collect::<Vec<_>>()).len(),
        3
    );
    assert_eq!(up(&jobs).len(), 6, "{:?}", summary(&jobs));
}
