//! Controller state behind the [`Store`] trait.
//!
//! One SQL implementation, [`SqlStore`], serves both backends: SQLite (embedded mode, a file in the
//! data directory) and PostgreSQL (cluster mode). The statements are the same on both (`$1`
//! placeholders, `RETURNING`, TEXT for JSON and timestamps, BIGINT 0/1 for booleans); what differs
//! — the event id column, triggers, connection set-up, write serialisation — is confined to
//! [`Dialect`] and the migrations. The conformance suite in `tests/it` runs against both.
//!
//! Rules the store enforces on every backend, so no caller can break them:
//! - a release (and an artifact) is never modified — there is no update, and a trigger refuses one;
//! - the current release of an app cannot be deleted;
//! - an artifact cannot be deleted while a release names it (housekeeping deletes old slugs'
//!   releases first, then the slugs, so the blob store's GC frees their blobs);
//! - an app has at most one unfinished deployment (a partial unique index);
//! - HTTP routes are unique by (domain, path), TCP routes by port;
//! - every write of a model object appends an [`Event`] in the same transaction, and events
//!   become visible in id order (so a stream that resumes after id N misses nothing).

#![forbid(unsafe_code)]

mod migrations;
mod sql;

use async_trait::async_trait;
use slipway_types::{
    App, AppDeletion, AppUpdate, Artifact, Build, Deployment, DeploymentStatus, Event, EventFilter,
    Formation, FormationUpdate, Id, Job, NewApp, NewArtifact, NewBuild, NewRelease, NewRoute,
    Release, Route, RouteType, RouteUpdate, ValidationError,
};

