//! The conformance suite: every case runs on [`FsBlobStore`] and on [`HttpBlobStore`] talking to
//! a real axum server (on port 0) over a second `FsBlobStore`.

mod gc;
mod suite;

use slipway_blobstore::{BlobStore, FsBlobStore, HttpBlobStore};
use std::sync::Arc;

pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn BlobStore>,
    /// The filesystem store underneath (for checking what is on disk).
    pub fs: FsBlobStore,
    pub _dir: tempfile::TempDir,
    /// The server's URL (HTTP backend only).
    pub url: Option<String>,
}

pub fn fs_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    Backend {
        name: "fs",
        store: Arc::new(fs.clone()),
        fs,
        _dir: dir,
        url: None,
    }
}

pub async fn http_backend() -> Backend {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    let app = slipway_blobstore::http::router(Arc::new(fs.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server task ends with the test's runtime.
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Backend {
        name: "http",
        store: Arc::new(HttpBlobStore::new(
            format!("http://{addr}"),
            Some("k".into()),
        )),
        fs,
        _dir: dir,
        url: Some(format!("http://{addr}")),
    }
}

/// One named test per case per backend: `fs::CASE` and `http::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = crate::fs_backend();
                    crate::suite::$case(&b).await;
                }
            )*
        }
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = crate::http_backend().await;
                    crate::suite::$case(&b).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip,
    idempotent_put,
    put_without_expected_digest,
    mismatch_stores_nothing,
    concurrent_puts_of_the_same_blob,
    large_blob_streams,
    delete,
    list,
    absent_blob,
    interrupted_upload_stores_nothing,
    unreferenced_old_blobs_are_deleted_and_the_rest_kept,
    putting_an_existing_blob_again_makes_it_young,
);

#[tokio::test]
async fn open_removes_interrupted_uploads() {
    let dir = tempfile::tempdir().unwrap();
    FsBlobStore::open(dir.path()).unwrap();
    std::fs::write(dir.path().join("tmp/partial-upload"), b"half a layer").unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(fs.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn http_status_codes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = http_backend().await;
    let url = b.url.clone().unwrap();
    let http = reqwest::Client::new();
    let content = b"hello blobs".to_vec();
    let good = slipway_blobstore::Digest::of_bytes(&content);
    let other = slipway_blobstore::Digest::of_bytes(b"something else");

    // Bad digests: 400 with a JSON error on every method.
    for path in [
        "/blobs/sha256:xyz",
        "/blobs/md5:abc",
        "/blobs/sha256:..%2F..%2Fetc",
    ] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "GET {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_digest");
        let r = http
            .put(format!("{url}{path}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "PUT {path}");
    }
    // Mismatch: 422, nothing stored.
    let r = http
        .put(format!("{url}/blobs/{other}"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "digest_mismatch");
    assert!(body["message"].as_str().unwrap().contains(good.as_str()));
    // Absent: 404.
    let r = http
        .get(format!("{url}/blobs/{good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .head(format!("{url}/blobs/{good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Created, then 200 the second time.
    let r = http
        .put(format!("{url}/blobs/{good}"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .put(format!("{url}/blobs/{good}"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // GET/HEAD headers.
    for r in [
        http.get(format!("{url}/blobs/{good}"))
            .send()
            .await
            .unwrap(),
        http.head(format!("{url}/blobs/{good}"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"].to_str().unwrap(),
            content.len().to_string()
        );
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            good.as_str()
        );
    }
    let r = http
        .get(format!("{url}/blobs/{good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..]);
}
