//! The blob store in `slipway server`: served on the controller's port behind its API key, and
//! kept in `<data>/blobs`.

use crate::support::*;
use slipway_blobstore::{BlobStore, Digest, HttpBlobStore};
use tokio::io::AsyncReadExt;

#[test]
fn the_server_serves_its_blob_store_behind_the_api_key() {
    let s = TestServer::start();
    let content = b"a slug, in the server's blob store".to_vec();
    let d = Digest::of_bytes(&content);
    let store = HttpBlobStore::new(&s.url, Some(s.key()));
    block_on(async {
        let info = store
            .put(Box::new(std::io::Cursor::new(content.clone())), Some(&d))
            .await
            .unwrap();
        assert_eq!(info.size, content.len() as u64);
        let (_, mut r) = store.get(&d).await.unwrap().expect("stored");
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, content);
        assert_eq!(store.list().await.unwrap().len(), 1);
        // Without the key: 401, and nothing is stored.
        let anon = HttpBlobStore::new(&s.url, None);
        let e = anon.head(&d).await.unwrap_err().to_string();
        assert!(e.contains("401"), "{e}");
        let other = b"anonymous upload".to_vec();
        assert!(
            anon.put(Box::new(std::io::Cursor::new(other.clone())), None)
                .await
                .is_err()
        );
        assert!(
            store
                .head(&Digest::of_bytes(&other))
                .await
                .unwrap()
                .is_none()
        );
    });
    // On disk, content-addressed.
    let on_disk = s.dir.path().join("data/blobs/sha256").join(d.hex());
    assert_eq!(std::fs::read(on_disk).unwrap(), content);
}

#[test]
fn the_server_deletes_blobs_no_artifact_names_once_they_are_old() {
    let s = TestServer::start_with(&[
        "--no-host".into(),
        "--blob-gc-interval".into(),
        "1s".into(),
        "--blob-gc-grace".into(),
        "2s".into(),
    ]);
    let store = HttpBlobStore::new(&s.url, Some(s.key()));
    let put = |c: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .put(Box::new(std::io::Cursor::new(c.to_vec())), None)
                .await
                .unwrap()
                .digest
        }
    };
    block_on(async {
        let slug = put(b"a slug a release uses").await;
        let garbage = put(b"an upload nobody finished").await;
        s.client()
            .create_artifact(&slipway_types::NewArtifact {
                kind: slipway_types::ArtifactType::Slug,
                uri: format!("blob:{slug}"),
                manifest: None,
                meta: Default::default(),
                size: Some(21),
                digest: Some(slug.to_string()),
            })
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.head(&garbage).await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the unused blob was never collected"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(
            store.head(&slug).await.unwrap().is_some(),
            "a used blob was deleted"
        );
    });
}

/// With a PostgreSQL `--database-url`, the blob store is in that database (every controller on
/// it serves the same blobs), not in `<data>/blobs`.
#[test]
fn with_a_postgres_database_the_blob_store_is_in_it() {
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let s = TestServer::start_with(&["--no-host".into(), "--database-url".into(), db.url.clone()]);
    let content = b"a slug every controller serves".to_vec();
    let d = Digest::of_bytes(&content);
    let store = HttpBlobStore::new(&s.url, Some(s.key()));
    block_on(async {
        store
            .put(Box::new(std::io::Cursor::new(content.clone())), Some(&d))
            .await
            .unwrap();
        let pg = slipway_blobstore::PgBlobStore::connect(&db.url)
            .await
            .unwrap();
        let (info, mut r) = pg.get(&d).await.unwrap().expect("in PostgreSQL");
        assert_eq!(info.size, content.len() as u64);
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, content);
    });
    assert!(
        !s.dir
            .path()
            .join("data/blobs/sha256")
            .join(d.hex())
            .exists()
    );
}
