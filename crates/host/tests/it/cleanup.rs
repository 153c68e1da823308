//! Start and stop 200 jobs: afterwards no mount, veth, netns, cgroup or bundle dir remains.
//! Also measures the agent-side memory per job (the shims' PSS).

use crate::harness::*;
use futures_util::StreamExt;
use slipway_host::runc::network::veth_name;
use slipway_host::{HostApi, JobStatus};
use std::time::{Duration, Instant};

/// Proportional set size of a process in KiB (its fair share of shared pages).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn shim_pids(data_dir: &std::path::Path) -> Vec<u32> {
    let dir = data_dir.join("containers").display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&dir))
                .unwrap_or(false)
        })
        .collect()
}

/// Network namespaces of processes that live in this agent's job cgroups.
fn netns_in_use(names: &Names) -> usize {
    names
        .job_cgroups()
        .iter()
        .filter_map(|cg| std::fs::read_to_string(cg.join("cgroup.procs")).ok())
        .map(|p| p.lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_and_stop_200_jobs_leaves_nothing_behind() {
    if skip_unless_root("start_and_stop_200_jobs_leaves_nothing_behind") {
        return;
    }
    const N: usize = 200;
    let h = TestHost::start().await;
    let t0 = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..N)
        .map(|i| {
            let agent = h.agent.clone();
            async move {
                let mut j = job(&format!("many{i}"), &["sleep", "1000"]);
                j.config.stop_grace_ms = Some(100);
                j.resources.memory_bytes = Some(64 << 20);
                let info = agent.add_job(j).await.unwrap();
                assert_eq!(info.status, JobStatus::Running, "{info:?}");
                info.job.id
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let started = t0.elapsed();
    let shims = shim_pids(h.data_dir());
    assert_eq!(shims.len(), N, "one shim per job");
    let pss: u64 = shims.iter().map(|p| pss_kib(*p)).sum();
    eprintln!(
        "started {N} jobs in {started:.1?}; shims: {} KiB PSS in total, {:.0} KiB per job",
        pss,
        pss as f64 / N as f64
    );
    assert!(netns_in_use(&h.names) >= N);
    assert_eq!(h.agent.status().await.unwrap().job_count, N);

    let t1 = Instant::now();
    futures_util::stream::iter(ids.clone())
        .map(|id| {
            let agent = h.agent.clone();
            async move {
                agent.stop_job(&id).await.unwrap();
                let done = agent.wait_job(&id).await.unwrap();
                assert_eq!(done.status, JobStatus::Done, "{done:?}");
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    let stopped = t1.elapsed();
    eprintln!("stopped and cleaned up {N} jobs in {stopped:.1?}");

    assert_eq!(
        mounts_under(h.data_dir()),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        h.names.job_cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left"
    );
    let containers: Vec<_> = std::fs::read_dir(h.data_dir().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(containers.is_empty(), "bundle dirs left: {containers:?}");
    // Veths and netns go with the container's last process; the kernel may take a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let veths: Vec<String> = ids
            .iter()
            .map(|id| veth_name(&h.names.net, id))
            .filter(|v| std::path::Path::new("/sys/class/net").join(v).exists())
            .collect();
        if veths.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {veths:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let netns: Vec<String> = ids
        .iter()
        .map(|id| slipway_host::runc::network::netns_path(&h.names.net, id))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(netns.is_empty(), "netns left: {netns:?}");
    let bridge_ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", h.names.net.bridge))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(bridge_ports, 0, "ports left on the bridge");
    assert!(shim_pids(h.data_dir()).is_empty(), "shims left");
    let runc_list = std::process::Command::new("runc")
        .arg("--root")
        .arg(h.data_dir().join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(runc_list.stdout.is_empty(), "runc still knows containers");
    assert_eq!(h.agent.status().await.unwrap().job_count, 0);
}
