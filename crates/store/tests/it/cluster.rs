//! Cases about several controllers on one database: shared secrets.

use crate::Backend;
use slipway_store::{API_KEY, CLUSTER_TOKEN, SqlStore};
use slipway_types::Id;

/// Two stores on one database (two controllers) offering different secrets at once agree on
/// one, and a later offer does not replace it.
pub async fn secrets_are_shared_and_first_wins(b: &Backend) {
    let other = SqlStore::open(&b.url).await.expect("open a second store");
    assert_eq!(b.store.secret(API_KEY).await.unwrap(), None);
    let (x, y) = tokio::join!(
        b.store.secret_or_insert(API_KEY, "key-a"),
        other.secret_or_insert(API_KEY, "key-b"),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y, "two controllers starting at once disagree on the key");
    assert!(x == "key-a" || x == "key-b", "{x}");
    assert_eq!(
        other.secret_or_insert(API_KEY, "key-c").await.unwrap(),
        x,
        "a stored key was replaced"
    );
    assert_eq!(b.store.secret(API_KEY).await.unwrap().as_deref(), Some(&*x));
    // Secrets are separate by name.
    assert_eq!(b.store.secret(CLUSTER_TOKEN).await.unwrap(), None);
    assert_eq!(
        other.secret_or_insert(CLUSTER_TOKEN, "tok").await.unwrap(),
        "tok"
    );
    assert!(b.store.secret_or_insert(CLUSTER_TOKEN, "").await.is_err());
    other.close().await;
}

/// On PostgreSQL a store's event notifier follows the other stores' writes (LISTEN/NOTIFY),
/// also after its listening connection was cut (it catches up with `MAX(id)` on reconnect);
/// on SQLite it follows this process only, and says so.
pub async fn other_stores_events_wake_the_notifier(b: &Backend) {
    use slipway_store::Store;
    use slipway_types::NewApp;
    let other = SqlStore::open(&b.url).await.expect("open a second store");
    if Store::backend(b.store.as_ref()) == "sqlite" {
        assert!(!Store::events_cluster_wide(b.store.as_ref()));
        return;
    }
    assert!(Store::events_cluster_wide(b.store.as_ref()));
    let mut rx = Store::event_notifier(b.store.as_ref());
    let wait_for = |rx: &mut tokio::sync::watch::Receiver<i64>, id: i64| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|seen| *seen >= id),
            )
            .await
            .map(|_| ())
        }
    };
    let app = other
        .create_app("notified", &NewApp::default(), None)
        .await
        .unwrap();
    let newest = other.list_events(&Default::default()).await.unwrap();
    let id = newest.last().unwrap().id;
    assert!(
        wait_for(&mut rx, id).await.is_ok(),
        "the first store never heard of event {id} written through the second"
    );

    // Cut the listening connections; a write while they are down is still caught.
    sqlx::any::install_default_drivers();
    let mut raw = <sqlx::AnyConnection as sqlx::Connection>::connect(&b.url)
        .await
        .unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert!(!cut.is_empty(), "no listening connection found");
    other
        .update_app(
            app.id,
            &slipway_types::AppUpdate {
                meta: Some([("k".to_string(), "v".to_string())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = other
        .list_events(&Default::default())
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    assert!(
        wait_for(&mut rx, id).await.is_ok(),
        "after a reconnect the first store missed event {id}"
    );
    other.close().await;
}

/// A deployment's claim: one holder at a time, renewed by it, taken by another only once
/// expired, none on a finished deployment.
pub async fn deployment_claims_are_exclusive_until_they_expire(b: &Backend) {
    use slipway_store::Store;
    use slipway_types::{DeploymentStatus, NewApp, NewRelease};
    use std::time::Duration;
    let s = b.store.as_ref();
    let app = s
        .create_app("claims", &NewApp::default(), None)
        .await
        .unwrap();
    let rel = s
        .create_release(app.id, &NewRelease::default())
        .await
        .unwrap();
    let d = s.create_deployment(app.id, rel.id).await.unwrap();
    let long = Duration::from_secs(60);
    assert_eq!(Store::deployment_claim(s, d.id).await.unwrap(), None);
    assert!(Store::claim_deployment(s, d.id, "a", long).await.unwrap());
    assert!(!Store::claim_deployment(s, d.id, "b", long).await.unwrap());
    assert!(
        Store::claim_deployment(s, d.id, "a", long).await.unwrap(),
        "renewal"
    );
    assert_eq!(
        Store::deployment_claim(s, d.id).await.unwrap().unwrap().0,
        "a"
    );
    // A short claim runs out; then another takes it.
    assert!(
        Store::claim_deployment(s, d.id, "a", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(Store::claim_deployment(s, d.id, "b", long).await.unwrap());
    assert!(!Store::claim_deployment(s, d.id, "a", long).await.unwrap());
    s.update_deployment(d.id, DeploymentStatus::Complete, None)
        .await
        .unwrap();
    assert!(
        !Store::claim_deployment(s, d.id, "b", long).await.unwrap(),
        "finished"
    );
    assert!(Store::deployment_claim(s, Id::new_v4()).await.is_err());
}

/// An app lease: one holder at a time, renewed by it, taken by another once released or
/// expired; leases of other names or apps are apart; a leased app can still be deleted.
pub async fn app_leases_are_exclusive_until_released_or_expired(b: &Backend) {
    use slipway_types::NewApp;
    use std::time::Duration;
    let s = b.store.as_ref();
    let app = s
        .create_app("leased", &NewApp::default(), None)
        .await
        .unwrap();
    let other = s
        .create_app("apart", &NewApp::default(), None)
        .await
        .unwrap();
    let long = Duration::from_secs(60);
    assert!(
        s.acquire_app_lease(app.id, "push", "a", long)
            .await
            .unwrap()
    );
    assert!(
        !s.acquire_app_lease(app.id, "push", "b", long)
            .await
            .unwrap()
    );
    assert!(
        s.acquire_app_lease(app.id, "push", "a", long)
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        s.acquire_app_lease(app.id, "other", "b", long)
            .await
            .unwrap(),
        "another name"
    );
    assert!(
        s.acquire_app_lease(other.id, "push", "b", long)
            .await
            .unwrap(),
        "another app"
    );
    // Only its holder releases it.
    s.release_app_lease(app.id, "push", "b").await.unwrap();
    assert!(
        !s.acquire_app_lease(app.id, "push", "b", long)
            .await
            .unwrap()
    );
    s.release_app_lease(app.id, "push", "a").await.unwrap();
    assert!(
        s.acquire_app_lease(app.id, "push", "b", long)
            .await
            .unwrap()
    );
    // A short lease runs out; then another takes it.
    s.release_app_lease(app.id, "push", "b").await.unwrap();
    assert!(
        s.acquire_app_lease(app.id, "push", "a", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        s.acquire_app_lease(app.id, "push", "b", long)
            .await
            .unwrap()
    );
    // Deleting an app with a live lease works (the lease goes with it).
    s.delete_app(app.id).await.unwrap();
}
