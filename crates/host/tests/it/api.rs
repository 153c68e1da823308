//! The host API on the fake runtime (no root): every case runs in-process and over HTTP, which
//! must behave the same; and an agent restarted over the same runtime re-adopts its jobs.

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

/// A host API under test over a fresh agent on the fake runtime.
pub struct Backend {
    pub api: Arc<dyn HostApi>,
    _dir: tempfile::TempDir,
}

async fn agent() -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(dir.path()), Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    (agent, dir)
}

async fn in_process() -> Backend {
    let (agent, dir) = agent().await;
    Backend {
        api: Arc::new(agent),
        _dir: dir,
    }
}

async fn http() -> Backend {
    let (agent, dir) = agent().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server task ends with the test's runtime.
    tokio::spawn(
        async move { slipway_host::http::serve(Arc::new(agent), listener, "api-token").await },
    );
    Backend {
        api: Arc::new(HttpHost::new(&format!("http://{addr}"), "api-token")),
        _dir: dir,
    }
}

/// One named test per case per implementation: `api::in_process::CASE`, `api::http::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    let b = super::in_process().await;
                    super::$case(&*b.api).await;
                }
            )*
        }
        mod http {
            $(
                #[tokio::test]
                async fn $case() {
                    let b = super::http().await;
                    super::$case(&*b.api).await;
                }
            )*
        }
    };
}

conformance!(
    a_job_runs_with_its_own_ip_and_counts_in_the_status,
    bad_and_duplicate_ids_and_unknown_jobs_are_refused,
    a_job_that_exits_non_zero_has_crashed_with_its_code_and_logs,
    stop_kills_a_job_that_ignores_sigterm_after_the_grace,
    a_signal_reaches_the_job,
    a_failed_start_is_reported_and_cannot_be_signalled,
    events_report_every_step,
    a_stale_epoch_cannot_start_or_stop_a_job_once_a_newer_one_fenced,
);

/// Leader fencing: once a newer scheduler announced its epoch, an older one can neither start
/// nor stop a job (409 `fenced: …`), and announcing the older epoch again changes nothing.
async fn a_stale_epoch_cannot_start_or_stop_a_job_once_a_newer_one_fenced(api: &dyn HostApi) {
    api.add_job_fenced(fake_job("e1", &["serve"]), 5)
        .await
        .unwrap();
    api.fence(7).await.unwrap();
    let e = api
        .add_job_fenced(fake_job("e2", &["serve"]), 5)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert_eq!(
        e,
        HostError::Conflict("fenced: a newer scheduler (epoch 7) leads".into())
    );
    assert!(matches!(
        api.get_job("e2").await,
        Err(HostError::NotFound(_))
    ));
    let e = api.stop_job_fenced("e1", 6).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert_eq!(api.get_job("e1").await.unwrap().status, JobStatus::Running);
    assert!(api.fence(6).await.unwrap_err().is_fenced());
    // The newer epoch acts; a newer still is taken on its first call.
    api.stop_job_fenced("e1", 7).await.unwrap();
    assert_eq!(api.wait_job("e1").await.unwrap().status, JobStatus::Done);
    api.add_job_fenced(fake_job("e3", &["serve"]), 8)
        .await
        .unwrap();
    assert!(api.stop_job_fenced("e3", 7).await.unwrap_err().is_fenced());
}

async fn a_job_runs_with_its_own_ip_and_counts_in_the_status(api: &dyn HostApi) {
    let info = api.add_job(fake_job("j1", &["serve"])).await.unwrap();
    assert_eq!(info.status, JobStatus::Running);
    assert!(info.ip.is_some());
    assert_eq!(api.get_job("j1").await.unwrap().ip, info.ip);
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
    api.stop_job("j1").await.unwrap();
    assert_eq!(api.wait_job("j1").await.unwrap().status, JobStatus::Done);
    assert_eq!(api.status().await.unwrap().job_count, 0);
}

