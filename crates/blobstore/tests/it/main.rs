//! The conformance suite: every case runs on [`FsBlobStore`], on [`HttpBlobStore`] talking to
//! a real axum server (on port 0) over a second `FsBlobStore`, and on [`PgBlobStore`] against a
//! real PostgreSQL.

mod gc;
mod suite;

use slipway_blobstore::{BlobStore, Digest, FsBlobStore, HttpBlobStore, PgBlobStore};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn BlobStore>,
    /// The filesystem store underneath (for checking what is on disk), if any.
    pub fs: Option<FsBlobStore>,
    /// The PostgreSQL store underneath and its database, if any.
    pub pg: Option<(PgBlobStore, sqlx::PgPool)>,
    pub _dir: Option<tempfile::TempDir>,
    pub _db: Option<slipway_testkit::TestDatabase>,
    /// The server's URL (HTTP backend only).
    pub url: Option<String>,
}

pub fn fs_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    Backend {
        name: "fs",
        store: Arc::new(fs.clone()),
        fs: Some(fs),
        pg: None,
        _dir: Some(dir),
        _db: None,
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
        fs: Some(fs),
        pg: None,
        _dir: Some(dir),
        _db: None,
        url: Some(format!("http://{addr}")),
    }
}

/// The PostgreSQL backend, or `None` (a counted skip) without a PostgreSQL server.
pub async fn pg_backend() -> Option<Backend> {
    let db = slipway_testkit::postgres_database().await?;
    let pg = PgBlobStore::connect(&db.url).await.unwrap();
    // A second open of the same database finds its tables there (several controllers start).
    PgBlobStore::connect(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    Some(Backend {
        name: "pg",
        store: Arc::new(pg.clone()),
        fs: None,
        pg: Some((pg, pool)),
        _dir: None,
        _db: Some(db),
        url: None,
    })
}

impl Backend {
    /// What an unfinished put left behind: temp files, or chunk rows of no blob.
    pub async fn leftovers(&self) -> u64 {
        if let Some(fs) = &self.fs {
            return std::fs::read_dir(fs.dir().join("tmp")).unwrap().count() as u64;
        }
        let (pg, _) = self.pg.as_ref().unwrap();
        pg.orphaned_chunks().await.unwrap()
    }

    /// Ages a stored blob (as if it had been stored at `t`).
    pub async fn set_modified(&self, d: &Digest, t: SystemTime) {
        if let Some(fs) = &self.fs {
            std::fs::File::open(fs.path(d))
                .unwrap()
                .set_modified(t)
                .unwrap();
            return;
        }
        let (_, pool) = self.pg.as_ref().unwrap();
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let n = sqlx::query("UPDATE blob_store_blobs SET modified_ms = $2 WHERE digest = $1")
            .bind(d.as_str())
            .bind(ms)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1, "{d} is not stored");
    }
}

/// One named test per case per backend: `fs::CASE`, `http::CASE` and `pg::CASE`.
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
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(b) = crate::pg_backend().await else {
                        return;
                    };
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
    blobs_other_state_names_are_kept,
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

/// A body that gives `ok` bytes and then never ends, like a client that stops sending.
struct Stalled {
    ok: usize,
}

impl tokio::io::AsyncRead for Stalled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.ok == 0 {
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(self.ok);
        buf.put_slice(&vec![b's'; n]);
        self.ok -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Two controllers on one database see one store; a put abandoned half-way (its future
/// dropped, as when a client disconnects) leaves nothing behind in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stores_on_one_database_share_blobs_and_abandoned_puts_leave_nothing() {
    let Some(b) = pg_backend().await else {
        return;
    };
    let other = PgBlobStore::connect(&b._db.as_ref().unwrap().url)
        .await
        .unwrap();
    let content = vec![7u8; 3 * 1024 * 1024 + 5];
    let d = Digest::of_bytes(&content);
    b.store
        .put(Box::new(std::io::Cursor::new(content.clone())), Some(&d))
        .await
        .unwrap();
    let (info, mut r) = other.get(&d).await.unwrap().expect("seen by the other");
    assert_eq!(info.size, content.len() as u64);
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut read)
        .await
        .unwrap();
    assert!(
        read == content,
        "content differs when read through the other"
    );
    assert!(other.delete(&d).await.unwrap());
    assert!(b.store.head(&d).await.unwrap().is_none());

    let put = b.store.put(Box::new(Stalled { ok: 2 << 20 }), None);
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(2), put)
            .await
            .is_err(),
        "a stalled put finished"
    );
    // The rollback happens when the dropped connection goes back to the pool.
    for _ in 0..50 {
        if b.leftovers().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(b.leftovers().await, 0);
    assert!(b.store.list().await.unwrap().is_empty());

    // A put whose process died long ago: removed when a store connects.
    let (_, pool) = b.pg.as_ref().unwrap();
    sqlx::query("INSERT INTO blob_store_uploads (upload_id, started_ms) VALUES ('dead', 0)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO blob_store_chunks (upload_id, seq, data) VALUES ('dead', 0, $1)")
        .bind(vec![1u8; 10])
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(b.leftovers().await, 1);
    PgBlobStore::connect(&b._db.as_ref().unwrap().url)
        .await
        .unwrap();
    assert_eq!(b.leftovers().await, 0);
}

/// The controller's router refuses to delete what an artifact or other state names (409), keeps
/// everything when it cannot tell (503), and deletes the rest.
#[tokio::test]
async fn guarded_deletes_keep_what_artifacts_and_other_state_name() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBlobStore::open(dir.path()).unwrap();
    let put = |s: &'static [u8]| {
        let fs = fs.clone();
        async move {
            fs.put(Box::new(std::io::Cursor::new(s.to_vec())), None)
                .await
                .unwrap()
                .digest
        }
    };
    let (repo, garbage, unsure) = (
        put(b"repo tar").await,
        put(b"garbage").await,
        put(b"?").await,
    );
    let kept = vec![repo.to_string()];
    let app = slipway_blobstore::http::router_guarded_keeping(
        Arc::new(fs.clone()),
        Arc::new(|| Box::pin(async { Ok(vec![]) })),
        Arc::new(move || {
            let kept = kept.clone();
            Box::pin(async move { Ok(kept) })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let del = |d: &Digest| http.delete(format!("http://{addr}/blobs/{d}")).send();
    let r = del(&repo).await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("stored git repository"));
    assert!(fs.head(&repo).await.unwrap().is_some());
    assert_eq!(del(&garbage).await.unwrap().status(), 200);
    assert!(fs.head(&garbage).await.unwrap().is_none());

    // A lister that fails: nothing is deleted.
    let failing = slipway_blobstore::http::router_guarded_keeping(
        Arc::new(fs.clone()),
        Arc::new(|| Box::pin(async { Ok(vec![]) })),
        Arc::new(|| Box::pin(async { Err("database down".to_string()) })),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr2 = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, failing).await.unwrap() });
    let r = http
        .delete(format!("http://{addr2}/blobs/{unsure}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(fs.head(&unsure).await.unwrap().is_some());
}
