//! The zero-downtime contract with the traffic layer (the routers): a formation's new job counts
//! as `up` only once every live router sends it requests, and a job is taken out of every
//! router and drained (its in-flight requests done) before it gets SIGTERM. `slipway server`
//! plugs its gate in ([`Scheduler::set_traffic_gate`]: every router registered in discovery,
//! `crates/server/src/router/gate.rs`); without a gate (the fake hosts of the simulations)
//! jobs are up when healthy and stopped at once, as before.

use crate::Scheduler;
use async_trait::async_trait;
use slipway_host::JobInfo;
use std::sync::Arc;

#[async_trait]
pub trait TrafficGate: Send + Sync + 'static {
    /// Returns once the routers have `job` as a backend, at once for a job that takes no
    /// traffic, or after the gate's own timeout (a job with no route must not block a deploy).
    async fn routed(&self, job: &JobInfo);
    /// Takes the job out of traffic and returns once no router has a request in flight to
    /// it (or after the gate's timeout); at once for a job no router has.
    async fn drain(&self, job_id: &str);
}

impl Scheduler {
    /// Makes `up` wait for the router and stops drain first. Set once, before jobs start.
    pub fn set_traffic_gate(&self, gate: Arc<dyn TrafficGate>) {
        let _ = self.inner.gate.set(gate);
    }

    pub(crate) fn traffic_gate(&self) -> Option<Arc<dyn TrafficGate>> {
        self.inner.gate.get().cloned()
    }

    /// Waits for the router to have a healthy formation job, then lets the job's state move
    /// on to `up` (re-reading the job from its host, whose state may have changed meanwhile).
    pub(crate) fn spawn_route_wait(&self, host: String, info: JobInfo) {
        let Some(gate) = self.traffic_gate() else {
            return;
        };
        let sched = self.clone();
        tokio::spawn(async move {
            gate.routed(&info).await;
            let id = info.job.id.clone();
            let api = sched.lock().hosts.get(&host).map(|h| h.api.clone());
            let fresh = match api {
                Some(api) => api.get_job(&id).await.unwrap_or(info),
                None => info,
            };
            let mut st = sched.lock();
            if let Some(t) = st.jobs.get_mut(&id) {
                t.routed = true;
            }
            sched.on_host_job(&mut st, &host, &fresh, false);
        });
    }
}
