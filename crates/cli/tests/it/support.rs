//! A live `slipway server` per test, and helpers to drive the real `slipway` binary against it.
//!
//! Each server gets its own temp dir (data dir, config file, a working directory that is not a
//! git repo) and its own port, so tests run in parallel without sharing anything. The server
//! registers itself in the config file named by `SLIPWAY_CONFIG`, which is how the CLI under
//! test finds it, exactly as on a user's machine.

#![allow(dead_code)]

use assert_cmd::Command;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slipway");
/// The base domain the test servers are started with.
pub const DOMAIN: &str = "apps.test";

pub struct TestServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub config: PathBuf,
    /// A directory outside any git repo, where commands run by default.
    pub work: PathBuf,
    /// The flags it was started with (a restart uses them again).
    extra: Vec<String>,
}

impl TestServer {
    /// A server without a host agent (the controller, scheduler and deployer only).
    pub fn start() -> TestServer {
        Self::start_with(&["--no-host".to_string()])
    }

    /// A server with its local host agent on runc, with a bridge, subnet, nft table and cgroup
    /// parent of its own (`n` must be unique among the tests running at once).
    pub fn start_with(extra: &[String]) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// [`TestServer::start_with`] in `dir`, which may hold a data dir (`dir/data`) already.
    pub fn start_in(dir: tempfile::TempDir, extra: &[String]) -> TestServer {
        let config = dir.path().join("config.toml");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let (child, url) = spawn_server(dir.path(), &config, "127.0.0.1:0", extra);
        let server = TestServer {
            child,
            dir,
            url,
            config,
            work,
            extra: extra.to_vec(),
        };
        server.wait_for_ping();
        server
    }

    /// Stops the server (as `kill -9` would) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.url.trim_start_matches("http://").to_string();
        let (child, url) = spawn_server(self.dir.path(), &self.config, &listen, &self.extra);
        self.child = child;
        self.url = url;
        self.wait_for_ping();
    }

    fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "server at {} never answered /ping; its log:\n{}",
                self.url,
                server_log(self.dir.path())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /ping` over a plain socket (no HTTP client, no runtime needed here).
    fn ping(&self) -> bool {
        let addr = self.url.trim_start_matches("http://").trim_end_matches('/');
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200")
    }

    /// `slipway` with this server's config, run in the non-repo work dir.
    pub fn cmd(&self) -> Command {
        self.cmd_in(&self.work)
    }

    pub fn cmd_in(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .env("SLIPWAY_CONFIG", &self.config)
            .env("HOME", self.dir.path())
            .env_remove("SLIPWAY_URL")
            .env_remove("SLIPWAY_KEY")
            .timeout(Duration::from_secs(60))
            // Not a terminal: prompts must refuse rather than wait.
            .write_stdin("");
        cmd
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(self.cmd().args(args))
    }

    /// Runs a command whose stdout must be JSON; returns it parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    /// The API key the server registered in the config.
    pub fn key(&self) -> String {
        let text = std::fs::read_to_string(&self.config).expect("config written by the server");
        let config: toml::Table = toml::from_str(&text).unwrap();
        config["clusters"]
            .as_table()
            .unwrap()
            .values()
            .find(|c| c["url"].as_str() == Some(self.url.as_str()))
            .and_then(|c| c["key"].as_str())
            .expect("the server's entry in the config")
            .to_string()
    }

    /// The API key in the server's data dir (servers started with `--no-register` have no
    /// config entry).
    pub fn key_from_data_dir(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/api-key"))
            .expect("the api-key file")
            .trim()
            .to_string()
    }

    pub fn client(&self) -> slipway_client::Client {
        slipway_client::Client::new(&self.url, &self.key()).unwrap()
    }

    /// Creates an app with the CLI and returns its name.
    pub fn create_app(&self, name: &str) -> String {
        let out = self.ok(&["create", name]);
        assert_eq!(out, format!("Created {name}\n"));
        name.to_string()
    }
}

impl TestServer {
    /// The server process's id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server now, keeping its directory (to clean up what its jobs left).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Starts `slipway server` on `dir`'s data dir; returns it and its URL (its first stdout line).
fn spawn_server(dir: &Path, config: &Path, listen: &str, extra: &[String]) -> (Child, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--listen", listen, "--domain", DOMAIN])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env("SLIPWAY_CONFIG", config)
        .env("HOME", dir)
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn slipway server");

    // The first stdout line is `Listening on http://127.0.0.1:PORT`; keep draining the
    // rest so the server never blocks on a full pipe.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        for _ in lines {}
    });
    let first = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(line)) => line,
        other => {
            let _ = child.kill();
            panic!(
                "slipway server did not print its address ({other:?}); its log:\n{}",
                server_log(dir)
            );
        }
    };
    let url = first
        .strip_prefix("Listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {first:?}"))
        .trim()
        .to_string();
    (child, url)
}

pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run slipway");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run slipway");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should fail with exit code 1:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Runs a future on a fresh runtime (the tests themselves are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The release ID out of `Created release ID.`
pub fn created_release(stdout: &str) -> String {
    let id = stdout
        .trim()
        .strip_prefix("Created release ")
        .and_then(|s| s.strip_suffix('.'))
        .unwrap_or_else(|| panic!("not `Created release ID.`: {stdout:?}"));
    uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("not a UUID: {id:?}"));
    id.to_string()
}

/// `git` in `dir`, which must succeed; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// cgroup v1 hierarchies a job's cgroup may have been created in.
const CONTROLLERS: [&str; 10] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "devices", "freezer", "cpuset", "systemd",
    "unified",
];

