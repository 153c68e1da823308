//! Issue 17: the platform's own restarts are invisible to the apps' users. Two processes as in
//! docs/roles.md ("Two processes on one machine"): a server without the router (controller,
//! scheduler, host agent on real runc, discovery) and a router process following it. An app with
//! 2 jobs serves a 9 KB page; 4 clients request it in a loop, each request on a new connection,
//! and check the status and the whole body, while the server is (1) stopped with SIGTERM and
//! started again, (2) killed with SIGKILL and started again, (3) upgraded — a copy of the
//! binary at a new path starts a new router, which takes over, and then the server — and
//! (4) new router processes take over from the running one, 5 times. No request may fail.
//!
//! `SLIPWAY_RESTART_ROUTER_BEFORE=1` measures the old way instead (each router change is
//! "stop the router, start another"), prints the failures and asserts nothing about them;
//! `SLIPWAY_RESTART_ROUTER_BIN=PATH` runs another build of `slipway` (e.g. one without the
//! handoff) for every process.

use crate::support::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of the page the app serves: its size (≈9 KB) makes a cut-off body visible.
const LINES: usize = 2000;

fn page() -> String {
    (1..=LINES).map(|i| format!("{i}\n")).collect()
}

/// A free port on loopback now (for ports that must stay the same across restarts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `slipway server` without the router, restarted by the test from a binary it names.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    n: u32,
    listen: String,
    discovery: String,
}

