//! The cases. Each takes a fresh, empty store.

mod events;
mod routes;
mod shared_state;

use crate::Backend;
pub use crate::builds::*;
pub use crate::cluster::*;
pub use crate::concurrency::*;
pub use crate::fence::*;
pub use events::*;
pub use routes::*;
pub use shared_state::*;
use slipway_store::{Store, StoreError, app_by_id_or_name};
use slipway_types::*;
use std::collections::BTreeMap;

pub(crate) fn web_release() -> NewRelease {
    let mut r = NewRelease::default();
    r.env.insert("GREETING".into(), "hello".into());
    r.processes.insert(
        "web".into(),
        ProcessType {
            args: vec!["httpd".into()],
            ..Default::default()
        },
    );
    r.processes.insert("worker".into(), ProcessType::default());
    r
}

pub(crate) async fn app(s: &dyn Store, name: &str) -> App {
    s.create_app(name, &NewApp::default(), Some("test.local"))
        .await
        .unwrap()
}

async fn event_count(s: &dyn Store) -> usize {
    s.list_events(&EventFilter {
        limit: Some(1000),
        ..Default::default()
    })
    .await
    .unwrap()
    .len()
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, contains: &str) {
    match r {
        Err(StoreError::Conflict(m)) => assert!(
            m.contains(contains),
            "conflict message {m:?} lacks {contains:?}"
        ),
        other => panic!("expected a conflict containing {contains:?}, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "expected not found, got {r:?}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, field: &str) {
    match r {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

pub async fn apps_crud(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let mut meta = StringMap::new();
    meta.insert("owner".into(), "ops".into());
    let new = NewApp {
        meta: meta.clone(),
        strategy: Some(DeployStrategy::OneByOne),
        ..Default::default()
    };
    let a = s
        .create_app("shop", &new, Some("test.local"))
        .await
        .unwrap();
    assert_eq!(
        (a.name.as_str(), a.strategy, a.deploy_timeout, a.release),
        ("shop", DeployStrategy::OneByOne, 120, None)
    );
    assert_eq!(s.find_app("shop").await.unwrap(), a);
    assert_eq!(s.get_app(a.id).await.unwrap(), a);
    assert_not_found(s.find_app("nope").await);
    assert_not_found(s.get_app(Id::new_v4()).await);
    assert_conflict(
        s.create_app("shop", &NewApp::default(), None).await,
        "already exists",
    );
    let b2 = app(s, "blog").await;
    let names: Vec<String> = s
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["shop", "blog"]);

    let routes = s.list_routes(Some(a.id)).await.unwrap();
    assert_eq!(routes.len(), 1, "default route");
    let Route::Http(r) = &routes[0] else {
        panic!("default route is http")
    };
    assert_eq!(
        (r.domain.as_str(), r.path.as_str(), r.service.as_str()),
        ("shop.test.local", "/", "shop-web")
    );

    meta.insert("team".into(), "web".into());
    let upd = AppUpdate {
        meta: Some(meta.clone()),
        deploy_timeout: Some(300),
        ..Default::default()
    };
    let a2 = s.update_app(a.id, &upd).await.unwrap();
    assert_eq!(
        (a2.meta, a2.deploy_timeout, a2.strategy),
        (meta, 300, DeployStrategy::OneByOne)
    );
    assert!(a2.updated_at >= a.updated_at);
    assert_eq!(s.find_app("shop").await.unwrap().deploy_timeout, 300);
    assert_invalid(
        s.update_app(
            a.id,
            &AppUpdate {
                deploy_timeout: Some(0),
                ..Default::default()
            },
        )
        .await,
        "deploy_timeout",
    );
    assert_not_found(s.update_app(Id::new_v4(), &AppUpdate::default()).await);
    assert!(s.find_app("blog").await.unwrap() == b2);
}

pub async fn app_names_are_validated(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    for bad in ["", "Shop", "a_b", "-a", "a--b", "../x", &"x".repeat(64)] {
        assert_invalid(s.create_app(bad, &NewApp::default(), None).await, "name");
    }
    assert!(s.list_apps().await.unwrap().is_empty());
    assert_eq!(event_count(s).await, 0);
}

pub async fn default_route_conflict_leaves_nothing(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "first").await;
    s.create_route(
        a.id,
        &NewRoute::Http {
            domain: "second.test.local".into(),
            path: None,
            service: None,
            sticky: false,
            leader: false,
            certificate: None,
        },
    )
    .await
    .unwrap();
    let before = event_count(s).await;
    assert_conflict(
        s.create_app("second", &NewApp::default(), Some("test.local"))
            .await,
        "default route",
    );
    assert_not_found(s.find_app("second").await);
    assert_eq!(
        event_count(s).await,
        before,
        "the failed create wrote no event"
    );
}

pub async fn releases_are_immutable(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "imm").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    assert_eq!(s.get_release(r.id).await.unwrap(), r);
    // No API modifies a release; a trigger refuses it even from a raw connection.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&b.url)
        .await
        .unwrap();
    let res = sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!(
            "UPDATE releases SET env = '{{}}' WHERE id = '{}'",
            r.id
        )),
    )
    .await;
    let err = res.expect_err("the update is refused").to_string();
    assert!(err.contains("immutable"), "{err}");
    assert_eq!(s.get_release(r.id).await.unwrap().env, r.env);
}

