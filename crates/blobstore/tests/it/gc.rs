//! Garbage collection cases (run on both backends with the rest of the suite): what artifacts name is kept, young blobs are kept,
//! the rest is deleted.

use crate::Backend;
use slipway_blobstore::gc::{self, GcReport};
use slipway_blobstore::{BlobStore, Digest};
use slipway_types::Artifact;
use std::time::{Duration, SystemTime};

fn artifact(v: serde_json::Value) -> Artifact {
    let mut base = serde_json::json!({
        "id": uuid::Uuid::new_v4(), "meta": {}, "created_at": "2026-01-01T00:00:00Z"
    });
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

async fn put(store: &dyn BlobStore, s: &str) -> Digest {
    store
        .put(Box::new(std::io::Cursor::new(s.as_bytes().to_vec())), None)
        .await
        .unwrap()
        .digest
}

pub async fn unreferenced_old_blobs_are_deleted_and_the_rest_kept(b: &Backend) {
    let s = &*b.store;
    let slug = put(s, "slug").await;
    let slug_by_uri = put(s, "slug named by its uri only").await;
    let manifest = put(s, "manifest").await;
    let config = put(s, "config").await;
    let layer1 = put(s, "layer 1").await;
    let layer2 = put(s, "layer 2").await;
    let garbage1 = put(s, "garbage 1").await;
    let garbage2 = put(s, "garbage 2").await;
    let artifacts = vec![
        artifact(serde_json::json!({
            "type": "slug", "uri": format!("blob:{slug}"), "digest": slug.to_string()
        })),
        artifact(serde_json::json!({
            "type": "slug", "uri": format!("blob:{slug_by_uri}")
        })),
        artifact(serde_json::json!({
            "type": "image", "uri": format!("app@{manifest}"),
            "digest": manifest.to_string(),
            "manifest": {
                "schemaVersion": 2,
                "config": {"digest": config.to_string()},
                "layers": [{"digest": layer1.to_string()}, {"digest": layer2.to_string()}]
            }
        })),
    ];
    let listed = || {
        let a = artifacts.clone();
        async move || Ok::<_, std::convert::Infallible>(a)
    };
    // Now: everything is young, nothing goes.
    let r = gc::collect(s, listed(), gc::DEFAULT_GRACE, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        r,
        GcReport {
            scanned: 8,
            referenced: 6,
            young: 2,
            deleted: vec![],
            freed_bytes: 0
        },
        "{}",
        b.name
    );
    // Two hours later: the garbage goes, what artifacts name stays.
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let r = gc::collect(s, listed(), gc::DEFAULT_GRACE, later)
        .await
        .unwrap();
    let mut deleted = r.deleted.clone();
    deleted.sort();
    let mut want = vec![garbage1.clone(), garbage2.clone()];
    want.sort();
    assert_eq!(deleted, want, "{}", b.name);
    assert_eq!(r.freed_bytes, 18);
    assert_eq!(r.referenced, 6);
    for d in [&slug, &slug_by_uri, &manifest, &config, &layer1, &layer2] {
        assert!(
            s.head(d).await.unwrap().is_some(),
            "{}: {d} deleted",
            b.name
        );
    }
    for d in [&garbage1, &garbage2] {
        assert!(s.head(d).await.unwrap().is_none(), "{}: {d} kept", b.name);
    }
    // Failing to list artifacts deletes nothing.
    let orphan = put(s, "orphan").await;
    let e = gc::collect(
        s,
        async || Err("database down".to_string()),
        Duration::ZERO,
        later,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("database down"));
    assert!(s.head(&orphan).await.unwrap().is_some());
}

pub async fn putting_an_existing_blob_again_makes_it_young(b: &Backend) {
    let s = &*b.store;
    let d = put(s, "reused layer").await;
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    b.set_modified(&d, old).await;
    let none = || async || Ok::<_, std::convert::Infallible>(vec![]);
    // Re-pushed (a registry upload of a layer it has): young again, so kept.
    s.put(
        Box::new(std::io::Cursor::new(b"reused layer".to_vec())),
        Some(&d),
    )
    .await
    .unwrap();
    let r = gc::collect(s, none(), gc::DEFAULT_GRACE, SystemTime::now())
        .await
        .unwrap();
    assert!(r.deleted.is_empty(), "{}: {r:?}", b.name);
    // Aged again and not re-pushed: deleted.
    b.set_modified(&d, old).await;
    let r = gc::collect(s, none(), gc::DEFAULT_GRACE, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(r.deleted, [d], "{}", b.name);
}

pub async fn blobs_other_state_names_are_kept(b: &Backend) {
    let s = &*b.store;
    let repo = put(s, "a git repository tar").await;
    let garbage = put(s, "garbage").await;
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let none = async || Ok::<_, String>(vec![]);
    // Failing to list the other state deletes nothing.
    let e = gc::collect_keeping(
        s,
        none,
        async || Err("database down".to_string()),
        gc::DEFAULT_GRACE,
        later,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("database down"), "{e}");
    assert!(s.head(&garbage).await.unwrap().is_some());
    let kept = vec![repo.to_string(), "not a digest".to_string()];
    let r = gc::collect_keeping(s, none, async || Ok(kept), gc::DEFAULT_GRACE, later)
        .await
        .unwrap();
    assert_eq!(r.deleted, [garbage], "{}", b.name);
    assert_eq!(r.referenced, 1);
    assert!(s.head(&repo).await.unwrap().is_some());
}
