//! Registry and git state shared by controllers: manifests, tags, chunked uploads, git repos.

use super::app;
use crate::Backend;
use slipway_store::{Store, StoreError};
use slipway_types::Id;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

pub async fn registry_manifests_and_tags(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "imgs").await;
    let other = app(s, "other").await;
    assert_eq!(s.registry_manifest(a.id, D1).await.unwrap(), None);
    s.put_registry_manifest(a.id, D1, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    // Again: idempotent.
    s.put_registry_manifest(a.id, D1, "application/vnd.oci.image.manifest.v1+json")
        .await
        .unwrap();
    assert_eq!(
        s.registry_manifest(a.id, D1).await.unwrap().as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    // Per app: the other app did not receive it.
    assert_eq!(s.registry_manifest(other.id, D1).await.unwrap(), None);

    s.set_registry_tag(a.id, "v1", D1).await.unwrap();
    s.set_registry_tag(a.id, "latest", D1).await.unwrap();
    s.set_registry_tag(a.id, "latest", D2).await.unwrap();
    assert_eq!(
        s.registry_tag(a.id, "latest").await.unwrap().as_deref(),
        Some(D2)
    );
    assert_eq!(
        s.registry_tag(a.id, "v1").await.unwrap().as_deref(),
        Some(D1)
    );
    assert_eq!(s.registry_tag(other.id, "v1").await.unwrap(), None);
    assert_eq!(s.list_registry_tags(a.id).await.unwrap(), ["latest", "v1"]);
    assert!(s.list_registry_tags(other.id).await.unwrap().is_empty());
    // An app that does not exist: not found.
    let r = s.set_registry_tag(Id::new_v4(), "v1", D1).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");

    // Everything goes with its app.
    s.delete_app(a.id).await.unwrap();
    assert!(s.list_registry_tags(a.id).await.unwrap().is_empty());
    assert_eq!(s.registry_manifest(a.id, D1).await.unwrap(), None);
}

pub async fn registry_uploads_append_in_order(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "imgs").await;
    let id = Id::new_v4();
    assert_eq!(s.registry_upload(id).await.unwrap(), None);
    s.create_registry_upload(id, a.id).await.unwrap();
    let u = s.registry_upload(id).await.unwrap().unwrap();
    assert_eq!((u.app_id, u.size, u.chunks.len()), (a.id, 0, 0));
    assert_eq!(s.append_registry_upload(id, 0, D1, 10).await.unwrap(), 10);
    assert_eq!(s.append_registry_upload(id, 10, D2, 5).await.unwrap(), 15);
    // A writer that did not see the last append is refused, and nothing changes.
    let r = s.append_registry_upload(id, 10, D3, 5).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let u = s.registry_upload(id).await.unwrap().unwrap();
    assert_eq!(u.size, 15);
    assert_eq!(u.chunks, [D1, D2]);
    // Unknown upload: not found.
    let r = s.append_registry_upload(Id::new_v4(), 0, D1, 1).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert!(s.delete_registry_upload(id).await.unwrap());
    assert!(!s.delete_registry_upload(id).await.unwrap());
    assert_eq!(s.registry_upload(id).await.unwrap(), None);
}

pub async fn idle_registry_uploads_are_deleted(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "imgs").await;
    let (old, fresh) = (Id::new_v4(), Id::new_v4());
    s.create_registry_upload(old, a.id).await.unwrap();
    s.append_registry_upload(old, 0, D1, 3).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Nothing is idle since an hour ago.
    assert_eq!(s.delete_idle_registry_uploads(now - 3600).await.unwrap(), 0);
    s.create_registry_upload(fresh, a.id).await.unwrap();
    // Everything is idle since a minute from now.
    assert_eq!(s.delete_idle_registry_uploads(now + 60).await.unwrap(), 2);
    assert_eq!(s.registry_upload(old).await.unwrap(), None);
    assert!(
        !s.shared_state_blobs()
            .await
            .unwrap()
            .contains(&D1.to_string())
    );
}

pub async fn git_repo_digests_and_shared_blobs(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "gitapp").await;
    assert_eq!(s.git_repo_digest(a.id).await.unwrap(), None);
    s.set_git_repo_digest(a.id, D1).await.unwrap();
    s.set_git_repo_digest(a.id, D2).await.unwrap();
    assert_eq!(s.git_repo_digest(a.id).await.unwrap().as_deref(), Some(D2));
    let r = s.set_git_repo_digest(Id::new_v4(), D1).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");

    let img = app(s, "imgs").await;
    s.put_registry_manifest(img.id, D1, "m").await.unwrap();
    let up = Id::new_v4();
    s.create_registry_upload(up, img.id).await.unwrap();
    s.append_registry_upload(up, 0, D3, 1).await.unwrap();
    let mut blobs = s.shared_state_blobs().await.unwrap();
    blobs.sort();
    assert_eq!(blobs, [D1, D2, D3]);
    s.delete_app(a.id).await.unwrap();
    assert_eq!(s.git_repo_digest(a.id).await.unwrap(), None);
    let mut blobs = s.shared_state_blobs().await.unwrap();
    blobs.sort();
    assert_eq!(blobs, [D1, D3]);
}
