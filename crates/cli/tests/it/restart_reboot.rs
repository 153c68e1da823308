//! Issue 17: nothing leaks across crashes, and a reboot restores everything. A `slipway server`
//! with its host agent on real runc is (a) `kill -9`'d during a scale-up 0→6 and during a
//! scale-down 6→2, with leftovers planted that are named like the agent's own (a netns, a veth,
//! a cgroup with a process in it, a runc state dir, a container dir with a mount, a job-files
//! temp file), and started again; (b) put through a simulated reboot (every Slipway process and
//! container killed, mounts, netns, bridge, nft tables and cgroups removed, a new boot id) and
//! started again as boot would. Each time the host's netns, links, mounts, cgroups, runc state
//! and container dirs of this agent are compared with what the live jobs use: equal, nothing
//! more. `n` range 3800-3849; fixed ports 46000-46249.

use crate::support::*;
use slipway_host::runc::network::{NetworkConfig, netns_name, veth_name, veth_prefix};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A web process that serves its job id (`SLIPWAY_JOB_ID`) and stops on
/// SIGTERM. `n` tags it.
fn web(n: u32) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /tmp/www && echo $SLIPWAY_JOB_ID > /tmp/www/index.html; trap 'exit 0' TERM; \
             httpd -f -p 8080 -h /tmp/www & wait # reboot-{n}"
        ),
    ]
}

fn net(n: u32) -> NetworkConfig {
    NetworkConfig {
        bridge: format!("slws{n}"),
        ..Default::default()
    }
}

fn cgroup_parent(n: u32) -> String {
    format!("slipway-srvtest-{n}")
}

fn host_dir(s: &TestServer) -> PathBuf {
    s.dir.path().join("data/host")
}

/// Creates `app` running [`web`].
fn app(s: &TestServer, name: &str, n: u32) {
    s.create_app(name);
    block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: web(n),
                ..Default::default()
            },
        );
        let r = c.create_release(name, &r).await.unwrap();
        c.set_app_release(name, r.id).await.unwrap();
    });
}

/// Ids of the app's jobs that are up, and how many jobs `ps` lists at all.
fn jobs_up(s: &TestServer, app: &str) -> (BTreeSet<String>, usize) {
    let out = s.cmd().args(["-a", app, "ps", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let all = v.as_array().cloned().unwrap_or_default();
    let up = all
        .iter()
        .filter(|j| j["state"] == "up")
        .filter_map(|j| j["id"].as_str().map(String::from))
        .collect();
    (up, all.len())
}

/// What of this agent's is on the host.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    netns: BTreeSet<String>,
    /// Links named like the agent's veths or enslaved to its bridge.
    veths: BTreeSet<String>,
    /// Mount points below the host agent's data dir.
    mounts: BTreeSet<String>,
    /// `controller/job` below the agent's cgroup parent.
    cgroups: BTreeSet<String>,
    runc: BTreeSet<String>,
    containers: BTreeSet<String>,
    job_file_tmp: BTreeSet<String>,
}

impl Snapshot {
    fn take(s: &TestServer, n: u32) -> Snapshot {
        let net = net(n);
        let ns_prefix = format!("slw-slws{n}-");
        let netns = dir_entries(Path::new("/run/netns"))
            .into_iter()
            .filter(|e| e.starts_with(&ns_prefix))
            .collect();
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let vp = veth_prefix(&net);
        let veths = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
                let ours = (name.starts_with(&vp) && name.len() == 15)
                    || l.contains(&format!(" master slws{n} "));
                ours.then_some(name)
            })
            .collect();
        let host = host_dir(s);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&host))
            .map(String::from)
            .collect();
        let mut cgroups = BTreeSet::new();
        for ctrl in dir_entries(Path::new("/sys/fs/cgroup")) {
            let p = Path::new("/sys/fs/cgroup").join(&ctrl);
            if p.is_symlink() {
                continue;
            }
            for job in dir_entries(&p.join(cgroup_parent(n))) {
                if p.join(cgroup_parent(n)).join(&job).is_dir() {
                    cgroups.insert(format!("{ctrl}/{job}"));
                }
            }
        }
        Snapshot {
            netns,
            veths,
            mounts,
            cgroups,
            runc: dir_entries(&host.join("runc")),
            containers: dir_entries(&host.join("containers")),
            job_file_tmp: dir_entries(&host.join("job-files/tmp")),
        }
    }

    fn counts(&self) -> String {
        format!(
            "netns {}, veths {}, mounts {}, cgroups {}, runc states {}, container dirs {}, \
             job-file tmp {}",
            self.netns.len(),
            self.veths.len(),
            self.mounts.len(),
            self.cgroups.len(),
            self.runc.len(),
            self.containers.len(),
            self.job_file_tmp.len()
        )
    }

    /// Asserts that everything of the agent's belongs to one of the `live` jobs, and that each
    /// live job has its netns, veth, runc state and container dir.
    fn assert_only(&self, s: &TestServer, n: u32, live: &BTreeSet<String>) {
        let net = net(n);
        let expect =
            |f: &dyn Fn(&String) -> String| -> BTreeSet<String> { live.iter().map(f).collect() };
        assert_eq!(self.netns, expect(&|id| netns_name(&net, id)), "netns");
        assert_eq!(self.veths, expect(&|id| veth_name(&net, id)), "veths");
        assert_eq!(&self.runc, live, "runc state dirs");
        assert_eq!(&self.containers, live, "container dirs");
        assert!(self.job_file_tmp.is_empty(), "{:?}", self.job_file_tmp);
        let containers = host_dir(s).join("containers");
        for m in &self.mounts {
            let id = Path::new(m)
                .strip_prefix(&containers)
                .ok()
                .and_then(|r| r.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            assert!(
                id.as_ref().is_some_and(|id| live.contains(id)),
                "a mount no live job uses: {m}"
            );
        }
        // Two mounts per job: its disk image and its overlay rootfs.
        assert_eq!(self.mounts.len(), 2 * live.len(), "{:?}", self.mounts);
        for cg in &self.cgroups {
            let job = cg.split('/').nth(1).unwrap();
            assert!(live.contains(job), "a cgroup no live job uses: {cg}");
        }
        assert!(
            live.iter()
                .all(|id| self.cgroups.contains(&format!("memory/{id}"))),
            "every live job has its memory cgroup: {:?}",
            self.cgroups
        );
    }
}

