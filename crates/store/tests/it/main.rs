//! The store conformance suite: every case runs on SQLite and on a real PostgreSQL.

mod builds;
mod cluster;
mod concurrency;
mod fence;
mod suite;

use slipway_store::SqlStore;

/// A store under test and what keeps its database alive.
pub struct Backend {
    pub store: std::sync::Arc<SqlStore>,
    /// To open a second, raw connection to the same database.
    pub url: String,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    let store = SqlStore::open(&url).await.expect("open sqlite store");
    Some(Backend {
        store: store.into(),
        url,
        _keep: Box::new(dir),
    })
}

async fn postgres() -> Option<Backend> {
    let db = slipway_testkit::postgres_database().await?;
    let store = SqlStore::open(&db.url).await.expect("open postgres store");
    Some(Backend {
        store: store.into(),
        url: db.url.clone(),
        _keep: Box::new(db),
    })
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = crate::sqlite().await.unwrap();
                    crate::suite::$case(&b).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(b) = crate::postgres().await else { return };
                    crate::suite::$case(&b).await;
                }
            )*
        }
    };
}

conformance!(
    registry_manifests_and_tags,
    registry_uploads_append_in_order,
    idle_registry_uploads_are_deleted,
    git_repo_digests_and_shared_blobs,
    apps_crud,
    get_app_by_id_find_app_by_name,
    app_by_id_or_name_resolves_either,
    app_names_are_validated,
    default_route_conflict_leaves_nothing,
    releases_are_immutable,
    artifacts_are_immutable,
    current_release_cannot_be_deleted,
    release_needs_existing_artifacts,
    list_artifacts,
    formations,
    one_unfinished_deployment_per_app,
    http_routes_unique_by_domain_and_path,
    tcp_routes_unique_by_port,
    route_update_and_delete,
    delete_app_cascades,
    every_write_appends_one_event,
    failed_writes_append_nothing,
    event_filters,
    jobs,
    concurrent_writes,
    survives_reopen,
    a_schema_from_a_newer_version_is_refused,
    delete_artifact_refuses_while_a_release_names_it,
    a_release_goes_with_the_slugs_only_it_names,
    builds_keep_their_log_and_go_with_their_release,
    failed_builds_are_trimmed_to_the_newest,
    secrets_are_shared_and_first_wins,
    other_stores_events_wake_the_notifier,
    deployment_claims_are_exclusive_until_they_expire,
    app_leases_are_exclusive_until_released_or_expired,
    a_stale_epoch_cannot_write_job_rows,
);