pub async fn current_release_cannot_be_deleted(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "cur").await;
    let r1 = s.create_release(a.id, &web_release()).await.unwrap();
    let r2 = s
        .create_release(a.id, &NewRelease::default())
        .await
        .unwrap();
    let listed: Vec<Id> = s
        .list_releases(a.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [r2.id, r1.id], "newest first");
    let app2 = s.set_app_release(a.id, r1.id).await.unwrap();
    assert_eq!(app2.release, Some(r1.id));
    assert_conflict(s.delete_release(a.id, r1.id).await, "current release");
    s.delete_release(a.id, r2.id).await.unwrap();
    assert_not_found(s.get_release(r2.id).await);
    assert_not_found(s.delete_release(a.id, r2.id).await);
    assert_eq!(s.get_release(r1.id).await.unwrap(), r1);
    // A release belongs to its app only.
    let other = app(s, "other").await;
    assert_not_found(s.set_app_release(other.id, r1.id).await);
    assert_not_found(s.set_app_release(a.id, Id::new_v4()).await);
}

pub async fn release_needs_existing_artifacts(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "arts").await;
    let mut r = web_release();
    r.artifacts = vec![Id::new_v4()];
    assert_invalid(s.create_release(a.id, &r).await, "artifacts");
    let slug = NewArtifact {
        kind: ArtifactType::Slug,
        uri: "blob://slugs/abc.tgz".into(),
        manifest: Some(serde_json::json!({"layers": 1})),
        meta: StringMap::new(),
        size: Some(4096),
        digest: Some(format!("sha256:{}", "a".repeat(64))),
    };
    let art = s.create_artifact(&slug).await.unwrap();
    assert_eq!(s.get_artifact(art.id).await.unwrap(), art);
    let stack = s
        .create_artifact(&NewArtifact {
            uri: "stack://busybox".into(),
            digest: None,
            ..slug.clone()
        })
        .await
        .unwrap();
    r.artifacts = vec![stack.id, art.id];
    let rel = s.create_release(a.id, &r).await.unwrap();
    assert_eq!(
        s.get_release(rel.id).await.unwrap().artifacts,
        [stack.id, art.id],
        "order kept"
    );
    assert_invalid(
        s.create_artifact(&NewArtifact {
            digest: Some("md5:x".into()),
            ..slug
        })
        .await,
        "digest",
    );
    assert_not_found(s.create_release(Id::new_v4(), &NewRelease::default()).await);
}

