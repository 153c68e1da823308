//! The host API: one trait, used by the scheduler and the CLI, implemented in-process by
//! [`crate::Agent`] (embedded mode) and over HTTP by [`crate::client::HttpHost`] (cluster mode).

use crate::types::{HostJob, HostStatus, JobEvent, JobInfo, LogLine};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum HostError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

impl From<anyhow::Error> for HostError {
    fn from(e: anyhow::Error) -> Self {
        HostError::Internal(format!("{e:#}"))
    }
}

pub type HostResult<T> = Result<T, HostError>;

impl HostError {
    /// What a host answers a scheduler whose epoch is older than one it has seen (409).
    pub fn fenced(newest: u64) -> HostError {
        HostError::Conflict(format!("fenced: a newer scheduler (epoch {newest}) leads"))
    }

    /// Whether this is [`HostError::fenced`]: the caller is no longer the leader.
    pub fn is_fenced(&self) -> bool {
        matches!(self, HostError::Conflict(m) if m.starts_with("fenced: "))
    }
}

#[async_trait]
pub trait HostApi: Send + Sync {
    /// Starts a job; returns once it runs (status `running`) or failed to start (`failed`).
    async fn add_job(&self, job: HostJob) -> HostResult<JobInfo>;
    async fn list_jobs(&self) -> HostResult<Vec<JobInfo>>;
    async fn get_job(&self, id: &str) -> HostResult<JobInfo>;
    /// Asks a job to stop: SIGTERM, then SIGKILL after its grace period. Returns at once.
    async fn stop_job(&self, id: &str) -> HostResult<JobInfo>;
    async fn signal_job(&self, id: &str, signal: i32) -> HostResult<()>;
    /// Waits until the job has finished (done, crashed or failed).
    async fn wait_job(&self, id: &str) -> HostResult<JobInfo>;
    /// Job events from now on: create, start, up, down, stop (with exit status), error, cleanup.
    async fn events(&self) -> HostResult<BoxStream<'static, JobEvent>>;
    /// A job's log lines; with `follow`, until the job has exited.
    async fn logs(&self, id: &str, follow: bool) -> HostResult<BoxStream<'static, LogLine>>;
    async fn status(&self) -> HostResult<HostStatus>;
    /// Leader fencing (docs/scheduler.md): raises the host's epoch to `epoch`, the epoch of a
    /// scheduler that just became leader. Returns once no call of an older epoch is in flight
    /// any more; refused ([`HostError::fenced`]) if the host has seen a newer one.
    async fn fence(&self, epoch: u64) -> HostResult<()>;
    /// [`HostApi::add_job`] on behalf of the scheduler of `epoch`: refused
    /// ([`HostError::fenced`]) once the host has seen a newer epoch.
    async fn add_job_fenced(&self, job: HostJob, epoch: u64) -> HostResult<JobInfo>;
    /// [`HostApi::stop_job`] on behalf of the scheduler of `epoch`, fenced the same way.
    async fn stop_job_fenced(&self, id: &str, epoch: u64) -> HostResult<JobInfo>;
    /// Attaches to a job started with `config.attach`: a stream of [`crate::attach`] frames
    /// (stdin, signals and resizes in; output and the exit status out).
    async fn attach(&self, id: &str) -> HostResult<crate::attach::AttachStream> {
        Err(HostError::BadRequest(format!(
            "this host cannot attach to jobs (job {id})"
        )))
    }
}
