//! The `Runtime` seam: what the agent needs from whatever runs containers. Two implementations:
//! [`crate::runc::RuncRuntime`] (the real one) and [`crate::fake::FakeRuntime`] (in memory, for
//! scheduler tests and simulations — in addition to runc, never instead of it).

use crate::types::{ExitStatus, HostJob, LogLine};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use std::net::Ipv4Addr;

/// A job whose process is running.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub ip: Option<Ipv4Addr>,
    pub pid: Option<u32>,
    /// Things users should know (e.g. a clamped limit).
    pub warnings: Vec<String>,
}

/// A job found by [`Runtime::recover`] after an agent restart.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// Still running: [`Runtime::wait`] works for it.
    Running { ip: Option<Ipv4Addr> },
    /// Exited while the agent was away.
    Exited(ExitStatus),
    /// The container never started.
    StartFailed(String),
    /// Its supervisor is gone and it left no exit status.
    Lost,
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Creates and starts the job's container; returns once its process runs.
    async fn start(&self, job: &HostJob) -> anyhow::Result<Started>;
    /// Sends a signal to the job's init process.
    async fn signal(&self, id: &str, signal: i32) -> anyhow::Result<()>;
    /// Resolves when the job's process has exited, with how it ended.
    async fn wait(&self, id: &str) -> anyhow::Result<ExitStatus>;
    /// Releases everything the job held (container, cgroup, mounts, veth, IP, bundle); its logs
    /// stay. Idempotent.
    async fn cleanup(&self, id: &str) -> anyhow::Result<()>;
    /// Jobs left by a previous agent process, by id.
    async fn recover(&self) -> anyhow::Result<Vec<(String, Recovered)>>;
    /// The job's log lines; with `follow`, keeps yielding until the job has exited.
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, LogLine>;
    /// Connects to an attached job's stdin/output (see [`crate::attach`]).
    async fn attach(&self, id: &str) -> anyhow::Result<crate::attach::AttachStream> {
        anyhow::bail!(
            "the {} runtime cannot attach to jobs (job {id})",
            self.name()
        )
    }
    /// Deletes what is kept of a finished job after cleanup (its logs).
    fn forget(&self, _id: &str) {}
    /// Removes host-wide state (bridge, NAT table, cgroup parent). For tests and uninstall.
    async fn teardown(&self) -> anyhow::Result<()>;
}