pub async fn list_artifacts(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    assert!(s.list_artifacts().await.unwrap().is_empty());
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(
            s.create_artifact(&NewArtifact {
                kind: ArtifactType::Slug,
                uri: format!("blob:sha256:{}", i.to_string().repeat(64)),
                manifest: None,
                meta: StringMap::new(),
                size: Some(i),
                digest: Some(format!("sha256:{}", i.to_string().repeat(64))),
            })
            .await
            .unwrap(),
        );
    }
    let listed = s.list_artifacts().await.unwrap();
    assert_eq!(listed.len(), 3);
    for a in &made {
        assert!(listed.contains(a), "{a:?} missing from {listed:?}");
    }
    // Oldest first.
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

pub async fn formations(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "form").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    let mut f = FormationUpdate::default();
    f.processes.insert("web".into(), 2);
    let got = s.put_formation(a.id, r.id, &f).await.unwrap();
    assert_eq!(got.processes["web"], 2);
    f.processes.insert("worker".into(), 1);
    f.tags.insert(
        "web".into(),
        BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
    );
    let got2 = s.put_formation(a.id, r.id, &f).await.unwrap();
    assert_eq!(got2.created_at, got.created_at);
    assert_eq!(s.get_formation(a.id, r.id).await.unwrap(), got2);
    assert_eq!(s.list_formations(a.id).await.unwrap(), [got2]);
    f.processes.insert("foo".into(), 1);
    match s.put_formation(a.id, r.id, &f).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.message, "unknown process types: \"foo\""),
        other => panic!("{other:?}"),
    }
    assert_not_found(s.get_formation(a.id, Id::new_v4()).await);
}

pub async fn one_unfinished_deployment_per_app(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "dep").await;
    let r1 = s.create_release(a.id, &web_release()).await.unwrap();
    let r2 = s.create_release(a.id, &web_release()).await.unwrap();
    let r3 = s.create_release(a.id, &web_release()).await.unwrap();
    s.set_app_release(a.id, r1.id).await.unwrap();
    let mut f = FormationUpdate::default();
    f.processes.insert("web".into(), 3);
    s.put_formation(a.id, r1.id, &f).await.unwrap();

    let d = s.create_deployment(a.id, r2.id).await.unwrap();
    assert_eq!(
        (d.status, d.old_release_id, d.new_release_id),
        (DeploymentStatus::Pending, Some(r1.id), r2.id)
    );
    assert_eq!(d.processes.get("web"), Some(&3), "takes the current counts");
    assert_conflict(
        s.create_deployment(a.id, r3.id).await,
        "already one in progress",
    );
    // Other apps are not blocked.
    let other = app(s, "dep2").await;
    let o1 = s.create_release(other.id, &web_release()).await.unwrap();
    s.create_deployment(other.id, o1.id).await.unwrap();

    let running = s
        .update_deployment(d.id, DeploymentStatus::Running, None)
        .await
        .unwrap();
    assert!(running.finished_at.is_none());
    let done = s
        .update_deployment(d.id, DeploymentStatus::Complete, None)
        .await
        .unwrap();
    assert!(done.finished_at.is_some());
    assert_eq!(
        s.find_app("dep").await.unwrap().release,
        Some(r2.id),
        "complete makes the release current"
    );
    assert_conflict(
        s.update_deployment(d.id, DeploymentStatus::Failed, None)
            .await,
        "already",
    );
    assert_conflict(
        s.create_deployment(a.id, r2.id).await,
        "already the current release",
    );

    let d2 = s.create_deployment(a.id, r3.id).await.unwrap();
    let failed = s
        .update_deployment(
            d2.id,
            DeploymentStatus::Failed,
            Some("web job failed to start"),
        )
        .await
        .unwrap();
    assert_eq!(failed.error.as_deref(), Some("web job failed to start"));
    assert_eq!(
        s.find_app("dep").await.unwrap().release,
        Some(r2.id),
        "a failed deployment changes nothing"
    );
    let listed: Vec<Id> = s
        .list_deployments(a.id)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, [d2.id, d.id]);
    assert_eq!(s.get_deployment(d2.id).await.unwrap(), failed);
}

