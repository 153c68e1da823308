//! The traffic gate when no router is known (none registered in discovery, none in this
//! process; [`crate::router::gate::RoutersGate`] falls back to it): "routed" is "registered in
//! discovery", where every router takes its backends from; "drain" is deregistering, then a
//! short grace for a router that did not register (an older one) to hear of it.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::bridge::sync_job;
    use slipway_discovery::{LocalRegistry, Registry};
    use slipway_scheduler::TrafficGate;
    use std::time::Instant;

    fn job(id: &str, process_type: &str) -> JobInfo {
        serde_json::from_value(serde_json::json!({
            "job": {
                "id": id,
                "app_name": "shop",
                "release_id": "r1",
                "process_type": process_type,
                "config": { "args": ["httpd"], "stack": "busybox" },
            },
            "status": "running",
            "ip": "10.200.0.2",
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_job_is_routed_once_registered_and_drained_by_deregistering_for_good() {
        let registry: Arc<dyn Registry> =
            Arc::new(LocalRegistry::new(slipway_discovery::DEFAULT_TTL));
        let bridge = Arc::new(Bridge::default());
        let gate = Arc::new(DiscoveryGate {
            bridge: bridge.clone(),
        });
        let web = job("j1", "web");
        let waiting = tokio::spawn({
            let (gate, web) = (gate.clone(), web.clone());
            async move { gate.routed(&web).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "routed before it was registered");
        sync_job(&registry, &bridge, &web, None).await;
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("routed once registered")
            .unwrap();
        assert_eq!(registry.instances("shop-web").await.unwrap().len(), 1);

        let t0 = Instant::now();
        gate.drain("j1").await;
        assert!(t0.elapsed() >= DRAIN_GRACE, "{:?}", t0.elapsed());
        assert!(registry.instances("shop-web").await.unwrap().is_empty());
        // The host still reports it running: a drained job is not registered again.
        sync_job(&registry, &bridge, &web, None).await;
        assert!(registry.instances("shop-web").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_job_without_traffic_is_routed_at_once_and_drained_without_a_grace() {
        let gate = DiscoveryGate {
            bridge: Arc::new(Bridge::default()),
        };
        let t0 = Instant::now();
        gate.routed(&job("w1", "worker")).await;
        gate.drain("w1").await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
}