/// Leftovers named like the agent's own, planted while it is down: all must be gone after it
/// starts. The process in the planted cgroup must be killed.
struct Planted {
    sleeper: std::process::Child,
}

const PLANT: &str = "planted-job";

fn plant(s: &TestServer, n: u32) -> Planted {
    let net = net(n);
    let sh = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&["ip", "netns", "add", &netns_name(&net, PLANT)]);
    let veth = veth_name(&net, PLANT);
    let peer = format!("slwpeer{n}");
    sh(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
    ]);
    sh(&["ip", "link", "set", &veth, "master", &format!("slws{n}")]);
    let cg = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup_parent(n))
        .join(PLANT);
    std::fs::create_dir_all(&cg).unwrap();
    let sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::write(cg.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let host = host_dir(s);
    let runc = host.join("runc").join(PLANT);
    std::fs::create_dir_all(&runc).unwrap();
    std::fs::write(runc.join("state.json"), "{\"id\":\"planted-job\"}").unwrap();
    let rootfs = host.join("containers").join(PLANT).join("bundle/rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "planted",
        rootfs.to_str().unwrap(),
    ]);
    std::fs::write(rootfs.join("x"), "x").unwrap();
    // A symlink out of the container dir must be removed, never followed.
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, host.join("containers").join(PLANT).join("link")).unwrap();
    std::fs::create_dir_all(host.join("job-files/tmp")).unwrap();
    std::fs::write(host.join("job-files/tmp/planted-0"), "x").unwrap();
    Planted { sleeper }
}

impl Planted {
    fn assert_gone(&mut self, s: &TestServer) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.sleeper.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the process in the planted cgroup was not killed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            s.dir.path().join("outside/keep").exists(),
            "the sweep followed a symlink out of the container dir"
        );
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