pub async fn delete_app_cascades(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "doomed").await;
    let keep = app(s, "keeper").await;
    let mk = |uri: &str| NewArtifact {
        kind: ArtifactType::Slug,
        uri: uri.into(),
        manifest: None,
        meta: StringMap::new(),
        size: None,
        digest: None,
    };
    let own = s.create_artifact(&mk("blob://own")).await.unwrap();
    let shared = s.create_artifact(&mk("blob://shared")).await.unwrap();
    let mut rel = web_release();
    rel.artifacts = vec![shared.id, own.id];
    let r1 = s.create_release(a.id, &rel).await.unwrap();
    s.create_release(a.id, &NewRelease::default())
        .await
        .unwrap();
    let mut kept = web_release();
    kept.artifacts = vec![shared.id];
    s.create_release(keep.id, &kept).await.unwrap();
    s.set_app_release(a.id, r1.id).await.unwrap();
    let mut f = FormationUpdate::default();
    f.processes.insert("web".into(), 1);
    s.put_formation(a.id, r1.id, &f).await.unwrap();
    s.create_route(
        a.id,
        &NewRoute::Tcp {
            port: 0,
            service: None,
            leader: false,
        },
    )
    .await
    .unwrap();
    s.create_deployment(
        a.id,
        s.create_release(a.id, &web_release()).await.unwrap().id,
    )
    .await
    .unwrap();

    let gone = s.delete_app(a.id).await.unwrap();
    assert_eq!(
        gone,
        AppDeletion {
            app: "doomed".into(),
            routes: 2,
            releases: 3,
            artifacts: 1
        }
    );
    assert_not_found(s.find_app("doomed").await);
    assert_not_found(s.get_release(r1.id).await);
    assert_not_found(s.get_artifact(own.id).await);
    assert_eq!(
        s.get_artifact(shared.id).await.unwrap(),
        shared,
        "still used by keeper"
    );
    assert!(
        s.list_routes(None)
            .await
            .unwrap()
            .iter()
            .all(|r| r.app_id() == keep.id)
    );
    assert!(s.list_formations(a.id).await.unwrap().is_empty());
    assert!(s.list_deployments(a.id).await.unwrap().is_empty());
    assert_not_found(s.delete_app(a.id).await);
    // The name is free again.
    app(s, "doomed").await;
}

pub async fn jobs(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "jobs").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    let mut job = Job {
        id: "h1-0001".into(),
        app_id: a.id,
        release_id: r.id,
        process_type: Some("web".into()),
        host_id: Some("h1".into()),
        state: JobState::Starting,
        args: vec!["httpd".into()],
        exit_status: None,
        host_error: None,
        restarts: 0,
        meta: StringMap::new(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    let created = s.put_job(&job).await.unwrap();
    job.state = JobState::Down;
    job.exit_status = Some(137);
    job.restarts = 2;
    let updated = s.put_job(&job).await.unwrap();
    assert_eq!(updated.created_at, created.created_at);
    let got = s.get_job(a.id, "h1-0001").await.unwrap();
    assert_eq!(
        (got.state, got.exit_status, got.restarts),
        (JobState::Down, Some(137), 2)
    );
    assert_eq!(s.list_jobs(a.id).await.unwrap().len(), 1);
    assert_not_found(s.get_job(a.id, "h1-9999").await);
    job.id = "h1-0002".into();
    job.release_id = Id::new_v4();
    assert_not_found(s.put_job(&job).await);
    // A job of no release (the nil id): the build of an app's first push.
    job.id = "h1-build".into();
    job.release_id = Id::nil();
    job.process_type = Some("build".into());
    assert_eq!(s.put_job(&job).await.unwrap().release_id, Id::nil());
    assert_eq!(
        s.get_job(a.id, "h1-build").await.unwrap().release_id,
        Id::nil()
    );
    job.process_type = Some("web".into());
    job.id = "bad id!".into();
    assert_invalid(s.put_job(&job).await, "id");

    // A batch: one event per job, in order; a bad job rolls the whole batch back.
    let before = s.list_events(&EventFilter::default()).await.unwrap().len();
    job.release_id = r.id;
    let batch: Vec<Job> = (3..6)
        .map(|i| Job {
            id: format!("h1-000{i}"),
            ..job.clone()
        })
        .collect();
    let written = s.put_jobs(&batch).await.unwrap();
    assert_eq!(written.len(), 3);
    let events = s.list_events(&EventFilter::default()).await.unwrap();
    let ids: Vec<&str> = events[before..]
        .iter()
        .map(|e| e.object_id.as_str())
        .collect();
    assert_eq!(ids, ["h1-0003", "h1-0004", "h1-0005"]);
    let mut bad = batch.clone();
    bad[0].state = JobState::Up;
    bad[1].release_id = Id::new_v4();
    assert_not_found(s.put_jobs(&bad).await);
    assert_eq!(
        s.get_job(a.id, "h1-0003").await.unwrap().state,
        JobState::Down,
        "the failed batch changed nothing"
    );
    assert_eq!(s.list_jobs(a.id).await.unwrap().len(), 5);
}

pub async fn survives_reopen(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "persist").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    s.set_app_release(a.id, r.id).await.unwrap();
    let reopened = slipway_store::SqlStore::open(&b.url).await.unwrap();
    assert_eq!(
        reopened.find_app("persist").await.unwrap().release,
        Some(r.id)
    );
    let newest = s
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    assert_eq!(
        *Store::event_notifier(&reopened).borrow(),
        newest,
        "the notifier starts at the newest event"
    );
    reopened.close().await;
}

