//! The traffic gate of a process that runs discovery but no router (the router runs in another
//! process, or nowhere): the scheduler must not wait for `backend-up` events it will never see.
//! "Routed" is "registered in discovery", where every router takes its backends from; "drain"
//! is deregistering, then a short grace for routers to hear of it and finish what they sent.

use crate::discovery::bridge::{Bridge, takes_traffic};
use slipway_host::JobInfo;
use std::sync::Arc;
use std::time::Duration;

/// How long a new job may take to be registered before it counts as up anyway (a port without
/// a passing health check is never registered, and must not block a deploy).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a deregistered job keeps running: routers following discovery over HTTP hear of
/// the deregistration within a round trip, and their requests in flight finish meanwhile.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct DiscoveryGate {
    pub(crate) bridge: Arc<Bridge>,
}

#[async_trait::async_trait]
impl slipway_scheduler::TrafficGate for DiscoveryGate {
    async fn routed(&self, job: &JobInfo) {
        if !takes_traffic(job) {
            return;
        }
        let id = &job.job.id;
        if !self.bridge.wait_registered(id, REGISTER_TIMEOUT).await {
            tracing::warn!(job = %id, "the job was not registered in discovery within {REGISTER_TIMEOUT:?}; counting it up anyway");
        }
    }

    async fn drain(&self, job_id: &str) {
        if self.bridge.deregister_for_drain(job_id).await {
            tokio::time::sleep(DRAIN_GRACE).await;
        }
    }
}
