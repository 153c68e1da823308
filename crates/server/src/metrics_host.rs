//! The host agent's metrics, read when scraped: its jobs by status, how long jobs took to
//! start, and per running job the memory, CPU time and OOM kills of its cgroup (cgroup v1, as
//! the runc runtime sets them up: `/sys/fs/cgroup/<controller>/<cgroup parent>/<job id>`),
//! labelled with the app, process type and job id. A job's series go when the job does.
//!
//! The job id's label is `job_id`, not `job`: Prometheus sets `job` (and `instance`) on every
//! series it scrapes, and renames a target's own `job` to `exported_job`.

use slipway_host::{HostApi, JobStatus};
use slipway_metrics::{Histograms, SLOW_BUCKETS, family};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

static START_LATENCY: Histograms = Histograms::new(
    "slipway_host_job_start_duration_seconds",
    "Time from a job's creation on the host to its process running.",
    &[],
    SLOW_BUCKETS,
);

/// One job's cgroup numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub oom_kills: Option<u64>,
}

/// Reads job `id`'s cgroup files under `root` (`/sys/fs/cgroup`).
pub fn usage(root: &Path, cgroup_parent: &str, id: &str) -> Usage {
    let read = |controller: &str, file: &str| -> Option<String> {
        std::fs::read_to_string(
            root.join(controller)
                .join(cgroup_parent)
                .join(id)
                .join(file),
        )
        .ok()
    };
    let cpu_ns = read("cpuacct", "cpuacct.usage")
        .or_else(|| read("cpu,cpuacct", "cpuacct.usage"))
        .and_then(|s| s.trim().parse::<u64>().ok());
    let oom = read("memory", "memory.oom_control").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    });
    Usage {
        memory_bytes: read("memory", "memory.usage_in_bytes").and_then(|s| s.trim().parse().ok()),
        cpu_seconds: cpu_ns.map(|ns| ns as f64 / 1e9),
        oom_kills: oom,
    }
}

/// A collector over `host`'s job list and its jobs' cgroups.
pub fn collector(host: Arc<dyn HostApi>, cgroup_parent: String) -> slipway_metrics::Collector {
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    Arc::new(move || {
        let (host, parent, seen) = (host.clone(), cgroup_parent.clone(), seen.clone());
        Box::pin(async move {
            let mut out = String::new();
            let Ok(jobs) = host.list_jobs().await else {
                return out;
            };
            let mut by_status: BTreeMap<&str, f64> = BTreeMap::new();
            for s in [
                "starting", "running", "stopping", "done", "crashed", "failed",
            ] {
                by_status.insert(s, 0.0);
            }
            let mut running = Vec::new();
            {
                let mut seen = seen.lock().unwrap();
                for j in &jobs {
                    *by_status.entry(status_name(j.status)).or_default() += 1.0;
                    if let (Some(c), Some(s)) = (j.created_at, j.started_at)
                        && seen.insert(j.job.id.clone())
                    {
                        let took = (s - c).max(time::Duration::ZERO);
                        START_LATENCY.observe(&[], took.unsigned_abs());
                    }
                    if j.status == JobStatus::Running {
                        running.push(j);
                    }
                }
                seen.retain(|id| jobs.iter().any(|j| &j.job.id == id));
            }
            family(
                &mut out,
                "slipway_host_jobs",
                "gauge",
                "Jobs on this host by status.",
                by_status.iter().map(|(s, n)| (vec![("status", *s)], *n)),
            );
            START_LATENCY.render(&mut out);
            let root = PathBuf::from("/sys/fs/cgroup");
            let usages: Vec<_> = running
                .iter()
                .map(|j| (*j, usage(&root, &parent, &j.job.id)))
                .collect();
            let labels = |j: &slipway_host::JobInfo| {
                vec![
                    ("app", j.job.app_name.clone()),
                    ("type", j.job.process_type.clone()),
                    ("job_id", j.job.id.clone()),
                ]
            };
            let owned: Vec<(Vec<(&str, String)>, Usage)> =
                usages.iter().map(|(j, u)| (labels(j), *u)).collect();
            let series = |f: fn(&Usage) -> Option<f64>| {
                owned
                    .iter()
                    .filter_map(|(l, u)| {
                        f(u).map(|v| (l.iter().map(|(k, v)| (*k, v.as_str())).collect(), v))
                    })
                    .collect::<Vec<_>>()
            };
            family(
                &mut out,
                "slipway_job_memory_bytes",
                "gauge",
                "Memory a running job's cgroup uses (memory.usage_in_bytes).",
                series(|u| u.memory_bytes.map(|b| b as f64)),
            );
            family(
                &mut out,
                "slipway_job_cpu_seconds_total",
                "counter",
                "CPU time a running job's cgroup has used.",
                series(|u| u.cpu_seconds),
            );
            family(
                &mut out,
                "slipway_job_oom_kills_total",
                "counter",
                "Processes of a running job the kernel killed for memory.",
                series(|u| u.oom_kills.map(|n| n as f64)),
            );
            out
        })
    })
}

fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Starting => "starting",
        JobStatus::Running => "running",
        JobStatus::Stopping => "stopping",
        JobStatus::Done => "done",
        JobStatus::Crashed => "crashed",
        JobStatus::Failed => "failed",
    }
}
