//! The git receiver's answers over HTTP, without git or a build: what it says when the app
//! cannot be read.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use slipway_builder::push::Pusher;
use slipway_builder::receiver::{Receiver, ReceiverConfig};
use slipway_builder::{BuildContext, JobExit, JobRunner, RunnerError};
use slipway_host::{HostJob, LogLine};
use slipway_scheduler::SchedError;
use slipway_store::Store;
use slipway_types::App;
use std::sync::Arc;

/// No job ever runs in these tests: every call says so.
pub struct NoJobs;

fn no_jobs() -> RunnerError {
    SchedError::Unavailable("these tests run no jobs".into()).into()
}

#[async_trait]
impl JobRunner for NoJobs {
    async fn start(&self, _: &App, _: HostJob) -> Result<String, RunnerError> {
        Err(no_jobs())
    }
    async fn output(&self, _: &App, _: &str) -> Result<BoxStream<'static, LogLine>, RunnerError> {
        Err(no_jobs())
    }
    async fn wait(&self, _: &App, _: &str) -> Result<JobExit, RunnerError> {
        Err(no_jobs())
    }
    async fn stop(&self, _: &App, _: &str) -> Result<(), RunnerError> {
        Err(no_jobs())
    }
}

/// An unreachable database answers the pusher with the status the controller's API gives the
/// same store error (503: try again), not a 500 or a 404, and says what it could not read.
#[tokio::test]
async fn a_store_error_answers_git_with_the_apis_status() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sql = Arc::new(
        slipway_store::open(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap(),
    );
    let store: Arc<dyn Store> = sql.clone();
    store
        .create_app("shop", &Default::default(), None)
        .await
        .unwrap();
    let pusher = Arc::new(Pusher {
        store: store.clone(),
        build: BuildContext {
            blobs: Arc::new(
                slipway_blobstore::FsBlobStore::open(dir.path().join("blobs")).unwrap(),
            ),
            jobs: Arc::new(NoJobs),
            data_dir: dir.path().join("build"),
            buildpacks_dir: dir.path().join("buildpacks"),
            limits: Default::default(),
            caches: None,
            owner: None,
        },
        default_stack: "busybox".into(),
    });
    let receiver = Receiver::new(
        ReceiverConfig {
            repos_dir: dir.path().join("repos"),
            hook_exe: "/bin/false".into(),
            server_url: "http://unused".into(),
            api_key: "k".into(),
        },
        store,
        pusher,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, receiver.router()).into_future());
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{url}{path}")).send();

    let r = get("/shop.git/info/refs?service=git-receive-pack")
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the receiver works while the store does");

    sql.close().await;
    let want = slipway_api_error::status_of(&sql.find_app("shop").await.unwrap_err());
    let r = get("/shop.git/info/refs?service=git-receive-pack")
        .await
        .unwrap();
    assert_eq!(r.status(), want);
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("cannot read app \"shop\""), "{text}");
}
