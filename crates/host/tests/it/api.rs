//! The host API on the fake runtime (no root): in-process and over HTTP must behave the same,
//! and an agent restarted over the same runtime re-adopts its jobs.

use futures_util::StreamExt;
use slipway_host::client::HttpHost;
use slipway_host::fake::FakeRuntime;
use slipway_host::{
    Agent, AgentConfig, EventKind, HostApi, HostError, HostJob, JobConfig, JobStatus,
};
use std::sync::Arc;
use std::time::Duration;

fn fake_job(id: &str, args: &[&str]) -> HostJob {
    HostJob {
        id: id.into(),
        app_id: "a".into(),
        app_name: "app".into(),
        release_id: "r".into(),
        process_type: "web".into(),
        metadata: Default::default(),
        config: JobConfig::new("busybox", args),
        resources: Default::default(),
    }
}

/// The same scenario against any `HostApi`.
async fn conformance(api: &dyn HostApi) {
    let mut events = api.events().await.unwrap();
    let info = api.add_job(fake_job("j1", &["serve"])).await.unwrap();
    assert_eq!(info.status, JobStatus::Running);
    assert!(info.ip.is_some());
    let bad = api
        .add_job(fake_job("../etc", &["serve"]))
        .await
        .unwrap_err();
    assert!(matches!(bad, HostError::BadRequest(_)), "{bad:?}");
    let err = api.add_job(fake_job("j1", &["serve"])).await.unwrap_err();
    assert!(matches!(err, HostError::Conflict(_)), "{err:?}");
    assert!(matches!(
        api.get_job("nope").await,
        Err(HostError::NotFound(_))
    ));
    assert_eq!(api.list_jobs().await.unwrap().len(), 1);
    let st = api.status().await.unwrap();
    assert_eq!((st.job_count, st.runtime.as_str()), (1, "fake"));
    assert_eq!(
        st.allocated.memory_bytes,
        1 << 30,
        "one job with the default 1 GiB"
    );
    assert_eq!(st.allocated.cpu_milli, 1000);
    assert!(st.capacity.cpus >= 1 && st.capacity.memory_bytes > 0);

    let mut exits = fake_job("j2", &["exit", "3"]);
    exits.config.env.insert("FAKE_RUN_MS".into(), "50".into());
    api.add_job(exits).await.unwrap();
    let d = api.wait_job("j2").await.unwrap();
    assert_eq!((d.status, d.exit.unwrap().code), (JobStatus::Crashed, 3));

    let mut stubborn = fake_job("j3", &["serve"]);
    stubborn
        .config
        .env
        .insert("FAKE_IGNORE_TERM".into(), "1".into());
    stubborn.config.stop_grace_ms = Some(200);
    api.add_job(stubborn).await.unwrap();
    let t0 = std::time::Instant::now();
    api.stop_job("j3").await.unwrap();
    let d = api.wait_job("j3").await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(180));
    assert_eq!((d.status, d.exit.unwrap().code), (JobStatus::Done, 137));

    api.signal_job("j1", libc::SIGTERM).await.unwrap();
    let d = api.wait_job("j1").await.unwrap();
    // As on runc: the init passes SIGTERM on and exits 128 + 15 itself.
    let e = d.exit.unwrap();
    assert_eq!((e.code, e.signal), (143, None));
    let f = api.add_job(fake_job("j4", &["fail-start"])).await.unwrap();
    assert_eq!(f.status, JobStatus::Failed);
    assert!(f.error.unwrap().contains("could not start"));
    assert!(matches!(
        api.signal_job("j4", 9).await,
        Err(HostError::Conflict(_))
    ));

    let mut kinds = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        kinds.push((e.job_id, e.kind));
    }
    for want in [
        ("j1", EventKind::Create),
        ("j1", EventKind::Start),
        ("j1", EventKind::Stop),
        ("j1", EventKind::Cleanup),
        ("j2", EventKind::Stop),
        ("j4", EventKind::Error),
    ] {
        assert!(
            kinds.iter().any(|(id, k)| id == want.0 && *k == want.1),
            "{want:?} not in {kinds:?}"
        );
    }
    let logs: Vec<_> = api.logs("j2", false).await.unwrap().collect().await;
    assert_eq!(logs[0].msg, "started: exit 3");
    assert_eq!(api.status().await.unwrap().job_count, 0);
}

#[tokio::test]
async fn host_api_in_process_on_the_fake_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(dir.path()), Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    conformance(&agent).await;
}

#[tokio::test]
async fn host_api_over_http_on_the_fake_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(dir.path()), Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(slipway_host::http::serve(Arc::new(agent), listener));
    let client = HttpHost::new(&format!("http://{addr}"));
    conformance(&client).await;
}

/// Plumbing only: the agent's state file round-trips (running jobs listed again, finished ones
/// kept with their exit). Both agents share one `FakeRuntime`, whose containers live in memory,
/// so adopting cannot fail here; that a real container survives its agent and is adopted (same
/// process, output not restarted) is `restart.rs` on runc.
#[tokio::test]
async fn a_restarted_agent_readopts_running_jobs_and_keeps_finished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::new());
    let a1 = Agent::start(AgentConfig::new(dir.path()), rt.clone())
        .await
        .unwrap();
    a1.add_job(fake_job("keep", &["serve"])).await.unwrap();
    a1.add_job(fake_job("done", &["exit", "0"])).await.unwrap();
    a1.wait_job("done").await.unwrap();
    drop(a1);
    let a2 = Agent::start(AgentConfig::new(dir.path()), rt.clone())
        .await
        .unwrap();
    assert_eq!(a2.get_job("keep").await.unwrap().status, JobStatus::Running);
    assert_eq!(a2.get_job("done").await.unwrap().status, JobStatus::Done);
    rt.exit("keep", 42);
    let d = a2.wait_job("keep").await.unwrap();
    assert_eq!(d.exit.unwrap().code, 42);
    assert_eq!(rt.live(), 0, "cleaned up");
}

#[tokio::test]
async fn only_the_newest_finished_jobs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::new(dir.path());
    cfg.max_finished_jobs = 3;
    let agent = Agent::start(cfg, Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    agent
        .add_job(fake_job("running", &["serve"]))
        .await
        .unwrap();
    for i in 0..6 {
        let id = format!("done{i}");
        agent.add_job(fake_job(&id, &["exit", "0"])).await.unwrap();
        agent.wait_job(&id).await.unwrap();
    }
    let ids: Vec<String> = agent
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job.id)
        .collect();
    assert_eq!(ids, ["running", "done3", "done4", "done5"]);
    let files = std::fs::read_dir(dir.path().join("jobs")).unwrap().count();
    assert_eq!(files, 4);
    assert!(matches!(
        agent.get_job("done0").await,
        Err(HostError::NotFound(_))
    ));
}
