//! Slipway's data model: Flynn's nouns (App, Artifact, Release, ProcessType, Formation, Job,
//! Deployment, Route, Event) with their validation and JSON shapes.
//!
//! Everything in Slipway depends on this crate, so it does no I/O and pulls in nothing heavy:
//! the store persists these types, the controller serves them, the client and CLI read them.

#![forbid(unsafe_code)]

mod app;
mod build;
mod cluster;
mod deployment;
mod error;
mod event;
mod job;
mod log;
mod names;
mod release;
mod route;
mod secret;
mod time_format;
pub mod units;

pub use app::{
    App, AppDeletion, AppUpdate, DEFAULT_DEPLOY_TIMEOUT, DeployStrategy, NewApp, RESERVED_APP_NAME,
    validate_app_name,
};
pub use build::{Build, BuildStatus, MAX_BUILD_LOG_BYTES, NewBuild};
pub use cluster::{
    ClusterStatus, Coordination, DrainStatus, EtcdMember, HostInfo, HostState, RoleLeader,
    ServiceMember,
};
pub use deployment::{Deployment, DeploymentStatus, NewDeployment};
pub use error::{ApiError, ErrorCode, ValidationError};
pub use event::{Event, EventFilter, EventOp, ObjectType};
pub use job::{Formation, FormationUpdate, Job, JobState, NewJob, OutputLine, TermSize};
pub use log::{LOG_METADATA_KEY, LOG_STREAMS, LogEntry};
pub use names::{MAX_STACK_NAME_LEN, random_app_name, validate_stack_name};
pub use release::{
    Artifact, ArtifactType, HealthCheck, HealthCheckType, LimitBound, MAX_DISK, MIN_DISK,
    NewArtifact, NewRelease, Port, ProcessType, Release, Resources, Service, validate_args,
    validate_env,
};
pub use route::{
    Certificate, HttpRoute, MAX_SERVICE_NAME_LEN, NewRoute, PLATFORM_SERVICES, Route, RouteType,
    RouteUpdate, TCP_PORT_RANGE, TcpRoute, normalize_domain, normalize_path, validate_service_name,
};
pub use secret::secret_eq;
pub use time_format::Timestamp;

/// String maps (env, meta) are ordered so that JSON output and release diffs are stable.
pub type StringMap = std::collections::BTreeMap<String, String>;

/// Identifier of every model object but jobs and events.
pub type Id = uuid::Uuid;

/// `GET /cluster`: what a client needs to know about the server it talks to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    pub version: String,
    /// Apps get `<app>.<default_domain>` as their default HTTP route.
    pub default_domain: String,
    /// Base URL of the git receiver: the remote of app `A` is `<git_url>/A.git`.
    pub git_url: String,
}

/// `PUT /apps/:app/release`: make a release current (without deploying it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRelease {
    pub id: Id,
}
