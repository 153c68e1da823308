//! The bridge from the local host's jobs to discovery: each port of a job becomes an instance
//! of `APP-TYPE` once the job's health checks pass, and goes when the job goes down, stops or
//! fails. The traffic gates (the router's, discovery's) share what it registered: draining a
//! job is deregistering it first.

use slipway_discovery::{NewInstance, Registration, Registry};
use slipway_host::{EventKind, HostApi, JobInfo, JobStatus};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Registrations of this process's jobs, and the jobs being drained (never registered again).
#[derive(Default)]
pub(crate) struct Bridge {
    live: tokio::sync::Mutex<HashMap<String, Vec<Registration>>>,
    draining: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Woken after a job is registered (discovery's gate waits for that).
    registered: tokio::sync::Notify,
    /// The host of each registered job, so a lost host's jobs can be taken out at once.
    owners: std::sync::Mutex<HashMap<String, String>>,
}

impl Bridge {
    /// Takes the job out of discovery for good (until its cleanup): marks it draining, then
    /// drops its registrations, which deregisters them. Returns whether it had any.
    pub(crate) async fn deregister_for_drain(&self, job_id: &str) -> bool {
        self.draining
            .lock()
            .expect("draining")
            .insert(job_id.to_string());
        self.live.lock().await.remove(job_id).is_some()
    }

    /// Deregisters the jobs of a host that is gone (its registration in discovery expired):
    /// nobody would stop heartbeating them otherwise.
    pub(crate) async fn forget_host_jobs(&self, host: &str) {
        let jobs: Vec<String> = {
            let mut owners = self.owners.lock().expect("owners");
            let jobs = owners
                .iter()
                .filter(|(_, h)| *h == host)
                .map(|(j, _)| j.clone())
                .collect();
            owners.retain(|_, h| h != host);
            jobs
        };
        let mut live = self.live.lock().await;
        for job in &jobs {
            live.remove(job);
        }
        if !jobs.is_empty() {
            tracing::info!(
                host,
                jobs = jobs.len(),
                "discovery: the host is gone; its jobs are deregistered"
            );
        }
    }

    /// Waits until the job is registered, or `timeout`; returns whether it is.
    pub(crate) async fn wait_registered(&self, job_id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.registered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.lock().await.contains_key(job_id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live.lock().await.contains_key(job_id);
            }
        }
    }
}

/// Whether a job takes traffic through the router: what [`sync_job`] registers.
pub(crate) fn takes_traffic(job: &JobInfo) -> bool {
    job.ip.is_some()
        && !job.job.app_name.is_empty()
        && (job.job.config.ports.iter().any(|p| p.proto == "tcp")
            || (job.job.config.ports.is_empty() && job.job.process_type == "web"))
}

/// Registers a host's jobs in discovery: each port of a job as an instance of `APP-TYPE`
/// (Flynn's service naming; the app's default route points at `APP-web`) at `JOB_IP:PORT`,
/// once the job's health checks pass (or once it started, for ports without a check), and
/// deregisters it when the job goes down, stops or fails. Heartbeats keep it alive; if this
/// process dies, the instance expires after the TTL.
pub(crate) fn follow_host(
    host: Arc<dyn HostApi>,
    registry: Arc<dyn Registry>,
    bridge: Arc<Bridge>,
) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut host_id = String::new();
        loop {
            if host_id.is_empty() {
                match host.status().await {
                    Ok(s) => host_id = s.id,
                    Err(e) => {
                        tracing::warn!("discovery: cannot reach a host: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let events = match host.events().await {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("discovery: cannot follow the host's jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Ok(jobs) = host.list_jobs().await {
                for j in jobs {
                    bridge.own(&j, &host_id);
                    sync_job(&registry, &bridge, &j, None).await;
                }
            }
            use futures_util::StreamExt;
            let mut events = events;
            while let Some(ev) = events.next().await {
                bridge.own(&ev.job, &host_id);
                sync_job(&registry, &bridge, &ev.job, Some(ev.kind)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    task.abort_handle()
}

impl Bridge {
    /// Records the job's host while it may be registered.
    fn own(&self, job: &JobInfo, host: &str) {
        let mut owners = self.owners.lock().expect("owners");
        if job.status.is_terminal() {
            owners.remove(&job.job.id);
        } else {
            owners.insert(job.job.id.clone(), host.to_string());
        }
    }
}

pub(crate) async fn sync_job(
    registry: &Arc<dyn Registry>,
    bridge: &Bridge,
    job: &JobInfo,
    kind: Option<EventKind>,
) {
    let id = job.job.id.clone();
    if matches!(kind, Some(EventKind::Cleanup)) {
        bridge.draining.lock().expect("draining").remove(&id);
    }
    // Read under the `live` lock: a drain marks the job first, then takes the lock, so a job
    // being drained is never registered again behind its back.
    let mut live = bridge.live.lock().await;
    let draining = bridge.draining.lock().expect("draining").contains(&id);
    let running = job.status == JobStatus::Running && !job.stop_requested;
    let checked = job.job.config.ports.iter().any(|p| p.check.is_some());
    let wanted = running
        && !draining
        && (job.up || !checked)
        && !matches!(
            kind,
            Some(EventKind::Down | EventKind::Stop | EventKind::Error | EventKind::Cleanup)
        );
    if !wanted {
        // Dropping the registrations deregisters them.
        live.remove(&id);
        return;
    }
    let (Some(ip), false) = (job.ip, live.contains_key(&id)) else {
        return;
    };
    if job.job.app_name.is_empty() || job.job.process_type.is_empty() {
        return;
    }
    let service = format!("{}-{}", job.job.app_name, job.job.process_type);
    // A web process that declares no port listens on $PORT (8080) all the same.
    let mut ports: Vec<u16> = job
        .job
        .config
        .ports
        .iter()
        .filter(|p| p.proto == "tcp")
        .map(|p| p.port)
        .collect();
    if job.job.config.ports.is_empty() && job.job.process_type == "web" {
        ports.push(slipway_host::DEFAULT_WEB_PORT);
    }
    let mut regs = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("release".into(), job.job.release_id.clone());
        meta.insert("app".into(), job.job.app_name.clone());
        let new = NewInstance {
            addr: SocketAddr::new(IpAddr::V4(ip), port).to_string(),
            proto: Some("tcp".into()),
            meta,
        };
        let inst_id = if i == 0 {
            id.clone()
        } else {
            format!("{id}.{port}")
        };
        match Registration::start(
            registry.clone(),
            &service,
            &inst_id,
            new,
            slipway_discovery::DEFAULT_TTL,
        )
        .await
        {
            Ok(r) => regs.push(r),
            Err(e) => tracing::warn!(job = %id, %service, "discovery: cannot register: {e}"),
        }
    }
    tracing::info!(job = %id, %service, "discovery: registered");
    live.insert(id, regs);
    drop(live);
    bridge.registered.notify_waiters();
}