/// Removes what a killed host agent may leave behind for its data dir `host_dir`: runc
/// containers (runc root `host_dir/runc`), rootfs mounts, netns and cgroups of its jobs, then its
/// cgroup parent, its bridge and its nft tables (`ip` and `bridge`; all named `net_name` in the tests).
pub fn remove_host_leftovers(host_dir: &Path, cgroup_parent: &str, net_name: &str) {
    use std::process::Command;
    let root = host_dir.join("runc");
    if let Ok(out) = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "-f", id])
                .output();
        }
    }
    let cgroups = |sub: &str| {
        CONTROLLERS.map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(cgroup_parent)
                .join(sub)
        })
    };
    if let Ok(rd) = std::fs::read_dir(host_dir.join("containers")) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            slipway_host::runc::network::remove_netns(&id);
            for dir in cgroups(&id) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    // Rootfs overlays and the jobs' disk images (loop devices go with their unmount).
    unmount_under(host_dir);
    let _ = Command::new("ip").args(["link", "del", net_name]).output();
    for family in ["ip", "bridge"] {
        let _ = Command::new("nft")
            .args(["delete", "table", family, net_name])
            .output();
    }
    for dir in cgroups("") {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Lazily unmounts every mount under `dir`, the deepest first.
pub fn unmount_under(dir: &Path) {
    let d = format!("{}/", dir.display());
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(m)
            .output();
    }
}

/// The `IP:PORT` that follows `marker` in the test server's log, waiting up to 30 s for the line
/// (servers log the addresses they bound, e.g. `router: HTTP on 127.0.0.1:PORT`).
pub fn logged_addr(server: &TestServer, marker: &str) -> String {
    logged_addr_nth(server, marker, 1)
}

/// [`logged_addr`] of the `nth` such line (1-based: a server started again on the same log).
pub fn logged_addr_nth(server: &TestServer, marker: &str, nth: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
        if let Some(rest) = log.split(marker).nth(nth) {
            return rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no {nth}th {marker:?} in the server log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Flags that give a test server its router on loopback, HTTP and HTTPS on free ports (the HTTP
/// address is logged as `router: HTTP on …`), followed by `more`.
pub fn loopback_router(more: &[&str]) -> Vec<String> {
    [
        "--router-ip",
        "127.0.0.1",
        "--http-port",
        "0",
        "--https-port",
        "0",
    ]
    .iter()
    .chain(more)
    .map(|s| s.to_string())
    .collect()
}

/// True when the test needs root and we are not: runc, mounts and network namespaces need it.
/// A counted skip, or a failure under CI / `SLIPWAY_REQUIRE_ALL=1` (`slipway_testkit::skip`).
pub fn skip_unless_root(test: &str) -> bool {
    slipway_testkit::skip_unless_root(test)
}

/// A `slipway server` with a local host agent (real runc). `n` makes the agent's bridge, nft
/// table, subnet and cgroup parent unique per test. On drop the server is killed first (alive,
/// its scheduler would replace what is removed), then whatever its jobs left is removed.
///
/// `n` ranges in use (each test adds `pid % 100` or so): scheduler 0-599, routing 600-799,
/// push 800-949, logs 1300-1799, images 2000-2199, run 2200-2399, zero downtime 2400-2499,
/// dns 2600-2699, housekeeping 2700-2799, app deletion 2900-2999,
/// push (submodules, first deploy, Python on bookworm) 2800-2899, hostile 3000-3069,
/// cluster scheduling 3100-3199, 3300-3399 and 3500-3599, roles 3200-3299, ops 3400-3499,
/// cluster routers 3600-3699, restarts (issue 17): router 3700-3749, supervisor 3750-3799,
/// reboot 3800-3849, supervisor review (issue 17) 3900-3949; issue 18: `cluster::drain`
/// 4250-4274, `cluster::join` 4275-4299, `cluster::drain_edges` 4300-4319 (`HostServer`/
/// `HostProcess` numbers); issue 24: `metrics` 4350-4399; issue 23: `backup` 4400-4499 (TCP ports 46450-46499);
/// issue 22: `dashboard` 4700-4749.
///
/// Tests on a netns LAN (`NetnsLan`, `cluster::lan`) take numbers from their own ranges, and
/// their LAN is `100.127.(n % 256).0/24`: two LANs alive at once need numbers that differ
/// **modulo 256**, so these ranges must not overlap modulo 256 (shown in brackets):
/// `cluster::overlay` 4100-4199 [4-103], `cluster::partition` 4200-4249 [104-153],
/// `cluster::netns` 4000-4089 [160-249], testkit's `tests/netns.rs` 4090-4093 [250-253],
/// `cluster::net_bench` 4608-4609 [0-1] (free: 154-159, 254-255, 2-3). A new LAN test takes a free residue, not just a free `n`.
pub struct HostServer {
    pub s: TestServer,
    n: u32,
}

impl HostServer {
    pub fn start(n: u32, extra: &[String]) -> HostServer {
        let mut args: Vec<String> = vec![
            "--bridge".into(),
            format!("slws{n}"),
            "--nft-table".into(),
            format!("slws{n}"),
            "--subnet".into(),
            format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
            "--cgroup-parent".into(),
            format!("slipway-srvtest-{n}"),
            "--stacks-dir".into(),
            std::env::temp_dir()
                .join("slipway-test-stacks")
                .display()
                .to_string(),
        ];
        args.extend_from_slice(extra);
        HostServer {
            s: TestServer::start_with(&args),
            n,
        }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.s.kill();
        let host = self.s.dir.path().join("data/host");
        // Build dirs are mounted filesystems too (bounded by the build's disk limit).
        unmount_under(&self.s.dir.path().join("data/build/builds"));
        remove_host_leftovers(
            &host,
            &format!("slipway-srvtest-{}", self.n),
            &format!("slws{}", self.n),
        );
    }
}

/// The names in `dir` (none if it does not exist).
pub fn dir_entries(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
