//! The zero-downtime gate over an in-process router: the scheduler counts a job up once the
//! router reports `backend-up` for it, and stops a job only after the router reported
//! `backend-drained` (its requests in flight are done).

use crate::discovery::bridge::{Bridge, takes_traffic};
use slipway_host::JobInfo;
use std::sync::Arc;
use std::time::Duration;

/// How long a new job may take to appear in the router before it counts as up anyway (a job
/// whose port is not registered, e.g. no health check passed yet, must not block a deploy).
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping job's in-flight requests may take before it gets SIGTERM anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The scheduler's [`slipway_scheduler::TrafficGate`] over the in-process router: which
/// instances the router has (from its `backend-up` / `backend-drained` events).
pub(crate) struct RouterGate {
    bridge: Arc<Bridge>,
    routed: std::sync::Mutex<std::collections::HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl RouterGate {
    pub(crate) fn start(router: &slipway_router::Router, bridge: Arc<Bridge>) -> Arc<RouterGate> {
        let gate = Arc::new(RouterGate {
            bridge,
            routed: Default::default(),
            changed: tokio::sync::Notify::new(),
        });
        let mut events = router.events();
        let g = gate.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        let mut routed = g.routed.lock().expect("routed");
                        match ev.kind {
                            "backend-up" => {
                                routed.insert(ev.instance);
                            }
                            "backend-drained" => {
                                routed.remove(&ev.instance);
                            }
                            _ => {}
                        }
                        drop(routed);
                        g.changed.notify_waiters();
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("traffic gate: missed {n} router events");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        gate
    }

    /// Waits until `done()` holds, or `timeout`; returns whether it held.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&RouterGate) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }
}

#[async_trait::async_trait]
impl slipway_scheduler::TrafficGate for RouterGate {
    async fn routed(&self, job: &JobInfo) {
        if !takes_traffic(job) {
            return;
        }
        let id = job.job.id.clone();
        let ok = self
            .wait_until(ROUTE_TIMEOUT, |g| {
                g.routed.lock().expect("routed").contains(&id)
            })
            .await;
        if !ok {
            tracing::warn!(job = %id, "the router did not get the job within {ROUTE_TIMEOUT:?}; counting it up anyway");
        }
    }

    async fn drain(&self, job_id: &str) {
        // Once deregistered, the router stops sending new requests and reports
        // `backend-drained` when the last one in flight is done.
        if !self.bridge.deregister_for_drain(job_id).await {
            return;
        }
        let id = job_id.to_string();
        let t0 = std::time::Instant::now();
        let ok = self
            .wait_until(DRAIN_TIMEOUT, |g| {
                !g.routed.lock().expect("routed").contains(&id)
            })
            .await;
        if ok {
            tracing::debug!(job = %id, "drained from the router in {:?}", t0.elapsed());
        } else {
            tracing::warn!(job = %id, "requests to the job were still in flight after {DRAIN_TIMEOUT:?}; stopping it anyway");
        }
    }
}