pub use sql::{
    API_KEY, CLUSTER_TOKEN, Dialect, FAILED_BUILDS_KEPT, MAX_UPLOAD_CHUNKS, RegistryUpload,
    SqlStore,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database could not be reached or timed out; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::RowNotFound => StoreError::NotFound("not found".into()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// Controller state. Methods that take an app take its id: resolve names with [`Store::find_app`]
/// (or [`app_by_id_or_name`] for what a user typed).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Watch the id of the newest event; streams wake on it. On PostgreSQL it follows every
    /// controller's writes (LISTEN/NOTIFY); on SQLite only this process's (see
    /// [`Store::events_cluster_wide`]).
    fn event_notifier(&self) -> tokio::sync::watch::Receiver<i64>;
    /// Whether [`Store::event_notifier`] sees other processes' writes too. When it does not, a
    /// reader that must see them polls.
    fn events_cluster_wide(&self) -> bool;

    /// Creates an app named `name` (already validated and resolved; `new.name` is ignored), and, when
    /// `default_domain` is given, its default HTTP route `<name>.<domain>` → `<name>-web`.
    async fn create_app(
        &self,
        name: &str,
        new: &NewApp,
        default_domain: Option<&str>,
    ) -> Result<App>;
    /// By id. (A path segment that may be either goes through [`app_by_id_or_name`].)
    async fn get_app(&self, id: Id) -> Result<App>;
    /// By name.
    async fn find_app(&self, name: &str) -> Result<App>;
    async fn list_apps(&self) -> Result<Vec<App>>;
    async fn update_app(&self, app_id: Id, update: &AppUpdate) -> Result<App>;
    /// Deletes the app with its routes, formations, jobs, deployments, releases, and the
    /// artifacts no other app's release uses.
    async fn delete_app(&self, app_id: Id) -> Result<AppDeletion>;
    /// Makes `release_id` (one of the app's releases) the current release.
    async fn set_app_release(&self, app_id: Id, release_id: Id) -> Result<App>;

    async fn create_artifact(&self, new: &NewArtifact) -> Result<Artifact>;
    async fn get_artifact(&self, id: Id) -> Result<Artifact>;
    /// Every artifact, oldest first: the blob store's garbage collector keeps the blobs these
    /// name.
    async fn list_artifacts(&self) -> Result<Vec<Artifact>>;
    /// Deletes an artifact no release names (Conflict while one does, of any app): the blob
    /// store's GC then frees its blobs. Housekeeping deletes old slugs this way.
    async fn delete_artifact(&self, id: Id) -> Result<()>;

    async fn create_release(&self, app_id: Id, new: &NewRelease) -> Result<Release>;
    async fn get_release(&self, id: Id) -> Result<Release>;
    /// Newest first.
    async fn list_releases(&self, app_id: Id) -> Result<Vec<Release>>;
    /// Refuses (Conflict) the app's current release and one being deployed. The release's
    /// build record goes with it.
    async fn delete_release(&self, app_id: Id, release_id: Id) -> Result<()>;
    /// [`Store::delete_release`], and in the same transaction the slug artifacts it named that
    /// no other release names (images stay: registry tags may name them); how many went.
    async fn delete_release_with_slugs(&self, app_id: Id, release_id: Id) -> Result<u64>;

    /// Records a finished build with its transcript; keeps the newest
    /// [`FAILED_BUILDS_KEPT`] builds without a release per app (a build with one goes with its
    /// release).
    async fn create_build(&self, app_id: Id, new: &NewBuild) -> Result<Build>;
    async fn get_build(&self, app_id: Id, build_id: Id) -> Result<Build>;
    /// The build's transcript, as the pusher saw it.
    async fn get_build_log(&self, app_id: Id, build_id: Id) -> Result<String>;
    /// Newest first.
    async fn list_builds(&self, app_id: Id) -> Result<Vec<Build>>;

    async fn put_formation(
        &self,
        app_id: Id,
        release_id: Id,
        update: &FormationUpdate,
    ) -> Result<Formation>;
    async fn get_formation(&self, app_id: Id, release_id: Id) -> Result<Formation>;
    async fn list_formations(&self, app_id: Id) -> Result<Vec<Formation>>;

    /// Inserts or updates a job (the scheduler reports state this way).
    async fn put_job(&self, job: &Job) -> Result<Job>;
    /// Many [`Store::put_job`]s in one transaction, in order (one event each); all or nothing.
    async fn put_jobs(&self, jobs: &[Job]) -> Result<Vec<Job>>;
    async fn get_job(&self, app_id: Id, job_id: &str) -> Result<Job>;
    async fn list_jobs(&self, app_id: Id) -> Result<Vec<Job>>;

    /// A pending deployment of `release_id` from the app's current release, with the current
    /// formation's process counts. Conflict while another one is unfinished.
    async fn create_deployment(&self, app_id: Id, release_id: Id) -> Result<Deployment>;
    async fn get_deployment(&self, id: Id) -> Result<Deployment>;
    /// Newest first.
    async fn list_deployments(&self, app_id: Id) -> Result<Vec<Deployment>>;
    /// Moves a deployment on; `complete` also makes its release the app's current one.
    async fn update_deployment(
        &self,
        id: Id,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<Deployment>;

    /// Claims deployment `id` for the deployer `owner` until `ttl` from now, atomically: only
    /// when it is unfinished and unclaimed, already `owner`'s, or its claim has expired. The
    /// same call renews a claim. False when another deployer holds it (or it has finished).
    async fn claim_deployment(&self, id: Id, owner: &str, ttl: std::time::Duration)
    -> Result<bool>;
    /// Who holds deployment `id`'s claim and until when (Unix milliseconds), if anyone does.
    async fn deployment_claim(&self, id: Id) -> Result<Option<(String, i64)>>;

    /// `route` must be normalised ([`NewRoute::normalize`]) with its service resolved.
    async fn create_route(&self, app_id: Id, route: &NewRoute) -> Result<Route>;
    async fn get_route(&self, app_id: Id, kind: RouteType, id: Id) -> Result<Route>;
    /// All apps' routes when `app_id` is None.
    async fn list_routes(&self, app_id: Option<Id>) -> Result<Vec<Route>>;
    async fn update_route(
        &self,
        app_id: Id,
        kind: RouteType,
        id: Id,
        update: &RouteUpdate,
    ) -> Result<Route>;
    async fn delete_route(&self, app_id: Id, kind: RouteType, id: Id) -> Result<()>;

    /// Oldest first.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    async fn get_event(&self, id: i64) -> Result<Event>;

    // Registry and git state shared by every controller (`sql/shared_state.rs`); digests are
    // blob store digests, the content is there.
    /// Records that `app_id`'s repository received manifest `digest` (of `media_type`).
    async fn put_registry_manifest(&self, app_id: Id, digest: &str, media_type: &str)
    -> Result<()>;
    /// The media type of manifest `digest` if `app_id`'s repository received it.
    async fn registry_manifest(&self, app_id: Id, digest: &str) -> Result<Option<String>>;
    async fn set_registry_tag(&self, app_id: Id, tag: &str, digest: &str) -> Result<()>;
    async fn registry_tag(&self, app_id: Id, tag: &str) -> Result<Option<String>>;
    /// Sorted.
    async fn list_registry_tags(&self, app_id: Id) -> Result<Vec<String>>;
    async fn create_registry_upload(&self, id: Id, app_id: Id) -> Result<()>;
    async fn registry_upload(&self, id: Id) -> Result<Option<RegistryUpload>>;
    /// Appends chunk `digest` of `size` bytes if the upload has `expected_size` bytes
    /// (`Conflict` otherwise, or at [`MAX_UPLOAD_CHUNKS`]); the new size.
    async fn append_registry_upload(
        &self,
        id: Id,
        expected_size: u64,
        digest: &str,
        size: u64,
    ) -> Result<u64>;
    /// Whether it existed.
    async fn delete_registry_upload(&self, id: Id) -> Result<bool>;
    /// Deletes uploads unchanged since `before` (unix seconds) or earlier; how many.
    async fn delete_idle_registry_uploads(&self, before: i64) -> Result<u64>;
    /// The blob digest of `app_id`'s last pushed git repository (a tar).
    async fn git_repo_digest(&self, app_id: Id) -> Result<Option<String>>;
    async fn set_git_repo_digest(&self, app_id: Id, digest: &str) -> Result<()>;
    /// Every blob the shared state above names: garbage collection keeps them.
    async fn shared_state_blobs(&self) -> Result<Vec<String>>;
    /// Leader fencing: raises `role`'s epoch to `epoch` (never lowers it); returns the stored
    /// epoch, higher than `epoch` when a newer leader announced itself (docs/scheduler.md).
    async fn announce_epoch(&self, role: &str, epoch: u64) -> Result<u64>;
    /// [`Store::put_jobs`] only while `role`'s stored epoch is `epoch`; `None`, nothing
    /// written, once a newer leader announced itself.
    async fn put_jobs_fenced(
        &self,
        role: &str,
        epoch: u64,
        jobs: &[Job],
    ) -> Result<Option<Vec<Job>>>;
    /// Takes (or renews) the lease `name` on `app_id` for `holder` until `ttl` from now;
    /// `false` while another holder's lease is live. Every controller on the database sees it.
    async fn acquire_app_lease(
        &self,
        app_id: Id,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool>;
    /// Gives the lease up if `holder` has it (else nothing).
    async fn release_app_lease(&self, app_id: Id, name: &str, holder: &str) -> Result<()>;
    /// The blob digest of `app_id`'s build cache as its last build left it.
    async fn build_cache_digest(&self, app_id: Id) -> Result<Option<String>>;
    async fn set_build_cache_digest(&self, app_id: Id, digest: &str) -> Result<()>;
}

/// Opens the store at `url`: `sqlite://PATH` (created if missing) or `postgres://…`, and brings
/// its schema up to date.
pub async fn open(url: &str) -> Result<SqlStore> {
    SqlStore::open(url).await
}

/// The app a user named by id or by name (an API path segment, a git URL, a registry
/// repository). An id is tried first, then the name, so an app whose *name* has the shape of an
/// id is still found by it. Not found says what was asked for, whichever way.
pub async fn app_by_id_or_name(store: &dyn Store, id_or_name: &str) -> Result<App> {
    if let Ok(id) = id_or_name.parse::<Id>() {
        match store.get_app(id).await {
            Err(StoreError::NotFound(_)) => {}
            found => return found,
        }
    }
    store.find_app(id_or_name).await
}
