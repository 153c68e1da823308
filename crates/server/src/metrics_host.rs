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

/// The most of a cgroup file read: the kernel's are a few lines; anything longer is not one.
const MAX_CGROUP_FILE: u64 = 4096;

/// Reads job `id`'s cgroup files under `root` (`/sys/fs/cgroup`). The job cannot write there
/// (runc mounts the cgroup tree read-only in the container, and cgroupfs holds no symlinks or
/// plain files), and the agent has checked the id is one path component; still, a file is read
/// up to [`MAX_CGROUP_FILE`] bytes and anything that does not parse is no number, not a panic.
pub fn usage(root: &Path, cgroup_parent: &str, id: &str) -> Usage {
    let read = |controller: &str, file: &str| -> Option<String> {
        use std::io::Read;
        let path = root
            .join(controller)
            .join(cgroup_parent)
            .join(id)
            .join(file);
        let mut text = String::new();
        std::fs::File::open(path)
            .ok()?
            .take(MAX_CGROUP_FILE)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_are_read_bounded_and_junk_is_no_number() {
        let root = tempfile::tempdir().unwrap();
        let dir = |c: &str| {
            let d = root.path().join(c).join("slipway").join("j1");
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        std::fs::write(dir("memory").join("memory.usage_in_bytes"), "1048576\n").unwrap();
        std::fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(dir("cpuacct").join("cpuacct.usage"), "1500000000\n").unwrap();
        let u = usage(root.path(), "slipway", "j1");
        assert_eq!(
            u,
            Usage {
                memory_bytes: Some(1 << 20),
                cpu_seconds: Some(1.5),
                oom_kills: Some(2),
            }
        );
        // Junk, a number past u64, a file far larger than a cgroup's, one without end: no
        // numbers, no panic.
        std::fs::write(dir("memory").join("memory.usage_in_bytes"), "-1\"\n").unwrap();
        std::fs::write(
            dir("cpuacct").join("cpuacct.usage"),
            "99999999999999999999999",
        )
        .unwrap();
        assert_eq!(usage(root.path(), "slipway", "j1").cpu_seconds, None);
        // A file without end, where the combined controller's is read (an unbounded read
        // would never finish).
        std::fs::remove_dir_all(root.path().join("cpuacct")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir("cpu,cpuacct").join("cpuacct.usage")).unwrap();
        std::fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill 1".repeat(1 << 20),
        )
        .unwrap();
        assert_eq!(usage(root.path(), "slipway", "j1"), Usage::default());
        // A job without a cgroup (gone between the listing and the read): nothing.
        assert_eq!(usage(root.path(), "slipway", "j2"), Usage::default());
    }
}
