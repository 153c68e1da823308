//! From a build to a running release (Flynn's `flynn-receiver` after the slugbuilder): the
//! build's slug as the deploy path describes it (the artifact, the release and the deploy itself
//! are `slipway_deploy`'s, shared with image pushes), and trimming old slug releases.

use crate::pipeline::Built;
use slipway_deploy::release::Slug;
use slipway_store::Store;
use slipway_types::{App, Artifact, ArtifactType, Id};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Inactive slugs kept per app when `app.meta["slug.keep"]` says nothing.
pub const DEFAULT_SLUGS_KEPT: usize = 10;
/// The app meta key for it.
pub const SLUGS_KEPT_KEY: &str = "slug.keep";

/// The slug `built` stored, built on `stack` from `commit`.
pub fn slug(built: &Built, stack: &str, commit: &str) -> Slug {
    Slug {
        digest: built.slug.digest.to_string(),
        size: built.slug.size,
        buildpacks: built.buildpacks.clone(),
        process_types: built.process_types.keys().cloned().collect(),
        stack: stack.to_string(),
        commit: commit.to_string(),
    }
}

/// What [`trim_old_slugs`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub releases: usize,
    pub slugs: usize,
}

/// Deletes the releases of slugs older than the newest `keep` inactive ones (the current
/// release's slug is active), then those slug artifacts, so that the blob store's GC frees
/// their blobs (it keeps every blob an artifact names). Releases without a slug, image
/// artifacts and a slug the current release uses are never touched; a slug another app's
/// release still names stays (the store refuses to delete it). A release's build record and
/// log go with it.
pub async fn trim_old_slugs(
    store: &Arc<dyn Store>,
    app: &App,
) -> Result<Trimmed, slipway_store::StoreError> {
    let keep = app
        .meta
        .get(SLUGS_KEPT_KEY)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_SLUGS_KEPT);
    let releases = store.list_releases(app.id).await?;
    let mut kinds: BTreeMap<Id, Option<Artifact>> = BTreeMap::new();
    let current_slugs: Vec<Id> = releases
        .iter()
        .filter(|r| Some(r.id) == app.release)
        .flat_map(|r| r.artifacts.clone())
        .collect();
    // Slugs in order of their newest release (releases are newest first).
    let mut order: Vec<Id> = Vec::new();
    for r in &releases {
        for a in &r.artifacts {
            if !kinds.contains_key(a) {
                let art = store.get_artifact(*a).await.ok();
                kinds.insert(*a, art);
            }
            let is_slug = kinds[a]
                .as_ref()
                .is_some_and(|x| x.kind == ArtifactType::Slug);
            if is_slug && !current_slugs.contains(a) && !order.contains(a) {
                order.push(*a);
            }
        }
    }
    let old: Vec<Id> = order.into_iter().skip(keep).collect();
    let mut trimmed = Trimmed::default();
    for r in &releases {
        if Some(r.id) != app.release && r.artifacts.iter().any(|a| old.contains(a)) {
            // Its slugs go in the same transaction once no release names them: a crash between
            // the two deletes would otherwise leave a slug nothing names and nothing collects.
            if let Ok(slugs) = store.delete_release_with_slugs(app.id, r.id).await {
                trimmed.releases += 1;
                trimmed.slugs += slugs as usize;
            }
        }
    }
    // What is left of the old slugs (named by no release any more, e.g. after an earlier run).
    for a in &old {
        match store.delete_artifact(*a).await {
            Ok(()) => trimmed.slugs += 1,
            // Still named by a release (another app's, or one being deployed): kept.
            Err(
                slipway_store::StoreError::Conflict(_) | slipway_store::StoreError::NotFound(_),
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::{NewApp, NewArtifact, NewRelease};
    use std::time::Duration;

    fn built(types: &[&str]) -> Built {
        Built {
            slug: slipway_blobstore::BlobInfo {
                digest: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
                size: 10,
                modified: None,
            },
            slug_size: 10,
            process_types: types
                .iter()
                .map(|t| (t.to_string(), "cmd".to_string()))
                .collect(),
            buildpacks: vec!["procfile".into()],
        }
    }

    /// The release itself is `slipway_deploy::release`'s (tested there): what it gets from a
    /// build is the slug's digest and size, the types the build found and its buildpacks.
    #[test]
    fn a_build_is_described_to_the_deploy_path_as_its_slug() {
        let s = slug(&built(&["web", "worker"]), "busybox", "c0ffee");
        assert_eq!(s.digest, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(s.size, 10);
        assert_eq!(s.process_types, ["web", "worker"]);
        assert_eq!(s.buildpacks, ["procfile"]);
        assert_eq!((s.stack.as_str(), s.commit.as_str()), ("busybox", "c0ffee"));
        let a = slipway_deploy::release::slug_artifact(&s);
        assert_eq!(a.uri, format!("blob:{}", s.digest));
    }

    /// A slug artifact whose blob (content `slug N`) is in `blobs`.
    async fn slug_blob(
        store: &Arc<dyn Store>,
        blobs: &slipway_blobstore::FsBlobStore,
        n: u8,
    ) -> (Id, slipway_blobstore::Digest) {
        use slipway_blobstore::BlobStore;
        let body = Box::new(std::io::Cursor::new(format!("slug {n}").into_bytes()));
        let digest = blobs.put(body, None).await.unwrap().digest;
        let a = NewArtifact {
            kind: ArtifactType::Slug,
            uri: format!("blob:{digest}"),
            manifest: None,
            meta: Default::default(),
            size: Some(6),
            digest: Some(digest.to_string()),
        };
        (store.create_artifact(&a).await.unwrap().id, digest)
    }

    #[tokio::test]
    async fn old_slugs_go_with_their_releases_and_the_gc_frees_their_blobs() {
        use slipway_blobstore::BlobStore;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let store: Arc<dyn Store> = Arc::new(slipway_store::open(&url).await.unwrap());
        let blobs = slipway_blobstore::FsBlobStore::open(dir.path().join("blobs")).unwrap();
        let mut meta = BTreeMap::new();
        meta.insert(SLUGS_KEPT_KEY.to_string(), "2".to_string());
        let new = NewApp {
            meta,
            ..Default::default()
        };
        let app = store.create_app("trim", &new, None).await.unwrap();
        let rel = |a: Vec<Id>| NewRelease {
            artifacts: a,
            ..Default::default()
        };
        // An old image release (older than every slug): never trimmed.
        let image = store
            .create_artifact(&NewArtifact {
                kind: ArtifactType::Image,
                uri: "registry:trim@sha256:1".into(),
                manifest: None,
                meta: Default::default(),
                size: None,
                digest: Some(format!("sha256:{}", "ee".repeat(32))),
            })
            .await
            .unwrap();
        let image_rel = store
            .create_release(app.id, &rel(vec![image.id]))
            .await
            .unwrap();
        // Slugs 1..=5, a release each, plus a second release of slug 1 (an env change after
        // it) and an earlier release of slug 3 (the current slug: it is shared, so it stays).
        let mut releases = Vec::new();
        let mut slugs = BTreeMap::new();
        for n in 1..=5u8 {
            let (s, digest) = slug_blob(&store, &blobs, n).await;
            slugs.insert(n, (s, digest));
            if n == 3 {
                releases.push((
                    3,
                    store.create_release(app.id, &rel(vec![s])).await.unwrap(),
                ));
            }
            releases.push((
                n,
                store.create_release(app.id, &rel(vec![s])).await.unwrap(),
            ));
            if n == 1 {
                releases.push((
                    1,
                    store.create_release(app.id, &rel(vec![s])).await.unwrap(),
                ));
            }
        }
        let plain = store
            .create_release(app.id, &NewRelease::default())
            .await
            .unwrap();
        let garbage = blobs
            .put(Box::new(std::io::Cursor::new(b"unrelated".to_vec())), None)
            .await
            .unwrap()
            .digest;
        // The current release is slug 3's newest: inactive are 5, 4 (kept), 2, 1 (deleted).
        let current = releases.iter().rfind(|(n, _)| *n == 3).unwrap().1.id;
        let app = store.set_app_release(app.id, current).await.unwrap();
        let trimmed = trim_old_slugs(&store, &app).await.unwrap();
        assert_eq!(
            trimmed,
            Trimmed {
                releases: 3,
                slugs: 2
            },
            "slug 2's release and slug 1's two; slugs 1 and 2"
        );
        let left: Vec<Id> = store
            .list_releases(app.id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        for (n, r) in &releases {
            assert_eq!(left.contains(&r.id), *n >= 3, "release of slug {n}");
        }
        assert!(left.contains(&plain.id), "releases without a slug stay");
        assert!(left.contains(&image_rel.id), "image releases stay");
        assert!(store.get_artifact(image.id).await.is_ok(), "images stay");
        for (n, (id, _)) in &slugs {
            assert_eq!(store.get_artifact(*id).await.is_ok(), *n >= 3, "slug {n}");
        }
        // Nothing more to do the second time.
        assert_eq!(
            trim_old_slugs(&store, &app).await.unwrap(),
            Trimmed::default()
        );

        // The GC (no grace) now frees the deleted slugs' blobs and keeps the others'.
        let listed = async || store.list_artifacts().await.map_err(|e| e.to_string());
        let report = slipway_blobstore::gc::collect(
            &blobs,
            listed,
            Duration::ZERO,
            std::time::SystemTime::now() + Duration::from_secs(1),
        )
        .await
        .unwrap();
        let mut deleted = report.deleted.clone();
        deleted.sort();
        let mut want = vec![slugs[&1].1.clone(), slugs[&2].1.clone(), garbage];
        want.sort();
        assert_eq!(deleted, want);
        for (n, (_, digest)) in &slugs {
            assert_eq!(blobs.path(digest).exists(), *n >= 3, "blob of slug {n}");
        }

        // A kept inactive release still deploys as the current one (rollback).
        let back = releases.iter().find(|(n, _)| *n == 4).unwrap().1.id;
        let app = store.set_app_release(app.id, back).await.unwrap();
        assert_eq!(app.release, Some(back));
        let r = store.get_release(back).await.unwrap();
        assert!(store.get_artifact(r.artifacts[0]).await.is_ok());
    }
}