impl Server {
    fn flags(&self) -> Vec<String> {
        let n = self.n;
        [
            "server",
            "--listen",
            &self.listen,
            "--domain",
            DOMAIN,
            "--no-register",
            "--roles",
            "controller,scheduler,host,discovery",
            "--discovery-listen",
            &self.discovery,
            "--bridge",
            &format!("slws{n}"),
            "--nft-table",
            &format!("slws{n}"),
            "--subnet",
            &format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
            "--cgroup-parent",
            &format!("slipway-srvtest-{n}"),
            "--stacks-dir",
            &std::env::temp_dir()
                .join("slipway-test-stacks")
                .display()
                .to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts it from `bin`; returns once its API answers.
    fn start(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(bin)
            .args(self.flags())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .env("HOME", &self.dir)
            .env_remove("SLIPWAY_ROLES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn slipway server");
        // `Listening on http://…` first; the rest drained so the server never blocks.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let first = rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
        let Some(url) = first
            .as_deref()
            .and_then(|l| l.strip_prefix("Listening on "))
        else {
            let _ = child.kill();
            panic!("no address from the server ({first:?}):\n{}", self.log());
        };
        self.listen = url.trim().trim_start_matches("http://").to_string();
        self.child = Some(child);
        if self.discovery.ends_with(":0") {
            self.discovery = wait_logged(&self.dir.join("server.log"), "discovery API on http://");
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn key(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/api-key"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `slipway ARGS` against this server; must succeed.
    fn cli(&self, args: &[&str]) -> String {
        ok(assert_cmd::Command::new(BIN)
            .args(args)
            .env("SLIPWAY_URL", self.url())
            .env("SLIPWAY_KEY", self.key())
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .timeout(Duration::from_secs(60))
            .write_stdin(""))
    }

    /// Sends `signal`, waits for the process to exit (30 s at most); returns its status.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        stop(&mut child, signal)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let host = self.dir.join("data/host");
        unmount_under(&self.dir.join("data/build/builds"));
        remove_host_leftovers(
            &host,
            &format!("slipway-srvtest-{}", self.n),
            &format!("slws{}", self.n),
        );
    }
}

/// Sends `signal` to `child` (`kill -SIGNAL`), waits 35 s at most for its exit.
fn stop(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(35);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pid {} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `IP:PORT` after `marker` in the log at `path` (30 s at most).
fn wait_logged(path: &Path, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(rest) = log.split(marker).nth(1) {
            return rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
        }
        assert!(Instant::now() < deadline, "no {marker:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `slipway server --roles router` process on fixed ports; its log in `dir/router-N.log`.
struct Router {
    child: Child,
    log: PathBuf,
}

impl Router {
    /// Starts one following `server`; returns once it listens.
    fn start(bin: &Path, server: &Server, ports: &RouterPorts, nth: usize) -> Router {
        let r = Router::spawn(
            bin,
            &server.dir,
            (&server.url(), &format!("http://{}", server.discovery)),
            &server.key(),
            ports,
            nth,
        );
        wait_logged(&r.log, "router: HTTP on ");
        r
    }

    /// Starts one following the controller and discovery at `urls`, with `dir/router-data`
    /// as its data dir and the cluster token of `dir/data`.
    fn spawn(
        bin: &Path,
        dir: &Path,
        urls: (&str, &str),
        key: &str,
        ports: &RouterPorts,
        nth: usize,
    ) -> Router {
        let log = dir.join(format!("router-{nth}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["server", "--roles", "router", "--no-register"])
            .args(["--controller-url", urls.0])
            .args(["--discovery-url", urls.1])
            .arg("--data-dir")
            .arg(dir.join("router-data"))
            .args(["--router-ip", "127.0.0.1"])
            .args(["--http-port", &ports.http.to_string()])
            .args(["--https-port", &ports.https.to_string()])
            .args(["--router-admin", &format!("127.0.0.1:{}", ports.admin)])
            // What the server's gate asks the router's admin endpoint with.
            .arg("--cluster-token-file")
            .arg(dir.join("data/cluster-token"))
            .env("SLIPWAY_API_KEY", key)
            .env("HOME", dir)
            .env_remove("SLIPWAY_ROLES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the router process");
        Router { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct RouterPorts {
    http: u16,
    https: u16,
    admin: u16,
}

/// Clients requesting the page in a loop, each request on a new connection, counted per phase.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    served: Arc<Mutex<BTreeMap<usize, usize>>>,
    failures: Arc<Mutex<Vec<(usize, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, host: &str, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            phase: Arc::default(),
            served: Arc::default(),
            failures: Arc::default(),
            threads: Vec::new(),
        };
        let want = page();
        let threads = (0..clients)
            .map(|_| {
                let (stop, phase) = (load.stop.clone(), load.phase.clone());
                let (served, failures) = (load.served.clone(), load.failures.clone());
                let (addr, host, want) = (addr.to_string(), host.to_string(), want.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let p = phase.load(Ordering::Relaxed);
                        match fetch(&addr, &host, &want) {
                            Ok(()) => *served.lock().unwrap().entry(p).or_default() += 1,
                            Err(e) => failures.lock().unwrap().push((p, e)),
                        }
                        // Leave the shared machine some CPU for the restarts.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Load { threads, ..load }
    }

    fn finish(self) -> (BTreeMap<usize, usize>, Vec<(usize, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let served = self.served.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (served, failures)
    }
}

/// One `GET /` on a new connection: `Ok` for a 200 with exactly the page.
fn fetch(addr: &str, host: &str, want: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("read after {} bytes: {e}", out.len()))?;
    let out = String::from_utf8_lossy(&out);
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return Err(format!("no complete head in {} bytes: {out:?}", out.len()));
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{status}: {}", body.trim()));
    }
    if body != want {
        return Err(format!(
            "200 with {} bytes of body, not the {}-byte page, after {:?}",
            body.len(),
            want.len(),
            started.elapsed()
        ));
    }
    Ok(())
}

/// Router processes started one after another in phase 4, each taking over.
const TAKEOVERS: usize = 5;

const PHASES: [&str; 6] = [
    "warm-up",
    "server SIGTERM + start",
    "server kill -9 + start",
    "upgrade: new router from a new binary (handoff), then the server",
    "new router processes take over, one after another",
    "after",
];

#[test]
fn apps_keep_serving_through_server_restarts_crashes_upgrades_and_router_handoffs() {
    if skip_unless_root("apps_keep_serving_through_server_restarts") {
        return;
    }
    let before = std::env::var("SLIPWAY_RESTART_ROUTER_BEFORE").is_ok_and(|v| v == "1");
    let bin = std::env::var("SLIPWAY_RESTART_ROUTER_BIN").map_or(PathBuf::from(BIN), PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server {
        child: None,
        dir: tmp.path().to_path_buf(),
        n: 3700 + std::process::id() % 50,
        listen: "127.0.0.1:0".into(),
        discovery: "127.0.0.1:0".into(),
    };
    server.start(&bin);
    let ports = RouterPorts {
        http: free_port(),
        https: free_port(),
        admin: free_port(),
    };
    let mut router = Router::start(&bin, &server, &ports, 1);
    let addr = format!("127.0.0.1:{}", ports.http);

    server.cli(&["create", "rr"]);
    let script = format!(
        "mkdir -p /tmp/www && seq 1 {LINES} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = slipway_client::Client::new(&server.url(), &server.key()).unwrap();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec!["sh".into(), "-c".into(), script],
                ..Default::default()
            },
        );
        let r = c.create_release("rr", &r).await.unwrap();
        c.set_app_release("rr", r.id).await.unwrap();
    });
    server.cli(&["-a", "rr", "scale", "web=2"]);
    let host = format!("rr.{DOMAIN}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = fetch(&addr, &host, &page()) {
        assert!(
            Instant::now() < deadline,
            "the app is not served: {e}; router log:\n{}",
            router.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both jobs registered before the load starts.
    std::thread::sleep(Duration::from_secs(1));

    let load = Load::start(&addr, &host, 4);
    let phase = |p: usize| {
        load.phase.store(p, Ordering::Relaxed);
        eprintln!("phase {p}: {}", PHASES[p]);
    };
    let mut times = Vec::new();
    std::thread::sleep(Duration::from_secs(1));

    // (1) A clean restart of the server.
    phase(1);
    let t = Instant::now();
    let status = server.stop("TERM");
    assert!(status.success(), "SIGTERM: the server exited with {status}");
    server.start(&bin);
    times.push(("server SIGTERM → API answers".to_string(), t.elapsed()));
    std::thread::sleep(Duration::from_secs(3));

    // (2) A crash of the server.
    phase(2);
    let t = Instant::now();
    server.stop("KILL");
    server.start(&bin);
    times.push(("server kill -9 → API answers".to_string(), t.elapsed()));
    std::thread::sleep(Duration::from_secs(3));

    // (3) An upgrade: the new version is a copy of the binary at another path. The router
    // first (it takes over from the running one), then the server.
    phase(3);
    let new_dir = tmp.path().join("new");
    std::fs::create_dir(&new_dir).unwrap();
    let new_bin = new_dir.join("slipway");
    std::fs::copy(&bin, &new_bin).unwrap();
    let t = Instant::now();
    if before {
        stop(&mut router.child, "TERM");
    }
    let mut old = std::mem::replace(&mut router, Router::start(&new_bin, &server, &ports, 2));
    let status = stop_when_handed_over(&mut old, before);
    times.push((
        "router 1 → router 2 (new binary) handoff".into(),
        t.elapsed(),
    ));
    assert!(
        before || status.success(),
        "the old router exited with {status}:\n{}",
        old.log()
    );
    let status = server.stop("TERM");
    assert!(status.success(), "SIGTERM: the server exited with {status}");
    server.start(&new_bin);
    std::thread::sleep(Duration::from_secs(3));

    // (4) A new router process takes over from the running one, TAKEOVERS times.
    phase(4);
    for nth in 3..3 + TAKEOVERS {
        let t = Instant::now();
        if before {
            stop(&mut router.child, "TERM");
        }
        let next = Router::start(&new_bin, &server, &ports, nth);
        let mut old = std::mem::replace(&mut router, next);
        let status = stop_when_handed_over(&mut old, before);
        times.push((
            format!("router {} → router {nth} handoff", nth - 1),
            t.elapsed(),
        ));
        assert!(
            before || status.success(),
            "the old router exited with {status}:\n{}",
            old.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    phase(5);
    std::thread::sleep(Duration::from_secs(1));
    let (served, failures) = load.finish();

    let total: usize = served.values().sum();
    eprintln!("{total} requests served, {} failed", failures.len());
    for (p, name) in PHASES.iter().enumerate() {
        let failed = failures.iter().filter(|(fp, _)| *fp == p).count();
        let ok = served.get(&p).copied().unwrap_or(0);
        eprintln!("  phase {p} ({name}): {ok} served, {failed} failed");
    }
    for (what, took) in &times {
        eprintln!("  {what}: {took:?}");
    }
    let mut by_error: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (p, e) in &failures {
        *by_error.entry((*p, e.clone())).or_default() += 1;
    }
    for ((p, e), count) in &by_error {
        eprintln!("  failed in phase {p}: {count} × {e}");
    }
    // What the routers said about the handoffs and discovery's returns.
    for nth in 1..3 + TAKEOVERS {
        let log = std::fs::read_to_string(tmp.path().join(format!("router-{nth}.log")));
        for line in log.unwrap_or_default().lines().filter(|l| {
            [
                "took over",
                "draining",
                "drained",
                "discovery is back",
                "retired",
            ]
            .iter()
            .any(|w| l.contains(w))
        }) {
            eprintln!("  router {nth}: {line}");
        }
    }
    if before {
        eprintln!("(SLIPWAY_RESTART_ROUTER_BEFORE=1: the old way measured, nothing asserted)");
        return;
    }
    if !failures.is_empty() {
        for l in server.log().lines() {
            eprintln!("server: {l}");
        }
        eprintln!("router: {}", router.log());
    }
    assert!(failures.is_empty(), "{} requests failed", failures.len());
    for (p, name) in PHASES.iter().enumerate().take(5).skip(1) {
        let ok = served.get(&p).copied().unwrap_or(0);
        assert!(ok >= 20, "phase {p} ({name}): only {ok} requests");
    }
    // The pidfile names the last router; the ones before it exited.
    let pidfile = std::fs::read_to_string(tmp.path().join("router-data/router.pid")).unwrap();
    assert_eq!(
        pidfile.lines().next(),
        Some(router.child.id().to_string().as_str()),
        "{pidfile}"
    );
    let log = router.log();
    assert!(log.contains("took over from router process"), "{log}");
}

/// Waits for the old router's exit: told by its successor (the handoff), or, measuring the
/// old way (`before`), already stopped by the test.
fn stop_when_handed_over(old: &mut Router, before: bool) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = old.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            before || Instant::now() < deadline,
            "the old router is still running 40 s after its successor started:\n{}",
            old.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status line of `GET /` with `Host: host` on a new connection (empty when none came).
fn status(addr: &str, host: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return "no connection".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_string()
}

/// The pid `router-data/router.pid` names.
fn pidfile_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("router-data/router.pid")).ok()?;
    text.lines().next()?.parse().ok()
}

/// Waits (20 s at most) for `what` in the log of `r`.
fn wait_log(r: &Router, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.log().contains(what) {
        assert!(Instant::now() < deadline, "no {what:?} in:\n{}", r.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_router_that_cannot_load_its_routes_does_not_replace_one_that_serves() {
    // No host agent: the router processes need only the controller and discovery.
    let mut s = TestServer::start_with(&[
        "--no-host".into(),
        "--no-router".into(),
        "--discovery-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let discovery = format!("http://{}", logged_addr(&s, "discovery API on http://"));
    let dir = s.dir.path().to_path_buf();
    let ports = RouterPorts {
        http: free_port(),
        https: free_port(),
        admin: free_port(),
    };
    let addr = format!("127.0.0.1:{}", ports.http);
    let key = s.key();
    let bin = Path::new(BIN);
    let mut a = Router::spawn(bin, &dir, (&s.url, &discovery), &key, &ports, 1);
    wait_logged(&a.log, "router: HTTP on ");
    let got = status(&addr, "nothing.test");
    assert!(got.starts_with("HTTP/1.1 404"), "A does not serve: {got:?}");
    assert_eq!(pidfile_pid(&dir), Some(a.child.id()));

    // The controller and discovery gone, a successor cannot load: it leaves A serving.
    s.kill();
    let b = Router::spawn(bin, &dir, (&s.url, &discovery), &key, &ports, 2);
    wait_log(&b, "keeps serving until they are loaded");
    assert!(a.child.try_wait().unwrap().is_none(), "A was stopped");
    assert_eq!(pidfile_pid(&dir), Some(a.child.id()));
    assert!(!b.log().contains("router: HTTP on"), "{}", b.log());
    let got = status(&addr, "nothing.test");
    assert!(
        got.starts_with("HTTP/1.1 404"),
        "A no longer serves: {got:?}"
    );

    // A dies: B serves with what it has (no routes: 404) and names itself in the pidfile.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    wait_log(&b, "serving with what it has");
    wait_log(&b, "router: HTTP on ");
    assert_eq!(pidfile_pid(&dir), Some(b.child.id()));
    let got = status(&addr, "nothing.test");
    assert!(got.starts_with("HTTP/1.1 404"), "B does not serve: {got:?}");
}
