//! Job start benchmark (run it with `bench/job-start.sh`; needs root).
//!
//! Measures "create → port answers" for a busybox `httpd` job, median of N (default 20):
//! 1. through the agent (`Agent::add_job`: overlay rootfs, IP, OCI spec, shim, runc create,
//!    veth into the job's netns, runc start), then polling HTTP on the job's own IP;
//! 2. raw `runc run -d` of the same bundle (same spec, same overlay rootfs, a netns with the same
//!    veth, but mounted and set up beforehand, outside the timing), then polling HTTP the same way.
//!
//! Then it starts M jobs (default 50) and reports the agent-side memory per job: the shims' PSS
//! and the agent process's RSS growth.

use slipway_host::runc::network::{self, NetworkConfig};
use slipway_host::runc::{RuncConfig, RuncRuntime, spec};
use slipway_host::{Agent, AgentConfig, HostApi, HostJob, JobConfig, PortSpec};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 8080;

async fn wait_http(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut b = [0u8; 12];
            s.read_exact(&mut b).await.ok()?;
            Some(b.starts_with(b"HTTP/1.0 ") || b.starts_with(b"HTTP/1.1 "))
        }
        .await
        .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never answered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn job(i: usize) -> HostJob {
    let mut config = JobConfig::new("busybox", &["httpd", "-f", "-p", "8080", "-h", "/"]);
    config.ports.push(PortSpec {
        port: PORT,
        proto: "tcp".into(),
        check: None,
    });
    config.stop_grace_ms = Some(0);
    HostJob {
        id: format!("bench-{i}-{}", std::process::id()),
        app_id: "bench".into(),
        app_name: "bench".into(),
        release_id: "r".into(),
        process_type: "web".into(),
        metadata: Default::default(),
        config,
        resources: Default::default(),
    }
}