async fn bad_and_duplicate_ids_and_unknown_jobs_are_refused(api: &dyn HostApi) {
    api.add_job(fake_job("j1", &["serve"])).await.unwrap();
    let bad = api
        .add_job(fake_job("../etc", &["serve"]))
        .await
        .unwrap_err();
    assert!(matches!(bad, HostError::BadRequest(_)), "{bad:?}");
    let err = api.add_job(fake_job("j1", &["serve"])).await.unwrap_err();
    assert!(matches!(err, HostError::Conflict(_)), "{err:?}");
    for r in [
        api.get_job("nope").await.map(|_| ()),
        api.stop_job("nope").await.map(|_| ()),
        api.signal_job("nope", libc::SIGTERM).await,
    ] {
        assert!(matches!(r, Err(HostError::NotFound(_))), "{r:?}");
    }
    assert_eq!(api.list_jobs().await.unwrap().len(), 1);
}

async fn a_job_that_exits_non_zero_has_crashed_with_its_code_and_logs(api: &dyn HostApi) {
    let mut exits = fake_job("j2", &["exit", "3"]);
    exits.config.env.insert("FAKE_RUN_MS".into(), "50".into());
    api.add_job(exits).await.unwrap();
    let d = api.wait_job("j2").await.unwrap();
    assert_eq!((d.status, d.exit.unwrap().code), (JobStatus::Crashed, 3));
    let logs: Vec<_> = api.logs("j2", false).await.unwrap().collect().await;
    assert_eq!(logs[0].msg, "started: exit 3");
    assert_eq!(api.status().await.unwrap().job_count, 0);
}

async fn stop_kills_a_job_that_ignores_sigterm_after_the_grace(api: &dyn HostApi) {
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
}

async fn a_signal_reaches_the_job(api: &dyn HostApi) {
    api.add_job(fake_job("j1", &["serve"])).await.unwrap();
    api.signal_job("j1", libc::SIGTERM).await.unwrap();
    let d = api.wait_job("j1").await.unwrap();
    // As on runc: the init passes SIGTERM on and exits 128 + 15 itself.
    let e = d.exit.unwrap();
    assert_eq!((e.code, e.signal), (143, None));
    assert!(matches!(
        api.signal_job("j1", libc::SIGTERM).await,
        Err(HostError::Conflict(_))
    ));
}

async fn a_failed_start_is_reported_and_cannot_be_signalled(api: &dyn HostApi) {
    let f = api.add_job(fake_job("j4", &["fail-start"])).await.unwrap();
    assert_eq!(f.status, JobStatus::Failed);
    assert!(f.error.unwrap().contains("could not start"));
    assert!(matches!(
        api.signal_job("j4", 9).await,
        Err(HostError::Conflict(_))
    ));
    assert_eq!(api.status().await.unwrap().job_count, 0);
}

async fn events_report_every_step(api: &dyn HostApi) {
    let mut events = api.events().await.unwrap();
    api.add_job(fake_job("j1", &["serve"])).await.unwrap();
    api.add_job(fake_job("j2", &["exit", "3"])).await.unwrap();
    api.add_job(fake_job("j4", &["fail-start"])).await.unwrap();
    api.wait_job("j2").await.unwrap();
    api.stop_job("j1").await.unwrap();
    api.wait_job("j1").await.unwrap();
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

/// The host API starts containers as root: every path refuses a request without the cluster
/// token or with another one (401), and answers with it.
#[tokio::test]
async fn the_http_api_requires_the_cluster_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (agent, _dir) = agent().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        async move { slipway_host::http::serve(Arc::new(agent), listener, "the-token").await },
    );
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/host/status"),
        ("GET", "/host/jobs"),
        ("GET", "/host/events"),
        ("PUT", "/host/jobs/x"),
        ("DELETE", "/host/jobs/x"),
        ("GET", "/host/jobs/x/logs"),
        ("POST", "/host/jobs/x/attach"),
    ] {
        for token in [None, Some("wrong"), Some("the-token-and-more")] {
            let mut req = http.request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status().as_u16(),
                401,
                "{method} {path} with {token:?}"
            );
        }
    }
    let ok = http
        .get(format!("{base}/host/status"))
        .bearer_auth("the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // The client sends the token it was given; a wrong one gets the server's reason.
    assert!(HttpHost::new(&base, "the-token").list_jobs().await.is_ok());
    let err = HttpHost::new(&base, "wrong").status().await.unwrap_err();
    assert!(err.to_string().contains("invalid cluster token"), "{err}");
}