/// Waits (up to `secs`) until `app` has exactly `want` jobs, all up, and the agent's container
/// dirs are theirs (stopped jobs cleaned up); returns their ids.
fn settle(s: &TestServer, app: &str, want: usize, secs: u64) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (up, all) = jobs_up(s, app);
        if up.len() == want && all == want && dir_entries(&host_dir(s).join("containers")) == up {
            return up;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: {} of {want} jobs up ({all} listed), containers {:?}\n{}",
            up.len(),
            dir_entries(&host_dir(s).join("containers")),
            s.ok(&["-a", app, "ps", "-a"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` of the server once `ready` says the moment has come (polled every 5 ms, at most
/// 20 s), then leftovers planted, then the server started again on its data dir.
fn crash_and_restart(s: &mut HostServer, n: u32, what: &str, ready: impl Fn(&TestServer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(&s.s) {
        assert!(Instant::now() < deadline, "{what}: the moment never came");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.s.kill();
    let mut planted = plant(&s.s, n);
    let before = Snapshot::take(&s.s, n);
    eprintln!("{what}: killed; before the restart: {}", before.counts());
    s.s.restart();
    planted.assert_gone(&s.s);
    std::mem::drop(planted);
}

#[test]
fn kill_9_during_scale_up_and_scale_down_leaves_nothing_behind() {
    if skip_unless_root("kill_9_during_scale_up_and_scale_down_leaves_nothing_behind") {
        return;
    }
    let n = 3800 + std::process::id() % 20;
    let mut s = HostServer::start(n, &loopback_router(&[]));
    app(&s.s, "crash", n);
    let containers = host_dir(&s.s).join("containers");

    s.s.ok(&["-a", "crash", "scale", "--no-wait", "web=6"]);
    // Mid-start: some containers exist, the others are being prepared.
    crash_and_restart(&mut s, n, "scale-up 0→6", |_| {
        dir_entries(&containers).len() >= 2
    });
    let live = settle(&s.s, "crash", 6, 90);
    let after = Snapshot::take(&s.s, n);
    eprintln!("scale-up 0→6: after the restart: {}", after.counts());
    after.assert_only(&s.s, n, &live);

    s.s.ok(&["-a", "crash", "scale", "--no-wait", "web=2"]);
    // Mid-stop: the first job's cleanup has begun.
    crash_and_restart(&mut s, n, "scale-down 6→2", |t| {
        dir_entries(&containers).len() < 6 || Snapshot::take(t, n).netns.len() < 6
    });
    let live = settle(&s.s, "crash", 2, 90);
    let after = Snapshot::take(&s.s, n);
    eprintln!("scale-down 6→2: after the restart: {}", after.counts());
    after.assert_only(&s.s, n, &live);
}

/// One HTTP/1.1 GET on a new connection to `addr` for `host`; the whole response ("" if the
/// connection fails).
fn get(addr: &str, host: &str) -> String {
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// The body of a 200 response, trimmed.
fn body_200(resp: &str) -> Option<String> {
    resp.starts_with("HTTP/1.1 200").then(|| {
        resp.split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

/// Kills every process whose command line names `dir` (the server's shims: `slipway host shim
/// <data>/host/containers/<id>`), by pid.
fn kill_processes_naming(dir: &Path) -> usize {
    let needle = dir.display().to_string();
    let mut killed = 0;
    for pid in dir_entries(Path::new("/proc")) {
        let Ok(p) = pid.parse::<i32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: plain syscall.
            if unsafe { libc::kill(p, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// What a reboot takes away: every Slipway process (the server, the shims) and container,
/// mounts, netns, the bridge, the nft tables and the cgroups; the boot id changes.
fn simulate_reboot(s: &mut HostServer, n: u32) {
    s.s.kill();
    let host = host_dir(&s.s);
    let root = host.join("runc");
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let listed = runc(&["list", "-q"]);
    for id in String::from_utf8_lossy(&listed.stdout).lines() {
        runc(&["kill", id, "KILL"]);
    }
    kill_processes_naming(&host.join("containers"));
    // The containers' processes die with SIGKILL; runc's state dirs stay, as on a disk that
    // outlives the boot, but the kernel's state is gone.
    for ctrl in dir_entries(Path::new("/sys/fs/cgroup")) {
        let parent = Path::new("/sys/fs/cgroup")
            .join(&ctrl)
            .join(cgroup_parent(n));
        if parent.is_symlink() {
            continue;
        }
        for job in dir_entries(&parent) {
            let cg = parent.join(&job);
            let deadline = Instant::now() + Duration::from_secs(5);
            while cg.is_dir() && std::fs::remove_dir(&cg).is_err() {
                assert!(Instant::now() < deadline, "cannot remove {}", cg.display());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
    unmount_under(&host);
    for ns in dir_entries(Path::new("/run/netns")) {
        if ns.starts_with(&format!("slw-slws{n}-")) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", &format!("slws{n}")])
        .output();
    for family in ["ip", "bridge"] {
        let _ = Command::new("nft")
            .args(["delete", "table", family, &format!("slws{n}")])
            .output();
    }
    // A new boot: a new boot id (the recorded one is the old boot's).
    std::fs::write(
        host.join("boot-id"),
        "00000000-0000-4000-8000-000000000000\n",
    )
    .unwrap();
}

#[test]
fn after_a_reboot_10_jobs_and_a_tcp_route_are_served_again_and_nothing_is_left() {
    let test = "after_a_reboot_10_jobs_and_a_tcp_route_are_served_again_and_nothing_is_left";
    if skip_unless_root(test) {
        return;
    }
    let k = std::process::id() % 20;
    let n = 3820 + k;
    let (http_port, https_port, tcp_port) = (46000 + k, 46050 + k, 46100 + k);
    let flags: Vec<String> = [
        "--router-ip",
        "127.0.0.1",
        "--http-port",
        &http_port.to_string(),
        "--https-port",
        &https_port.to_string(),
        "--tcp-ports",
        "46100-46149",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = HostServer::start(n, &flags);
    app(&s.s, "boot", n);
    s.s.ok(&[
        "route",
        "-a",
        "boot",
        "add",
        "tcp",
        "-p",
        &tcp_port.to_string(),
    ]);
    s.s.ok(&["-a", "boot", "scale", "web=10"]);
    let router = format!("127.0.0.1:{http_port}");
    let tcp = format!("127.0.0.1:{tcp_port}");
    let host = format!("boot.{DOMAIN}");
    // Served: each of the 10 jobs through the router (each page is its job id), and the TCP
    // route proxies to one of them.
    let served = |live: &BTreeSet<String>| -> bool {
        let want = live.clone();
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            match body_200(&get(&router, &host)) {
                Some(b) => {
                    seen.insert(b);
                }
                None => return false,
            }
            if seen == want {
                break;
            }
        }
        seen == want && body_200(&get(&tcp, &host)).is_some_and(|b| want.contains(&b))
    };
    let wait_served = |s: &TestServer, t0: Instant| -> (BTreeSet<String>, Duration) {
        loop {
            let (up, all) = jobs_up(s, "boot");
            if up.len() == 10 && served(&up) {
                let _ = all;
                return (up, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not all 10 jobs up and served within 30 s:\n{}",
                s.ok(&["-a", "boot", "ps", "-a"])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (first, _) = wait_served(&s.s, Instant::now());
    let runs: u32 = std::env::var("SLIPWAY_REBOOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut times = Vec::new();
    let mut old = first;
    for run in 1..=runs {
        simulate_reboot(&mut s, n);
        let before = Snapshot::take(&s.s, n);
        eprintln!("reboot {run}: before the start: {}", before.counts());
        assert!(before.netns.is_empty() && before.mounts.is_empty() && before.cgroups.is_empty());
        let t0 = Instant::now();
        s.s.restart();
        let (live, took) = wait_served(&s.s, t0);
        eprintln!("reboot {run}: 10 jobs and the TCP route served {took:?} after the start");
        times.push(took);
        assert!(
            live.is_disjoint(&old),
            "jobs of the old boot counted as running: {:?}",
            live.intersection(&old).collect::<Vec<_>>()
        );
        let log = std::fs::read_to_string(s.s.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            log.contains("the machine rebooted"),
            "the reboot was not detected"
        );
        // The old boot's jobs are cleaned up: only the live ones' things remain.
        settle(&s.s, "boot", 10, 30);
        let after = Snapshot::take(&s.s, n);
        eprintln!("reboot {run}: after: {}", after.counts());
        after.assert_only(&s.s, n, &live);
        old = live;
    }
    eprintln!("start to all served after a reboot, {runs} runs: {times:?}");
}

/// A second `slipway server` on the data dir of a running one (run by hand beside the
/// supervised one, or an orphan that did not die) used to start its own host agent there: its
/// host setup emptied the running agent's bridge filter and its start-up sweep took the jobs
/// that agent was starting for leftovers (and both agents then adopted the same jobs). The
/// agent's data dir is now locked: the second server stops before it touches anything.
#[test]
fn a_second_host_agent_on_the_same_data_dir_is_refused() {
    if skip_unless_root("a_second_host_agent_on_the_same_data_dir_is_refused") {
        return;
    }
    let n = 3940 + std::process::id() % 10;
    let s = HostServer::start(n, &["--no-router".into()]);
    let log = s.s.dir.path().join("second.log");
    let mut second = Command::new(BIN)
        .args(["server", "--no-router", "--no-register"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--discovery-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(s.s.dir.path().join("data"))
        .args([
            "--bridge",
            &format!("slws{n}"),
            "--nft-table",
            &format!("slws{n}"),
        ])
        .args([
            "--subnet",
            &format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
        ])
        .args(["--cgroup-parent", &format!("slipway-srvtest-{n}")])
        .env("HOME", s.s.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            second.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|st| !st.success()) && said.contains("another host agent runs"),
        "the second server ({status:?}):\n{said}"
    );
    assert!(!said.contains("start-up sweep"), "{said}");
}
