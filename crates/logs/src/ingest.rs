//! Where lines come from: each host's jobs, through `HostApi` (in-process now, HTTP in cluster
//! mode). Per host, one task follows the job events (and turns them into platform lines: started,
//! health checks, exit status and OOM, restarts) and starts one reader per logged job, which reads
//! the job's log from the host, skips what is stored already (see [`crate::aggregator`]), and
//! stops once the job has finished and its log is read to the end.

use crate::aggregator::{Aggregator, Source};
use futures_util::StreamExt;
use slipway_host::{EventKind, HostApi, HostError, HostJob, JobInfo};
use slipway_types::{LOG_METADATA_KEY, Timestamp};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Formation, build and detached one-off jobs (`run -d`) are logged; an attached one-off job
/// (`run`, its output goes to the terminal) only when its metadata asks for it (`log=1`:
/// `run --enable-log`).
pub fn is_logged(job: &HostJob) -> bool {
    !job.app_id.is_empty()
        && (!job.process_type.is_empty()
            || job.config.attach.is_none()
            || job.metadata.get(LOG_METADATA_KEY).is_some_and(|v| v == "1"))
}

fn source(job: &HostJob, host_id: &str) -> Source {
    Source {
        app: job.app_name.clone(),
        app_id: job.app_id.clone(),
        release_id: job.release_id.clone(),
        process_type: job.process_type.clone(),
        job_id: job.id.clone(),
        host_id: host_id.to_string(),
    }
}

/// Follows a host's jobs into the aggregator until aborted (the job readers stop with it).
/// Reconnects (and re-reads the job list, so nothing is missed) when the host's event stream
/// ends.
pub fn follow_host(agg: Aggregator, host: Arc<dyn HostApi>) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let following: Arc<Mutex<HashSet<String>>> = Default::default();
        // Owned here, so aborting this task aborts the readers.
        let mut readers = tokio::task::JoinSet::new();
        let mut host_id = String::new();
        loop {
            if host_id.is_empty() {
                match host.status().await {
                    Ok(s) => host_id = s.id,
                    Err(e) => {
                        tracing::warn!("logs: cannot reach a host: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let mut events = match host.events().await {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(host = %host_id, "logs: cannot follow the host's jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Ok(jobs) = host.list_jobs().await {
                for j in jobs {
                    start_reader(&mut readers, &agg, &host, &host_id, &following, &j);
                }
            }
            // Resync now and then: a reader that gave up is restarted.
            let mut resync = tokio::time::interval(Duration::from_secs(10));
            resync.tick().await;
            loop {
                tokio::select! {
                    ev = events.next() => {
                        let Some(ev) = ev else { break };
                        if !is_logged(&ev.job.job) {
                            continue;
                        }
                        if let Some(msg) = platform_line(ev.kind, &ev.job) {
                            let src = source(&ev.job.job, &host_id);
                            if let Err(e) = agg.append_platform(&src, Timestamp::now(), &msg) {
                                tracing::warn!("logs: cannot store a line: {e}");
                            }
                        }
                        if matches!(ev.kind, EventKind::Start | EventKind::Stop | EventKind::Error) {
                            start_reader(&mut readers, &agg, &host, &host_id, &following, &ev.job);
                        }
                    }
                    Some(_) = readers.join_next(), if !readers.is_empty() => {}
                    _ = resync.tick() => {
                        if let Ok(jobs) = host.list_jobs().await {
                            for j in jobs {
                                start_reader(&mut readers, &agg, &host, &host_id, &following, &j);
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    task.abort_handle()
}

/// What the platform says about a job event, in words (Flynn-like).
fn platform_line(kind: EventKind, info: &JobInfo) -> Option<String> {
    let checked = info.job.config.ports.iter().any(|p| p.check.is_some());
    match kind {
        EventKind::Start => {
            let restarts: u32 = info
                .job
                .metadata
                .get("slipway.restarts")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let cmd = info.job.config.args.join(" ");
            Some(if restarts > 0 {
                format!("Restarted (restart {restarts}): starting process with command `{cmd}`")
            } else {
                format!("Starting process with command `{cmd}`")
            })
        }
        EventKind::Up if checked => Some("Health checks passed".into()),
        EventKind::Down if checked => Some("Health checks failed".into()),
        EventKind::Stop => {
            let exit = info
                .exit
                .as_ref()
                .map_or("exit status unknown".to_string(), |e| e.to_string());
            Some(if info.stop_requested {
                format!("Stopped ({exit})")
            } else {
                format!("Process exited ({exit})")
            })
        }
        EventKind::Error => Some(format!(
            "Job failed: {}",
            info.error.as_deref().unwrap_or("unknown error")
        )),
        _ => None,
    }
}

/// Starts the reader of a job unless it runs already, the job is not logged, has not started
/// yet, or was read to the end before.
fn start_reader(
    readers: &mut tokio::task::JoinSet<()>,
    agg: &Aggregator,
    host: &Arc<dyn HostApi>,
    host_id: &str,
    following: &Arc<Mutex<HashSet<String>>>,
    info: &JobInfo,
) {
    let id = info.job.id.clone();
    if !is_logged(&info.job)
        || info.status == slipway_host::JobStatus::Starting
        || agg.is_done(&id)
        || !following.lock().expect("following").insert(id.clone())
    {
        return;
    }
    let (agg, host, following) = (agg.clone(), host.clone(), following.clone());
    let src = source(&info.job, host_id);
    readers.spawn(async move {
        read_job(&agg, &*host, &src).await;
        following.lock().expect("following").remove(&src.job_id);
    });
}

/// Reads a job's log until the job has finished and every line is stored; gives up (to be
/// restarted by the next resync) when the host cannot be reached.
async fn read_job(agg: &Aggregator, host: &dyn HostApi, src: &Source) {
    let mut failures = 0;
    loop {
        let finished = match host.get_job(&src.job_id).await {
            Ok(j) => j.status.is_terminal(),
            Err(HostError::NotFound(_)) => return,
            Err(e) => {
                failures += 1;
                if failures > 10 {
                    tracing::warn!(job = %src.job_id, "logs: giving up on the job's log for now: {e}");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Following a finished job reads what is there and ends.
        match host.logs(&src.job_id, true).await {
            Ok(mut lines) => {
                let mut skip = agg.skipper(&src.job_id);
                while let Some(l) = lines.next().await {
                    let ts = Timestamp::from_datetime(l.ts);
                    if let Err(e) = agg.ingest(src, &mut skip, ts, &l.stream, &l.msg) {
                        tracing::warn!(job = %src.job_id, "logs: cannot store a line: {e}");
                    }
                }
            }
            Err(HostError::NotFound(_)) => return,
            Err(e) => {
                failures += 1;
                if failures > 10 {
                    tracing::warn!(job = %src.job_id, "logs: giving up on the job's log for now: {e}");
                    return;
                }
            }
        }
        if finished {
            agg.mark_done(&src.job_id);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
