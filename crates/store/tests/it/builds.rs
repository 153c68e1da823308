//! Cases for housekeeping: artifact deletion and build records (their transcripts kept,
//! trimmed with their releases). Run on both backends by `conformance!` in main.rs.

use crate::Backend;
use slipway_store::{FAILED_BUILDS_KEPT, Store, StoreError};
use slipway_types::*;

fn slug(n: u32) -> NewArtifact {
    let hex = format!("{n:064x}");
    NewArtifact {
        kind: ArtifactType::Slug,
        uri: format!("blob:sha256:{hex}"),
        manifest: None,
        meta: StringMap::new(),
        size: Some(u64::from(n)),
        digest: Some(format!("sha256:{hex}")),
    }
}

fn release_of(artifact: Id) -> NewRelease {
    NewRelease {
        artifacts: vec![artifact],
        ..Default::default()
    }
}

fn build(commit: &str, status: BuildStatus, release: Option<Id>, log: &str) -> NewBuild {
    NewBuild {
        commit: commit.into(),
        status,
        release_id: release,
        error: (status == BuildStatus::Failed).then(|| "Unable to select a buildpack".into()),
        log: log.into(),
        started_at: Timestamp::now(),
    }
}

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, contains: &str) {
    match r {
        Err(StoreError::Conflict(m)) => assert!(m.contains(contains), "{m:?} lacks {contains:?}"),
        other => panic!("expected a conflict containing {contains:?}, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
}

pub async fn delete_artifact_refuses_while_a_release_names_it(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = s
        .create_app("arts", &NewApp::default(), None)
        .await
        .unwrap();
    let other = s
        .create_app("other", &NewApp::default(), None)
        .await
        .unwrap();
    let art = s.create_artifact(&slug(1)).await.unwrap();
    let r1 = s.create_release(a.id, &release_of(art.id)).await.unwrap();
    // Another app's release naming the same artifact counts too.
    let r2 = s
        .create_release(other.id, &release_of(art.id))
        .await
        .unwrap();
    conflict(s.delete_artifact(art.id).await, "is used by release");
    conflict(s.delete_artifact(art.id).await, "and 1 other(s)");
    s.delete_release(a.id, r1.id).await.unwrap();
    conflict(s.delete_artifact(art.id).await, &r2.id.to_string());
    assert_eq!(s.get_artifact(art.id).await.unwrap(), art, "still there");
    s.delete_release(other.id, r2.id).await.unwrap();
    let before = s
        .list_events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    s.delete_artifact(art.id).await.unwrap();
    not_found(s.get_artifact(art.id).await);
    assert!(s.list_artifacts().await.unwrap().is_empty());
    not_found(s.delete_artifact(art.id).await);
    not_found(s.delete_artifact(Id::new_v4()).await);
    let events = s
        .list_events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), before + 1, "one event for the deletion");
    let last = events.last().unwrap();
    assert_eq!(
        (last.object_type, last.op, last.object_id.as_str()),
        (
            ObjectType::Artifact,
            EventOp::Delete,
            art.id.to_string().as_str()
        )
    );
}

pub async fn builds_keep_their_log_and_go_with_their_release(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = s
        .create_app("built", &NewApp::default(), None)
        .await
        .unwrap();
    assert!(s.list_builds(a.id).await.unwrap().is_empty());
    let art = s.create_artifact(&slug(2)).await.unwrap();
    let rel = s.create_release(a.id, &release_of(art.id)).await.unwrap();
    let log =
        "-----> Building built...\n       ünïcode output\n-----> Compiled slug size is 4.0K\n";
    let ok = s
        .create_build(
            a.id,
            &build("c0ffee", BuildStatus::Succeeded, Some(rel.id), log),
        )
        .await
        .unwrap();
    assert_eq!(ok.log_bytes, log.len() as u64);
    assert_eq!(ok.release_id, Some(rel.id));
    assert!(ok.finished_at >= ok.created_at);
    let failed = s
        .create_build(
            a.id,
            &build(
                "bad",
                BuildStatus::Failed,
                None,
                " !     Unable to select a buildpack\n",
            ),
        )
        .await
        .unwrap();
    assert_eq!(s.get_build(a.id, ok.id).await.unwrap(), ok);
    assert_eq!(s.get_build_log(a.id, ok.id).await.unwrap(), log);
    assert_eq!(
        s.get_build(a.id, failed.id).await.unwrap().error.as_deref(),
        Some("Unable to select a buildpack")
    );
    let listed: Vec<Id> = s
        .list_builds(a.id)
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, [failed.id, ok.id], "newest first");
    // Another app cannot read them, nor name a release it does not own.
    let other = s
        .create_app("other", &NewApp::default(), None)
        .await
        .unwrap();
    not_found(s.get_build(other.id, ok.id).await);
    not_found(s.get_build_log(other.id, ok.id).await);
    not_found(
        s.create_build(
            other.id,
            &build("x", BuildStatus::Succeeded, Some(rel.id), ""),
        )
        .await,
    );
    not_found(
        s.create_build(
            a.id,
            &build("x", BuildStatus::Succeeded, Some(Id::new_v4()), ""),
        )
        .await,
    );
    // Bad input is a validation error.
    match s
        .create_build(a.id, &build("", BuildStatus::Failed, None, ""))
        .await
    {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "commit"),
        other => panic!("{other:?}"),
    }
    let huge = "x".repeat(MAX_BUILD_LOG_BYTES + 10_000);
    match s
        .create_build(a.id, &build("c", BuildStatus::Failed, None, &huge))
        .await
    {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "log"),
        other => panic!("{other:?}"),
    }
    // The build goes with its release; the failed one stays.
    s.delete_release(a.id, rel.id).await.unwrap();
    not_found(s.get_build(a.id, ok.id).await);
    not_found(s.get_build_log(a.id, ok.id).await);
    assert_eq!(s.list_builds(a.id).await.unwrap().len(), 1);
    // ... and all of them with the app.
    s.delete_app(a.id).await.unwrap();
    not_found(s.get_build(a.id, failed.id).await);
}

