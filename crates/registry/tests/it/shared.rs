//! Two registries (two controllers) on one PostgreSQL store and one `PgBlobStore`: nothing a
//! push or pull needs is on one controller's disk.

use slipway_blobstore::{BlobStore, Digest, PgBlobStore};
use slipway_registry::Registry;
use slipway_store::Store;
use std::sync::Arc;

/// A registry with its own data dir on the shared store and blob store; its URL.
async fn serve(store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>, dir: &std::path::Path) -> String {
    let reg = Registry::open(store, blobs, dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, slipway_registry::router(reg))
            .await
            .unwrap()
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_started_on_one_controller_finishes_on_another_and_tags_are_shared() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(db) = slipway_testkit::postgres_database().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(slipway_store::open(&db.url).await.unwrap());
    let blobs: Arc<dyn BlobStore> = Arc::new(PgBlobStore::connect(&db.url).await.unwrap());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(store.clone(), blobs.clone(), dir_a.path()).await;
    let b = serve(store.clone(), blobs.clone(), dir_b.path()).await;
    store
        .create_app("shared", &Default::default(), Some("apps.test"))
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // A layer in two chunks: started and first chunk on A, second chunk and PUT on B.
    let layer = slipway_registry::testimage::LayerBuilder::new()
        .file("hello.txt", 0o644, &vec![b'h'; 300_000])
        .file("other.txt", 0o644, b"other")
        .finish();
    let ld = Digest::of_bytes(&layer);
    let (first, second) = layer.split_at(layer.len() / 2);
    let resp = http
        .post(format!("{a}/v2/shared/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = http
        .patch(format!("{a}{location}"))
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // B knows how far the upload is.
    let resp = http.get(format!("{b}{location}")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["range"].to_str().unwrap(),
        format!("0-{}", first.len() - 1)
    );
    // A chunk that does not continue the upload is refused on B too.
    let resp = http
        .patch(format!("{b}{location}"))
        .header("Content-Range", "0-3")
        .body(b"oops".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    let resp = http
        .patch(format!("{b}{location}"))
        .header(
            "Content-Range",
            format!("{}-{}", first.len(), layer.len() - 1),
        )
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = http
        .put(format!("{b}{location}?digest={ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    // The layer, whole, from A.
    let got = http
        .get(format!("{a}/v2/shared/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().as_ref() == layer.as_slice());
    // The upload is gone on both.
    for url in [&a, &b] {
        let resp = http.get(format!("{url}{location}")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }

    // The config monolithically on B, the manifest tagged through A.
    let config = br#"{"os":"linux","config":{"Cmd":["/bin/sh"]}}"#.to_vec();
    let cd = Digest::of_bytes(&config);
    let resp = http
        .post(format!("{b}/v2/shared/blobs/uploads/?digest={cd}"))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": slipway_registry::spec::OCI_MANIFEST,
        "config": {"mediaType": slipway_registry::spec::OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": slipway_registry::spec::OCI_LAYER_TAR, "digest": ld.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let md = Digest::of_bytes(&manifest);
    let resp = http
        .put(format!("{a}/v2/shared/manifests/v1?deploy=false"))
        .header("Content-Type", slipway_registry::spec::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    // B sees the tag and serves the manifest, by tag and by digest, with its media type.
    let tags: serde_json::Value = http
        .get(format!("{b}/v2/shared/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    for reference in ["v1".to_string(), md.to_string()] {
        let resp = http
            .get(format!("{b}/v2/shared/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{reference}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            slipway_registry::spec::OCI_MANIFEST
        );
        assert_eq!(
            resp.headers()["docker-content-digest"].to_str().unwrap(),
            md.as_str()
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &manifest[..]);
    }
    // Nothing of it is in either controller's data dir (only the verified-layer cache).
    for dir in [&dir_a, &dir_b] {
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name();
            assert_eq!(name, "verified", "unexpected local state {name:?}");
        }
    }
    // The manifest and tag keep their blobs from garbage collection.
    let kept = store.shared_state_blobs().await.unwrap();
    assert!(kept.contains(&md.to_string()), "{kept:?}");
}