fn main() -> anyhow::Result<()> {
    slipway_host::shim::run_if_shim_invocation();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let m: usize = std::env::var("M")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::Builder::new().prefix("slipway-bench").tempdir()?;
    let stacks = std::env::temp_dir().join("slipway-test-stacks");
    let stack = slipway_host::stack::build(&stacks, "busybox", false)?;
    let net = NetworkConfig {
        bridge: "slwbench0".into(),
        subnet: Ipv4Addr::new(100, 99, 0, 0),
        prefix: 24,
        nft_table: "slwbench".into(),
    };
    let mut rc = RuncConfig::new(dir.path());
    rc.network = net.clone();
    rc.cgroup_parent = "slipway-bench".into();
    rc.stacks_dir = stacks.clone();
    let rt = Arc::new(RuncRuntime::new(rc)?);
    let agent = Agent::start(AgentConfig::new(dir.path()), rt.clone()).await?;

    // Agent and raw runc runs alternate, so that load from elsewhere hits both alike.
    let mut agent_ms = Vec::new();
    let raw_root = dir.path().join("raw-runc");
    let mut raw_ms = Vec::new();
    for i in 0..n {
        // 1. Through the agent.
        {
            let t0 = Instant::now();
            let info = agent.add_job(job(i)).await?;
            let ip = info.ip.expect("ip");
            wait_http((ip, PORT).into()).await;
            agent_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            agent.signal_job(&info.job.id, 9).await?;
            agent.wait_job(&info.job.id).await?;
        }
        // 2. Raw runc run of the same bundle.
        {
            let id = format!("raw-{i}-{}", std::process::id());
            let ns = format!("slwbench{i}");
            let ip = Ipv4Addr::new(100, 99, 0, 200 + (i % 50) as u8);
            let b = dir.path().join("raw").join(&id);
            let (rootfs, upper, work) = (b.join("rootfs"), b.join("upper"), b.join("work"));
            for d in [&rootfs, &upper, &work] {
                std::fs::create_dir_all(d)?;
            }
            sh(&format!(
                "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
                stack.display(),
                upper.display(),
                work.display(),
                rootfs.display()
            ));
            let hosts = b.join("hosts");
            std::fs::write(&hosts, "127.0.0.1 localhost\n")?;
            let j = job(1000 + i);
            let ns_path = std::path::PathBuf::from(format!("/run/netns/{ns}"));
            let (s, _) = spec::build(
                &j,
                &spec::SpecInputs {
                    rootfs: &rootfs,
                    cgroups_path: format!("/slipway-bench/{id}"),
                    hosts_file: &hosts,
                    resolv_conf: Path::new("/etc/resolv.conf"),
                    nofile_ceiling: 20_000,
                    ca_bundle: None,
                    netns: Some(&ns_path),
                    init: None,
                    pids_ceiling: None,
                },
            )?;
            // Same spec, but the netns is prepared beforehand (raw runc does no networking).
            sh(&format!("ip netns del {ns} 2>/dev/null; ip netns add {ns}"));
            let veth = format!("vswraw{i}");
            sh(&format!(
                "ip link add name {veth} master {} up type veth peer name eth0 address {} netns {ns} && \
                 ip -n {ns} addr add {ip}/24 dev eth0 && ip -n {ns} link set eth0 up && \
                 ip -n {ns} link set lo up && ip -n {ns} route add default via {}",
                net.bridge,
                network::mac_for(ip),
                net.gateway()
            ));
            s.save(b.join("config.json"))?;
            let t0 = Instant::now();
            let st = tokio::process::Command::new("runc")
                .arg("--root")
                .arg(&raw_root)
                .args(["run", "-d", "--bundle"])
                .arg(&b)
                .arg(&id)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await?;
            assert!(st.success(), "runc run -d failed");
            wait_http((ip, PORT).into()).await;
            raw_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&raw_root)
                .args(["delete", "--force", &id])
                .status();
            sh(&format!(
                "umount {}; ip netns del {ns}; ip link del {veth} 2>/dev/null; true",
                rootfs.display()
            ));
        }
    }

    // 3. Memory per job.
    let agent_rss_before = kib("/proc/self/status", "VmRSS:");
    let mut ids = Vec::new();
    for i in 0..m {
        let mut j = job(5000 + i);
        j.config.args = vec!["sleep".into(), "1000".into()];
        ids.push(agent.add_job(j).await?.job.id);
    }
    let agent_rss_after = kib("/proc/self/status", "VmRSS:");
    let containers = dir.path().join("containers").display().to_string();
    let mut shim_pss = 0;
    let mut shim_rss = 0;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&containers) {
            shim_pss += kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
            shim_rss += kib(&format!("/proc/{pid}/status"), "VmRSS:");
        }
    }
    for id in &ids {
        agent.signal_job(id, 9).await?;
    }
    for id in &ids {
        agent.wait_job(id).await?;
    }
    use slipway_host::runtime::Runtime;
    rt.teardown().await?;

    let (a, r) = (median(&mut agent_ms), median(&mut raw_ms));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("| measurement ({n} runs, {profile} build) | median | min | max |");
    println!("|---|---|---|---|");
    for (name, v, med) in [
        ("slipway agent: add_job → HTTP answers", &agent_ms, a),
        ("raw `runc run -d`, same bundle → HTTP answers", &raw_ms, r),
    ] {
        let min = v.iter().cloned().fold(f64::MAX, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!("| {name} | {med:.1} ms | {min:.1} ms | {max:.1} ms |");
    }
    println!("\nratio agent / raw runc: {:.2}x (goal ≤ 1.5x)", a / r);
    println!(
        "memory with {m} idle jobs: shims {:.0} KiB PSS per job ({:.0} KiB RSS); agent RSS +{:.0} KiB per job",
        shim_pss as f64 / m as f64,
        shim_rss as f64 / m as f64,
        (agent_rss_after.saturating_sub(agent_rss_before)) as f64 / m as f64
    );
    Ok(())
}