pub async fn failed_builds_are_trimmed_to_the_newest(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = s
        .create_app("flaky", &NewApp::default(), None)
        .await
        .unwrap();
    let art = s.create_artifact(&slug(3)).await.unwrap();
    let rel = s.create_release(a.id, &release_of(art.id)).await.unwrap();
    let kept = s
        .create_build(
            a.id,
            &build("good", BuildStatus::Succeeded, Some(rel.id), "ok\n"),
        )
        .await
        .unwrap();
    let mut failed = Vec::new();
    for i in 0..FAILED_BUILDS_KEPT + 3 {
        let b = s
            .create_build(
                a.id,
                &build(&format!("c{i}"), BuildStatus::Failed, None, "no\n"),
            )
            .await
            .unwrap();
        failed.push(b.id);
    }
    let listed: Vec<Id> = s
        .list_builds(a.id)
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed.len(), FAILED_BUILDS_KEPT + 1, "{listed:?}");
    assert!(
        listed.contains(&kept.id),
        "a build with a release is not trimmed"
    );
    for (i, id) in failed.iter().enumerate() {
        assert_eq!(listed.contains(id), i >= 3, "failed build {i}");
    }
}

/// A release deleted with its slugs takes, in its transaction, the slugs no other release
/// names: a slug another release (of any app) names stays, and so does an image.
pub async fn a_release_goes_with_the_slugs_only_it_names(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = s
        .create_app("with-slugs", &NewApp::default(), None)
        .await
        .unwrap();
    let other = s
        .create_app("sharer", &NewApp::default(), None)
        .await
        .unwrap();
    let own = s.create_artifact(&slug(1)).await.unwrap();
    let shared = s.create_artifact(&slug(2)).await.unwrap();
    let mut image = slug(3);
    image.kind = ArtifactType::Image;
    image.uri = "https://registry.test/app@sha256:3".into();
    let image = s.create_artifact(&image).await.unwrap();
    let r = s
        .create_release(
            a.id,
            &NewRelease {
                artifacts: vec![own.id, shared.id, image.id],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.create_release(other.id, &release_of(shared.id))
        .await
        .unwrap();
    let current = s
        .create_release(a.id, &NewRelease::default())
        .await
        .unwrap();
    s.set_app_release(a.id, current.id).await.unwrap();
    conflict(
        s.delete_release_with_slugs(a.id, current.id).await,
        "current release",
    );
    let before = s
        .list_events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(s.delete_release_with_slugs(a.id, r.id).await.unwrap(), 1);
    not_found(s.get_release(r.id).await);
    not_found(s.get_artifact(own.id).await);
    assert_eq!(s.get_artifact(shared.id).await.unwrap(), shared);
    assert_eq!(s.get_artifact(image.id).await.unwrap(), image);
    let events = s
        .list_events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let new: Vec<(ObjectType, EventOp, &str)> = events[before..]
        .iter()
        .map(|e| (e.object_type, e.op, e.object_id.as_str()))
        .collect();
    let (rid, oid) = (r.id.to_string(), own.id.to_string());
    assert_eq!(
        new,
        [
            (ObjectType::Release, EventOp::Delete, rid.as_str()),
            (ObjectType::Artifact, EventOp::Delete, oid.as_str()),
        ]
    );
    not_found(s.delete_release_with_slugs(a.id, r.id).await);
}