/// A database a newer slipway migrated is refused at open, saying what to do, and left as it was.
pub async fn a_schema_from_a_newer_version_is_refused(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    app(s, "kept").await;
    let current = b.store.schema_version();
    let pool = sqlx::AnyPool::connect(&b.url).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(current + 1)
        .bind("from the future")
        .bind("2030-01-01T00:00:00Z")
        .execute(&pool)
        .await
        .unwrap();
    let err = match slipway_store::SqlStore::open(&b.url).await {
        Ok(_) => panic!("a schema newer than this slipway was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("schema is version {}", current + 1))
            && err.contains("newer than this slipway"),
        "{err}"
    );
    sqlx::query("DELETE FROM schema_migrations WHERE version = $1")
        .bind(current + 1)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(s.find_app("kept").await.is_ok(), "the data is untouched");
}

/// `get_app` takes an id and `find_app` a name: neither answers for the other.
pub async fn get_app_by_id_find_app_by_name(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "lookup").await;
    assert_eq!(s.get_app(a.id).await.unwrap(), a);
    assert_eq!(s.find_app("lookup").await.unwrap(), a);
    // An id is not a name.
    assert_not_found(s.find_app(&a.id.to_string()).await);
    let e = s.find_app("missing").await.unwrap_err();
    assert!(
        e.to_string().contains("\"missing\""),
        "names what was asked for: {e}"
    );
    let other = Id::new_v4();
    let e = s.get_app(other).await.unwrap_err();
    assert!(
        e.to_string().contains(&other.to_string()),
        "names the id: {e}"
    );
}

/// What a user types resolves by id, then by name; an app *named* like another app's id is
/// still reachable by its name, and a name that is a free id finds the app so named.
pub async fn app_by_id_or_name_resolves_either(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "either").await;
    assert_eq!(app_by_id_or_name(s, "either").await.unwrap(), a);
    assert_eq!(app_by_id_or_name(s, &a.id.to_string()).await.unwrap(), a);
    // A name that is a valid id no app has.
    let free = Id::new_v4().to_string();
    let named_like_id = app(s, &free).await;
    assert_eq!(app_by_id_or_name(s, &free).await.unwrap(), named_like_id);
    // A name that is another app's id: the id wins, the same as before the name existed.
    let shadow = app(s, &a.id.to_string()).await;
    assert_eq!(app_by_id_or_name(s, &a.id.to_string()).await.unwrap(), a);
    assert_eq!(
        app_by_id_or_name(s, &shadow.id.to_string()).await.unwrap(),
        shadow
    );
    assert_not_found(app_by_id_or_name(s, "nobody").await);
    assert_not_found(app_by_id_or_name(s, &Id::new_v4().to_string()).await);
}
