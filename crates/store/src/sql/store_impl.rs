//! [`Store`] for [`SqlStore`]: each method is the inherent one of the same name.

use super::SqlStore;
use super::shared_state::RegistryUpload;
use crate::{Result, Store};
use async_trait::async_trait;
use slipway_types::{
    App, AppDeletion, AppUpdate, Artifact, Build, Deployment, DeploymentStatus, Event, EventFilter,
    Formation, FormationUpdate, Id, Job, NewApp, NewArtifact, NewBuild, NewRelease, NewRoute,
    Release, Route, RouteType, RouteUpdate,
};

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.dialect() {
            super::Dialect::Sqlite => "sqlite",
            super::Dialect::Postgres => "postgres",
        }
    }
    fn event_notifier(&self) -> tokio::sync::watch::Receiver<i64> {
        self.subscribe()
    }
    fn events_cluster_wide(&self) -> bool {
        self.dialect() == super::Dialect::Postgres
    }
    async fn create_app(
        &self,
        name: &str,
        new: &NewApp,
        default_domain: Option<&str>,
    ) -> Result<App> {
        SqlStore::create_app(self, name, new, default_domain).await
    }
    async fn get_app(&self, id: Id) -> Result<App> {
        SqlStore::get_app(self, id).await
    }
    async fn find_app(&self, name: &str) -> Result<App> {
        SqlStore::find_app(self, name).await
    }
    async fn list_apps(&self) -> Result<Vec<App>> {
        SqlStore::list_apps(self).await
    }
    async fn update_app(&self, app_id: Id, update: &AppUpdate) -> Result<App> {
        SqlStore::update_app(self, app_id, update).await
    }
    async fn delete_app(&self, app_id: Id) -> Result<AppDeletion> {
        SqlStore::delete_app(self, app_id).await
    }
    async fn set_app_release(&self, app_id: Id, release_id: Id) -> Result<App> {
        SqlStore::set_app_release(self, app_id, release_id).await
    }
    async fn create_artifact(&self, new: &NewArtifact) -> Result<Artifact> {
        SqlStore::create_artifact(self, new).await
    }
    async fn get_artifact(&self, id: Id) -> Result<Artifact> {
        SqlStore::get_artifact(self, id).await
    }
    async fn list_artifacts(&self) -> Result<Vec<Artifact>> {
        SqlStore::list_artifacts(self).await
    }
    async fn delete_artifact(&self, id: Id) -> Result<()> {
        SqlStore::delete_artifact(self, id).await
    }
    async fn create_build(&self, app_id: Id, new: &NewBuild) -> Result<Build> {
        SqlStore::create_build(self, app_id, new).await
    }
    async fn get_build(&self, app_id: Id, build_id: Id) -> Result<Build> {
        SqlStore::get_build(self, app_id, build_id).await
    }
    async fn get_build_log(&self, app_id: Id, build_id: Id) -> Result<String> {
        SqlStore::get_build_log(self, app_id, build_id).await
    }
    async fn list_builds(&self, app_id: Id) -> Result<Vec<Build>> {
        SqlStore::list_builds(self, app_id).await
    }
    async fn create_release(&self, app_id: Id, new: &NewRelease) -> Result<Release> {
        SqlStore::create_release(self, app_id, new).await
    }
    async fn get_release(&self, id: Id) -> Result<Release> {
        SqlStore::get_release(self, id).await
    }
    async fn list_releases(&self, app_id: Id) -> Result<Vec<Release>> {
        SqlStore::list_releases(self, app_id).await
    }
    async fn delete_release(&self, app_id: Id, release_id: Id) -> Result<()> {
        SqlStore::delete_release(self, app_id, release_id).await
    }
    async fn delete_release_with_slugs(&self, app_id: Id, release_id: Id) -> Result<u64> {
        SqlStore::delete_release_with_slugs(self, app_id, release_id).await
    }
    async fn put_formation(
        &self,
        app_id: Id,
        release_id: Id,
        update: &FormationUpdate,
    ) -> Result<Formation> {
        SqlStore::put_formation(self, app_id, release_id, update).await
    }
    async fn get_formation(&self, app_id: Id, release_id: Id) -> Result<Formation> {
        SqlStore::get_formation(self, app_id, release_id).await
    }
    async fn list_formations(&self, app_id: Id) -> Result<Vec<Formation>> {
        SqlStore::list_formations(self, app_id).await
    }
    async fn put_job(&self, job: &Job) -> Result<Job> {
        SqlStore::put_job(self, job).await
    }
    async fn put_jobs(&self, jobs: &[Job]) -> Result<Vec<Job>> {
        SqlStore::put_jobs(self, jobs).await
    }
    async fn get_job(&self, app_id: Id, job_id: &str) -> Result<Job> {
        SqlStore::get_job(self, app_id, job_id).await
    }
    async fn list_jobs(&self, app_id: Id) -> Result<Vec<Job>> {
        SqlStore::list_jobs(self, app_id).await
    }
    async fn create_deployment(&self, app_id: Id, release_id: Id) -> Result<Deployment> {
        SqlStore::create_deployment(self, app_id, release_id).await
    }
    async fn get_deployment(&self, id: Id) -> Result<Deployment> {
        SqlStore::get_deployment(self, id).await
    }
    async fn list_deployments(&self, app_id: Id) -> Result<Vec<Deployment>> {
        SqlStore::list_deployments(self, app_id).await
    }
    async fn update_deployment(
        &self,
        id: Id,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<Deployment> {
        SqlStore::update_deployment(self, id, status, error).await
    }
    async fn claim_deployment(
        &self,
        id: Id,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        SqlStore::claim_deployment(self, id, owner, ttl).await
    }
    async fn deployment_claim(&self, id: Id) -> Result<Option<(String, i64)>> {
        SqlStore::deployment_claim(self, id).await
    }
    async fn create_route(&self, app_id: Id, route: &NewRoute) -> Result<Route> {
        SqlStore::create_route(self, app_id, route).await
    }
    async fn get_route(&self, app_id: Id, kind: RouteType, id: Id) -> Result<Route> {
        SqlStore::get_route(self, app_id, kind, id).await
    }
    async fn list_routes(&self, app_id: Option<Id>) -> Result<Vec<Route>> {
        SqlStore::list_routes(self, app_id).await
    }
    async fn update_route(
        &self,
        app_id: Id,
        kind: RouteType,
        id: Id,
        update: &RouteUpdate,
    ) -> Result<Route> {
        SqlStore::update_route(self, app_id, kind, id, update).await
    }
    async fn delete_route(&self, app_id: Id, kind: RouteType, id: Id) -> Result<()> {
        SqlStore::delete_route(self, app_id, kind, id).await
    }
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        SqlStore::list_events(self, filter).await
    }
    async fn get_event(&self, id: i64) -> Result<Event> {
        SqlStore::get_event(self, id).await
    }
    async fn put_registry_manifest(
        &self,
        app_id: Id,
        digest: &str,
        media_type: &str,
    ) -> Result<()> {
        SqlStore::put_registry_manifest(self, app_id, digest, media_type).await
    }
    async fn registry_manifest(&self, app_id: Id, digest: &str) -> Result<Option<String>> {
        SqlStore::registry_manifest(self, app_id, digest).await
    }
    async fn set_registry_tag(&self, app_id: Id, tag: &str, digest: &str) -> Result<()> {
        SqlStore::set_registry_tag(self, app_id, tag, digest).await
    }
    async fn registry_tag(&self, app_id: Id, tag: &str) -> Result<Option<String>> {
        SqlStore::registry_tag(self, app_id, tag).await
    }
    async fn list_registry_tags(&self, app_id: Id) -> Result<Vec<String>> {
        SqlStore::list_registry_tags(self, app_id).await
    }
    async fn create_registry_upload(&self, id: Id, app_id: Id) -> Result<()> {
        SqlStore::create_registry_upload(self, id, app_id).await
    }
    async fn registry_upload(&self, id: Id) -> Result<Option<RegistryUpload>> {
        SqlStore::registry_upload(self, id).await
    }
    async fn append_registry_upload(
        &self,
        id: Id,
        expected_size: u64,
        digest: &str,
        size: u64,
    ) -> Result<u64> {
        SqlStore::append_registry_upload(self, id, expected_size, digest, size).await
    }
    async fn delete_registry_upload(&self, id: Id) -> Result<bool> {
        SqlStore::delete_registry_upload(self, id).await
    }
    async fn delete_idle_registry_uploads(&self, before: i64) -> Result<u64> {
        SqlStore::delete_idle_registry_uploads(self, before).await
    }
    async fn git_repo_digest(&self, app_id: Id) -> Result<Option<String>> {
        SqlStore::git_repo_digest(self, app_id).await
    }
    async fn set_git_repo_digest(&self, app_id: Id, digest: &str) -> Result<()> {
        SqlStore::set_git_repo_digest(self, app_id, digest).await
    }
    async fn shared_state_blobs(&self) -> Result<Vec<String>> {
        SqlStore::shared_state_blobs(self).await
    }
    async fn announce_epoch(&self, role: &str, epoch: u64) -> Result<u64> {
        SqlStore::announce_epoch(self, role, epoch).await
    }
    async fn put_jobs_fenced(
        &self,
        role: &str,
        epoch: u64,
        jobs: &[Job],
    ) -> Result<Option<Vec<Job>>> {
        SqlStore::put_jobs_fenced(self, role, epoch, jobs).await
    }
    async fn acquire_app_lease(
        &self,
        app_id: Id,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        SqlStore::acquire_app_lease(self, app_id, name, holder, ttl).await
    }
    async fn release_app_lease(&self, app_id: Id, name: &str, holder: &str) -> Result<()> {
        SqlStore::release_app_lease(self, app_id, name, holder).await
    }
    async fn build_cache_digest(&self, app_id: Id) -> Result<Option<String>> {
        SqlStore::build_cache_digest(self, app_id).await
    }
    async fn set_build_cache_digest(&self, app_id: Id, digest: &str) -> Result<()> {
        SqlStore::set_build_cache_digest(self, app_id, digest).await
    }
}
