//! The traffic gate (zero downtime): a formation job's row goes `up` only once the gate says the
//! router has it, and a job is drained (while still running) before its host is asked to stop it.

use crate::harness::*;
use async_trait::async_trait;
use slipway_host::{HostApi, JobInfo, JobStatus};
use slipway_scheduler::TrafficGate;
use slipway_types::JobState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const NONE: &[(&str, &[(&str, &str)])] = &[];

/// Holds `routed` until `open`; records what `drain` saw of the job on its host.
struct TestGate {
    host: Arc<TestHost>,
    open: AtomicBool,
    routed_calls: Mutex<Vec<String>>,
    /// (job id, running and not asked to stop when the drain began, and still when it ended)
    drains: Mutex<Vec<(String, bool, bool)>>,
}

#[async_trait]
impl TrafficGate for TestGate {
    async fn routed(&self, job: &JobInfo) {
        self.routed_calls.lock().unwrap().push(job.job.id.clone());
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn drain(&self, job_id: &str) {
        let running = |info: JobInfo| info.status == JobStatus::Running && !info.stop_requested;
        let before = running(self.host.agent.get_job(job_id).await.unwrap());
        // In-flight requests finishing: the stop must wait for this.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = running(self.host.agent.get_job(job_id).await.unwrap());
        self.drains
            .lock()
            .unwrap()
            .push((job_id.to_string(), before, after));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_up_only_once_routed_and_drained_before_they_are_stopped() {
    let c = Cluster::new(&[("ha", &[])], fast()).await;
    let gate = Arc::new(TestGate {
        host: c.hosts[0].clone(),
        open: AtomicBool::new(false),
        routed_calls: Mutex::new(Vec::new()),
        drains: Mutex::new(Vec::new()),
    });
    c.sched.set_traffic_gate(gate.clone());
    let (app, rel) = c.app(&[("web", &["run"])]).await;
    c.scale(&app, &rel, &[("web", 2)], NONE).await;

    // Healthy on the host, but not routed yet: the rows stay `starting`.
    c.wait_jobs(&app, T, "2 jobs the gate was asked about", |_| {
        gate.routed_calls.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = c.store.list_jobs(app.id).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.state == JobState::Starting),
        "{:?}",
        summary(&jobs)
    );
    gate.open.store(true, Ordering::SeqCst);
    let jobs = c.wait_jobs(&app, T, "2 up", |j| up(j).len() == 2).await;
    assert_eq!(
        gate.routed_calls.lock().unwrap().len(),
        2,
        "one wait per job, not one per event or resync"
    );

    // Scale down: drained while running, then stopped.
    c.scale(&app, &rel, &[("web", 0)], NONE).await;
    c.wait_jobs(&app, T, "2 down", |j| {
        j.iter().filter(|j| j.state == JobState::Down).count() == 2
    })
    .await;
    let mut drained: Vec<_> = gate.drains.lock().unwrap().clone();
    drained.sort();
    let mut want: Vec<_> = jobs.iter().map(|j| (j.id.clone(), true, true)).collect();
    want.sort();
    assert_eq!(drained, want);
}
