//! The registry v2 protocol, request by request.

use crate::{Server, error_code};
use reqwest::Method;
use slipway_blobstore::Digest;

#[tokio::test]
async fn ping_needs_the_key_and_says_its_version() {
    let s = Server::start().await;
    let resp = s.http.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"slipway\""
    );
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0",
        "docker reads it on the 401"
    );
    let resp = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn chunked_upload_then_head_and_get() {
    let s = Server::start().await;
    s.create_app("chunky").await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&data);

    let resp = s
        .req(Method::POST, "/v2/chunky/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/v2/chunky/blobs/uploads/"),
        "{location}"
    );

    let resp = s
        .req(Method::PATCH, &location)
        .header("Content-Range", "0-39999")
        .body(data[..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], "0-39999");

    // A chunk that does not continue the upload: 416, nothing appended.
    let resp = s
        .req(Method::PATCH, &location)
        .header("Content-Range", "10-20")
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);

    let resp = s
        .req(Method::PATCH, &location)
        .body(data[40_000..90_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["range"], "0-89999");

    // The last chunk with the PUT.
    let resp = s
        .req(Method::PUT, &format!("{location}?digest={digest}"))
        .body(data[90_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        resp.headers()["location"],
        format!("/v2/chunky/blobs/{digest}").as_str()
    );

    let resp = s
        .req(Method::HEAD, &format!("/v2/chunky/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "100000");
    let resp = s
        .req(Method::GET, &format!("/v2/chunky/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
    // The upload is finished: its URL is gone.
    let resp = s.req(Method::GET, &location).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(s.reg.stats().blobs_uploaded, 1);
}

#[tokio::test]
async fn digest_mismatch_is_digest_invalid_and_stores_nothing() {
    let s = Server::start().await;
    s.create_app("liar").await;
    let claimed = Digest::of_bytes(b"what I claim");
    // Monolithic.
    let resp = s
        .req(
            Method::POST,
            &format!("/v2/liar/blobs/uploads/?digest={claimed}"),
        )
        .body(b"what I send".to_vec())
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"));
    assert!(message.contains("digest mismatch"), "{message}");
    // Chunked.
    let resp = s
        .req(Method::POST, "/v2/liar/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = s
        .req(Method::PUT, &format!("{location}?digest={claimed}"))
        .body(b"something else".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "DIGEST_INVALID");
    assert!(s.blobs.head(&claimed).await.unwrap().is_none());
    // What was sent is stored only as the upload's chunk, which nothing names (garbage
    // collection removes it after its grace period).
    let listed: Vec<_> = s
        .blobs
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.digest)
        .collect();
    assert_eq!(listed, [Digest::of_bytes(b"something else")]);
    assert!(
        !s.store
            .shared_state_blobs()
            .await
            .unwrap()
            .contains(&listed[0].to_string())
    );
    // A digest that is not one.
    let resp = s
        .req(Method::HEAD, "/v2/liar/blobs/sha256:..%2F..%2Fetc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // No upload left behind: the failed one is gone.
    let resp = s.req(Method::GET, &location).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn unknown_app_is_name_unknown() {
    let s = Server::start().await;
    for (method, path) in [
        (Method::POST, "/v2/ghost/blobs/uploads/"),
        (Method::GET, "/v2/ghost/manifests/latest"),
        (Method::GET, "/v2/Bad..Name/tags/list"),
    ] {
        let resp = s.req(method, path).send().await.unwrap();
        let (status, code, message) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"), "{path}");
        assert!(message.contains("slipway create"), "{message}");
    }
}

/// A store error answers the registry's client with the status the controller's API gives the
/// same error on the same port (one mapping): an unreachable database is a 503 both ways, in
/// each one's wire format, with the same message.
#[tokio::test]
async fn a_store_error_answers_the_same_status_as_the_api() {
    let s = Server::start().await;
    s.create_app("shop").await;
    s.sql.close().await;
    let api = s.req(Method::GET, "/apps/shop").send().await.unwrap();
    let api_status = api.status().as_u16();
    let api_body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(
        (api_status, api_body["code"].as_str()),
        (503, Some("unavailable")),
        "{api_body}"
    );
    for (method, path) in [
        (Method::GET, "/v2/shop/tags/list"),
        (Method::POST, "/v2/shop/blobs/uploads/"),
    ] {
        let resp = s.req(method, path).send().await.unwrap();
        let (status, code, message) = error_code(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (api_status, "UNAVAILABLE"),
            "{path}"
        );
        assert_eq!(message, api_body["message"].as_str().unwrap(), "{path}");
    }
}

#[tokio::test]
async fn cross_repo_mount_and_abandoned_uploads() {
    let s = Server::start().await;
    s.create_app("one").await;
    s.create_app("two").await;
    let data = b"shared layer".to_vec();
    let d = Digest::of_bytes(&data);
    let resp = s
        .req(Method::POST, &format!("/v2/one/blobs/uploads/?digest={d}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = s
        .req(
            Method::POST,
            &format!("/v2/two/blobs/uploads/?mount={d}&from=one"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "a blob the server has is mounted");
    let missing = Digest::of_bytes(b"not here");
    let resp = s
        .req(
            Method::POST,
            &format!("/v2/two/blobs/uploads/?mount={missing}&from=one"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "else an upload starts");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        s.reg
            .clean_uploads(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let resp = s
        .req(Method::PATCH, &location)
        .body(b"late".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn manifest_errors_are_clear() {
    let s = Server::start().await;
    s.create_app("strict").await;
    let layer = slipway_registry::testimage::LayerBuilder::new()
        .file("a", 0o644, b"a")
        .finish();
    let ld = Digest::of_bytes(&layer);
    let config = br#"{"os":"linux","config":{}}"#.to_vec();
    let cd = Digest::of_bytes(&config);
    let manifest = |layer_digest: &Digest| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": slipway_registry::spec::OCI_MANIFEST,
            "config": {"mediaType": slipway_registry::spec::OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": slipway_registry::spec::OCI_LAYER_TAR, "digest": layer_digest.to_string(), "size": layer.len()}],
        }))
        .unwrap()
    };
    let put = |body: Vec<u8>, reference: &str| {
        s.req(Method::PUT, &format!("/v2/strict/manifests/{reference}"))
            .header("Content-Type", slipway_registry::spec::OCI_MANIFEST)
            .body(body)
            .send()
    };
    // The blobs were never uploaded.
    let (status, code, _) = error_code(put(manifest(&ld), "v1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    for (d, body) in [(&ld, layer.clone()), (&cd, config.clone())] {
        let resp = s
            .req(
                Method::POST,
                &format!("/v2/strict/blobs/uploads/?digest={d}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // The image has no command and the app no process types: nothing could run.
    let (_, code, message) = error_code(put(manifest(&ld), "v1").await.unwrap()).await;
    assert_eq!(code, "MANIFEST_INVALID");
    assert!(message.contains("neither Entrypoint nor Cmd"), "{message}");
    // A digest reference must be the manifest's digest.
    let other = Digest::of_bytes(b"x");
    let (_, code, _) = error_code(put(manifest(&ld), other.as_str()).await.unwrap()).await;
    assert_eq!(code, "DIGEST_INVALID");
    // Indexes are refused with what to do.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": slipway_registry::spec::OCI_INDEX, "manifests": []
    }))
    .unwrap();
    let (_, code, message) = error_code(put(index, "multi").await.unwrap()).await;
    assert_eq!(code, "MANIFEST_INVALID");
    assert!(message.contains("single-platform"), "{message}");
    // Bad tags and unknown manifests.
    let (status, code, _) = error_code(put(manifest(&ld), "-bad").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "TAG_INVALID"));
    let resp = s
        .req(Method::GET, "/v2/strict/manifests/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "MANIFEST_UNKNOWN");
    // Nothing was created for the app.
    let app = s.store.find_app("strict").await.unwrap();
    assert!(app.release.is_none());
    assert!(s.store.list_releases(app.id).await.unwrap().is_empty());
}

/// Hostile layers are refused when their manifest is pushed, with the reason.
#[tokio::test]
async fn hostile_layers_are_refused_at_push() {
    use slipway_registry::testimage::{ImageBuilder, LayerBuilder, gzip};
    let s = Server::start().await;
    let app = s.create_app("hostile").await;
    let big = LayerBuilder::new()
        .file("big", 0o644, &[1u8; 200_000])
        .finish();
    let truncated = {
        let gz = gzip(&big).unwrap();
        gz[..gz.len() / 2].to_vec()
    };
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "traversal",
            LayerBuilder::new()
                .raw_file("../../../tmp/evil", b"x")
                .finish(),
            "outside the image root",
        ),
        (
            "absolute",
            LayerBuilder::new().raw_file("/etc/evil", b"x").finish(),
            "outside the image root",
        ),
        (
            "symlink",
            LayerBuilder::new()
                .symlink("www", "/etc")
                .file("www/evil", 0o644, b"x")
                .finish(),
            "through the symlink",
        ),
        ("truncated", truncated, "truncated"),
    ];
    for (name, layer, why) in cases {
        let dir = s.dir.path().join(name);
        let gz = name == "truncated";
        // The truncated layer is already gzip'd bytes: write it as a gzip layer by hand.
        let builder = ImageBuilder::new().layer(layer.clone()).cmd(&["true"]);
        let image = if gz {
            write_raw_gzip_layout(&dir, &builder, &layer)
        } else {
            builder.write_oci(&dir).unwrap();
            slipway_registry::local::open(&dir).unwrap()
        };
        let err = s
            .client()
            .push(
                "hostile",
                &image,
                name,
                true,
                std::sync::Arc::new(slipway_registry::client::Quiet),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LAYER_INVALID") && err.contains(why),
            "{name}: {err}"
        );
    }
    assert!(s.store.list_releases(app.id).await.unwrap().is_empty());
    assert!(!std::path::Path::new("/tmp/evil").exists());
}

/// An OCI layout whose only layer is `gz` as is (e.g. truncated), declared as gzip.
fn write_raw_gzip_layout(
    dir: &std::path::Path,
    b: &slipway_registry::testimage::ImageBuilder,
    gz: &[u8],
) -> slipway_registry::local::LocalImage {
    use slipway_registry::spec;
    b.write_oci(dir).unwrap();
    let blobs = dir.join("blobs/sha256");
    let config = b.config();
    let cd = Digest::of_bytes(&config);
    let ld = Digest::of_bytes(gz);
    std::fs::write(blobs.join(ld.hex()), gz).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": spec::OCI_MANIFEST,
        "config": {"mediaType": spec::OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": spec::OCI_LAYER_GZIP, "digest": ld.to_string(), "size": gz.len()}],
    }))
    .unwrap();
    let md = Digest::of_bytes(&manifest);
    std::fs::write(blobs.join(md.hex()), &manifest).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": spec::OCI_MANIFEST, "digest": md.to_string(), "size": manifest.len()}]}))
        .unwrap(),
    )
    .unwrap();
    slipway_registry::local::open(dir).unwrap()
}

/// Tags and manifest marks an older version kept in files move into the store at start; the
/// files go, and so do those of deleted apps and uploads in progress.
#[tokio::test]
async fn tags_kept_in_files_by_an_older_version_move_into_the_store() {
    let s = Server::start().await;
    let app = s.create_app("legacy").await;
    let manifest = b"{\"schemaVersion\":2}".to_vec();
    let d = Digest::of_bytes(&manifest);
    let dir = s.dir.path().join("registry");
    let repo = dir.join("repos").join(app.id.to_string());
    std::fs::create_dir_all(repo.join("tags")).unwrap();
    std::fs::create_dir_all(repo.join("manifests")).unwrap();
    std::fs::write(repo.join("tags/v1"), d.as_str()).unwrap();
    std::fs::write(repo.join("tags/.tmp-1234"), d.as_str()).unwrap();
    std::fs::write(repo.join("tags/junk"), "not a digest").unwrap();
    std::fs::write(
        repo.join("manifests").join(d.hex()),
        slipway_registry::spec::OCI_MANIFEST,
    )
    .unwrap();
    let gone = dir.join("repos").join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(gone.join("tags")).unwrap();
    std::fs::write(gone.join("tags/v1"), d.as_str()).unwrap();
    std::fs::create_dir_all(dir.join("uploads")).unwrap();
    std::fs::write(dir.join("uploads/half"), b"half a layer").unwrap();

    assert_eq!(s.reg.import_legacy_files().await.unwrap(), 1);
    let resp = s
        .req(Method::GET, "/v2/legacy/tags/list")
        .send()
        .await
        .unwrap();
    let tags: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_eq!(
        s.store
            .registry_manifest(app.id, d.as_str())
            .await
            .unwrap()
            .as_deref(),
        Some(slipway_registry::spec::OCI_MANIFEST)
    );
    assert!(!dir.join("repos").exists());
    assert!(!dir.join("uploads").exists());
    // Nothing left to import the second time.
    assert_eq!(s.reg.import_legacy_files().await.unwrap(), 0);
}
