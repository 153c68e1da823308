//! Issue 17: `slipway supervise` (docs/restarts.md). A supervisor runs the server (real runc host
//! agent) and the router process; an app with 2 jobs serves a 9 KB page to 4 clients in a loop
//! (a new connection per request) through the router while: (a) the server child is killed with
//! SIGKILL — the supervisor restarts it, no request fails; (b) the router child is killed with
//! SIGKILL — restarted, the time until it serves again is bounded (the requests on the killed
//! process fail: counted, reported); (c) SIGHUP after the binary at the supervisor's path was
//! replaced — new children from the new file, no request fails; (d) SIGTERM to the supervisor —
//! it exits 0, the jobs' containers keep running, and a new supervisor adopts and serves them;
//! (e) its log has no escape sequence. And (g): the systemd unit `scripts/up` renders passes
//! `systemd-analyze verify`.

use crate::support::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LINES: usize = 2000;

fn page() -> String {
    (1..=LINES).map(|i| format!("{i}\n")).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of a `GET` on discovery's API.
fn discovery_get(discovery: &str, key: &str, path: &str) -> String {
    let Ok(mut c) = std::net::TcpStream::connect(discovery) else {
        return String::new();
    };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: discovery\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    if c.write_all(req.as_bytes()).is_ok() {
        let _ = c.read_to_string(&mut resp);
    }
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// One `GET /` on a new connection: `Ok` for a 200 with exactly the page.
fn fetch(addr: &str, host: &str, want: &str) -> Result<(), String> {
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
        return Err(format!("no complete head in {} bytes", out.len()));
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{status}: {}", body.trim()));
    }
    if body != want {
        return Err(format!("200 with {} bytes, not the page", body.len()));
    }
    Ok(())
}

/// The pid on the first line of `path`.
fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Waits (`secs` at most) for `cond`; returns how long it took.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

struct Setup {
    dir: PathBuf,
    n: u32,
    bin: PathBuf,
    listen: String,
    discovery: String,
    ports: (u16, u16, u16),
    /// More flags for `supervise`.
    extra: Vec<String>,
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn(&self) -> Child {
        let n = self.n;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("supervise.log"))
            .unwrap();
        Command::new(&self.bin)
            .arg("supervise")
            .args([
                "--listen",
                &self.listen,
                "--discovery-listen",
                &self.discovery,
            ])
            .args(["--domain", DOMAIN, "--no-register"])
            .arg("--data-dir")
            .arg(self.data())
            .args([
                "--bridge",
                &format!("slwv{n}"),
                "--nft-table",
                &format!("slwv{n}"),
            ])
            .args([
                "--subnet",
                &format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
            ])
            .args(["--cgroup-parent", &format!("slipway-svtest-{n}")])
            .arg("--stacks-dir")
            .arg(std::env::temp_dir().join("slipway-test-stacks"))
            .args(["--router-ip", "127.0.0.1"])
            .args(["--http-port", &self.ports.0.to_string()])
            .args(["--https-port", &self.ports.1.to_string()])
            .args(["--router-admin", &format!("127.0.0.1:{}", self.ports.2)])
            .args(&self.extra)
            .env("HOME", &self.dir)
            .env_remove("SLIPWAY_ROLES")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn slipway supervise")
    }

    fn key(&self) -> String {
        std::fs::read_to_string(self.data().join("api-key"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("supervise.log")).unwrap_or_default()
    }

    fn server_pid(&self) -> Option<u32> {
        pid_in(&self.data().join("server.pid")).filter(|p| alive(*p))
    }

    fn router_pid(&self) -> Option<u32> {
        pid_in(&self.data().join("router/router.pid")).filter(|p| alive(*p))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for p in [
            self.router_pid(),
            self.server_pid(),
            pid_in(&self.data().join("supervise.pid")),
        ]
        .into_iter()
        .flatten()
        {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(300));
        unmount_under(&self.data().join("build/builds"));
        remove_host_leftovers(
            &self.data().join("host"),
            &format!("slipway-svtest-{}", self.n),
            &format!("slwv{}", self.n),
        );
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    /// Per client: the phase its request in flight started in (`usize::MAX` between requests).
    in_flight: Arc<Vec<AtomicUsize>>,
    served: Arc<Mutex<BTreeMap<usize, usize>>>,
    failures: Arc<Mutex<Vec<(usize, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, host: &str) -> Load {
        let mut load = Load {
            stop: Arc::default(),
            phase: Arc::default(),
            in_flight: Arc::new((0..4).map(|_| AtomicUsize::new(usize::MAX)).collect()),
            served: Arc::default(),
            failures: Arc::default(),
            threads: Vec::new(),
        };
        for i in 0..4 {
            let (stop, phase) = (load.stop.clone(), load.phase.clone());
            let in_flight = load.in_flight.clone();
            let (served, failures) = (load.served.clone(), load.failures.clone());
            let (addr, host, want) = (addr.to_string(), host.to_string(), page());
            load.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::SeqCst);
                    in_flight[i].store(p, Ordering::SeqCst);
                    let res = fetch(&addr, &host, &want);
                    in_flight[i].store(usize::MAX, Ordering::SeqCst);
                    match res {
                        Ok(()) => *served.lock().unwrap().entry(p).or_default() += 1,
                        Err(e) => failures.lock().unwrap().push((p, e)),
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        load
    }

    /// Starts phase `p` once no request of an earlier phase is in flight (10 s at most), so
    /// that what the next signal breaks is counted against the phase that sends it.
    fn enter(&self, p: usize) {
        self.phase.store(p, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.in_flight.iter().any(|f| f.load(Ordering::SeqCst) < p)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
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

const PHASES: [&str; 5] = [
    "warm-up",
    "(a) kill -9 of the server child",
    "(b) kill -9 of the router child",
    "(c) SIGHUP upgrade, binary replaced at the same path",
    "(c2) the supervisor replaced (SIGUSR2, then a new one: scripts/up's upgrade)",
];

#[test]
fn the_supervisor_restarts_upgrades_and_stops_its_children_and_apps_keep_serving() {
    if skip_unless_root("the_supervisor_restarts_upgrades_and_stops_its_children") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let bin = bin_dir.join("slipway");
    std::fs::copy(BIN, &bin).unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3750 + std::process::id() % 50,
        bin: bin.clone(),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: Vec::new(),
    };
    let mut sup = s.spawn();
    wait_for(90, "the router child", || s.router_pid().is_some());
    let url = format!("http://{}", s.listen);
    let cli = |args: &[&str]| {
        ok(assert_cmd::Command::new(BIN)
            .args(args)
            .env("SLIPWAY_URL", &url)
            .env("SLIPWAY_KEY", s.key())
            .env("HOME", &s.dir)
            .current_dir(&s.dir)
            .timeout(Duration::from_secs(90))
            .write_stdin(""))
    };
    cli(&["create", "sv"]);
    let script = format!(
        "mkdir -p /tmp/www && seq 1 {LINES} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = slipway_client::Client::new(&url, &s.key()).unwrap();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec!["sh".into(), "-c".into(), script],
                ..Default::default()
            },
        );
        let r = c.create_release("sv", &r).await.unwrap();
        c.set_app_release("sv", r.id).await.unwrap();
    });
    cli(&["-a", "sv", "scale", "web=2"]);
    let addr = format!("127.0.0.1:{}", s.ports.0);
    let host = format!("sv.{DOMAIN}");
    wait_for(60, "the app served through the router", || {
        fetch(&addr, &host, &page()).is_ok()
    });
    // The router child is in discovery's router set (the supervisor lets its loopback admin
    // address through discovery's check), so the deploy gates ask it.
    let admin = format!("127.0.0.1:{}", s.ports.2);
    wait_for(30, "the router child registered in discovery", || {
        discovery_get(&s.discovery, &s.key(), "/services/slipway-router/instances")
            .contains(&format!("\"{admin}\""))
    });
    assert!(
        !s.log().contains("cannot register in discovery"),
        "{}",
        s.log()
    );
    std::thread::sleep(Duration::from_secs(1));

    let load = Load::start(&addr, &host);
    let phase = |p: usize| {
        load.enter(p);
        eprintln!("phase {p}: {}", PHASES[p]);
    };
    std::thread::sleep(Duration::from_secs(1));

    // (a) The server child crashes: the supervisor starts another.
    phase(1);
    let old = s.server_pid().expect("server pid");
    kill(old, "KILL");
    let took = wait_for(60, "a new server child", || {
        s.server_pid().is_some_and(|p| p != old)
    });
    eprintln!("  (a) new server child after {took:?}");
    wait_for(60, "the API answers", || {
        std::net::TcpStream::connect(&s.listen).is_ok()
    });
    std::thread::sleep(Duration::from_secs(3));

    // (b) The router child crashes: restarted; how long until it serves again.
    phase(2);
    let old = s.router_pid().expect("router pid");
    kill(old, "KILL");
    let t = Instant::now();
    wait_for(30, "a new router child", || {
        s.router_pid().is_some_and(|p| p != old)
    });
    wait_for(30, "the restarted router serves", || {
        fetch(&addr, &host, &page()).is_ok()
    });
    let router_gap = t.elapsed();
    eprintln!("  (b) router serving again {router_gap:?} after its kill -9");
    std::thread::sleep(Duration::from_secs(2));

    // (c) The upgrade: a new file at the same path, SIGHUP.
    phase(3);
    let staged = bin_dir.join("slipway.new");
    std::fs::copy(BIN, &staged).unwrap();
    std::fs::rename(&staged, &bin).unwrap();
    let (old_server, old_router) = (s.server_pid().unwrap(), s.router_pid().unwrap());
    let t = Instant::now();
    kill(sup.id(), "HUP");
    wait_for(120, "the upgrade", || {
        s.log().contains("supervise: upgraded")
    });
    let upgrade = t.elapsed();
    eprintln!("  (c) upgrade took {upgrade:?}");
    let (server, router) = (s.server_pid().unwrap(), s.router_pid().unwrap());
    assert!(server != old_server && router != old_router);
    assert!(!alive(old_router) && !alive(old_server));
    for p in [server, router] {
        let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap();
        assert_eq!(exe, bin, "pid {p} runs {exe:?}, not the new file");
    }
    std::thread::sleep(Duration::from_secs(2));

    // (c2) scripts/up's upgrade, which replaces the supervisor too: SIGUSR2 makes it exit and
    // leave its children running; the next supervisor restarts the server and its router takes
    // the ports over from the old router.
    phase(4);
    let (old_server, old_router) = (s.server_pid().unwrap(), s.router_pid().unwrap());
    kill(sup.id(), "USR2");
    let status = sup.wait().unwrap();
    assert!(
        status.success(),
        "the supervisor exited with {status} at SIGUSR2"
    );
    assert!(
        alive(old_server) && alive(old_router),
        "the children outlive a supervisor that hands over"
    );
    assert!(s.log().contains("SIGUSR2: exiting for the next supervisor"));
    sup = s.spawn();
    let t = Instant::now();
    wait_for(120, "the new supervisor's server and router", || {
        s.server_pid().is_some_and(|p| p != old_server)
            && s.router_pid().is_some_and(|p| p != old_router)
    });
    wait_for(60, "the old children gone", || {
        !alive(old_server) && !alive(old_router)
    });
    eprintln!("  (c2) supervisor replaced in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let (served, failures) = load.finish();
    let total: usize = served.values().sum();
    eprintln!("{total} requests served, {} failed", failures.len());
    let mut by_error: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (p, e) in &failures {
        *by_error.entry((*p, e.clone())).or_default() += 1;
    }
    for (p, name) in PHASES.iter().enumerate() {
        let failed = failures.iter().filter(|(fp, _)| *fp == p).count();
        eprintln!(
            "  phase {p} ({name}): {} served, {failed} failed",
            served.get(&p).copied().unwrap_or(0)
        );
    }
    for ((p, e), n) in &by_error {
        eprintln!("  failed in phase {p}: {n} × {e}");
    }
    for p in [0, 1, 3, 4] {
        let failed = failures.iter().filter(|(fp, _)| *fp == p).count();
        assert_eq!(failed, 0, "phase {p} ({}): requests failed", PHASES[p]);
    }
    for p in 1..5 {
        assert!(
            served.get(&p).copied().unwrap_or(0) >= 20,
            "phase {p}: too few requests"
        );
    }
    assert!(
        router_gap < Duration::from_secs(10),
        "router back after {router_gap:?}"
    );

    // (d) SIGTERM: the supervisor exits 0, the containers keep running; a new one adopts them.
    let jobs_before = cli(&["-a", "sv", "ps"]);
    let t = Instant::now();
    kill(sup.id(), "TERM");
    let status = sup.wait().unwrap();
    eprintln!("  (d) supervisor stopped in {:?}", t.elapsed());
    assert!(status.success(), "the supervisor exited with {status}");
    assert!(
        !alive(server) && !alive(router),
        "a child outlived the supervisor"
    );
    let shims = Command::new("pgrep")
        .args(["-f", &format!("{}/data/host", tmp.path().display())])
        .output()
        .unwrap();
    let shims = String::from_utf8_lossy(&shims.stdout).lines().count();
    assert!(
        shims >= 2,
        "the jobs' processes did not survive the supervisor's stop"
    );
    eprintln!("  (d) {shims} job processes alive with no supervisor");
    let mut sup2 = s.spawn();
    wait_for(90, "the second supervisor's router", || {
        s.router_pid().is_some()
    });
    let t = Instant::now();
    wait_for(60, "the app served after the second start", || {
        fetch(&addr, &host, &page()).is_ok()
    });
    eprintln!(
        "  (d) served again {:?} after the router started",
        t.elapsed()
    );
    let jobs_after = cli(&["-a", "sv", "ps"]);
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    assert_eq!(
        ids(&jobs_before),
        ids(&jobs_after),
        "the jobs were not adopted"
    );
    kill(sup2.id(), "TERM");
    assert!(sup2.wait().unwrap().success());

    // (e) No escape sequence in the log (stderr is a file).
    let log = s.log();
    assert!(log.contains("supervise: upgraded"), "{log}");
    assert!(!log.contains('\u{1b}'), "the log has escape sequences");
}

#[test]
fn the_systemd_unit_scripts_up_renders_passes_systemd_analyze_verify() {
    let which = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap();
    if !which.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing (scripts/install-deps installs the systemd package)"
        );
        eprintln!("SKIP: systemd-analyze is missing (scripts/install-deps installs it)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let template =
        std::fs::read_to_string(repo.join("scripts/systemd/slipway.service.in")).unwrap();
    let unit = template
        .replace("@BIN@", BIN)
        .replace("@REPO@", &repo.display().to_string());
    for want in [
        "KillMode=process",
        "Restart=always",
        "ExecReload=/bin/kill -HUP $MAINPID",
        " supervise",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}:\n{unit}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("slipway.service"),
        "{said}"
    );
}

/// The server's drain (docs/restarts.md): at SIGTERM an open event stream (what the router
/// follows, `GET /events`) ends at once and the server exits well within the drain timeout
/// (before, the stream held it 10 s); a new connection during the drain is refused.
#[test]
fn an_open_event_stream_does_not_hold_the_server_at_sigterm() {
    let mut s = TestServer::start();
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut events = std::net::TcpStream::connect(&addr).unwrap();
    let req = format!(
        "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
        s.key()
    );
    events.write_all(req.as_bytes()).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = [0u8; 512];
    let n = events.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let pid = s.pid();
    let t = Instant::now();
    kill(pid, "TERM");
    // The stream ends (EOF) rather than staying open for the drain timeout.
    let mut rest = Vec::new();
    let read = events.read_to_end(&mut rest);
    let ended = t.elapsed();
    assert!(
        read.is_ok(),
        "the event stream broke instead of ending: {read:?}"
    );
    let took = wait_for(20, "the server's exit", || !alive(pid));
    eprintln!("event stream ended {ended:?} after SIGTERM; the server exited after {took:?}");
    assert!(
        ended < Duration::from_secs(3),
        "the event stream held on {ended:?} after SIGTERM"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the server took {:?} to exit",
        t.elapsed()
    );
    s.kill();
}

/// A supervisor killed with SIGKILL leaves its children running (apps keep being served); the
/// next supervisor stops the orphaned server before starting its own on the same data dir, and
/// its router takes over from the orphaned one: never two servers on one data dir.
#[test]
fn a_new_supervisor_replaces_the_children_a_killed_one_left() {
    if skip_unless_root("a_new_supervisor_replaces_the_children_a_killed_one_left") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3750 + (std::process::id() + 25) % 50,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: vec!["--no-host".into()],
    };
    let mut first = s.spawn();
    wait_for(60, "the first router", || s.router_pid().is_some());
    let (server, router) = (s.server_pid().unwrap(), s.router_pid().unwrap());
    kill(first.id(), "KILL");
    first.wait().unwrap();
    assert!(
        alive(server) && alive(router),
        "a child died with its supervisor"
    );
    let mut second = s.spawn();
    let took = wait_for(60, "the second supervisor's children", || {
        s.server_pid().is_some_and(|p| p != server) && s.router_pid().is_some_and(|p| p != router)
    });
    eprintln!("the orphans replaced in {took:?}");
    wait_for(40, "the orphaned router's exit", || !alive(router));
    assert!(
        !alive(server),
        "the orphaned server still runs beside the new one"
    );
    let log = s.log();
    assert!(
        log.contains("left by a previous supervisor runs: stopping it"),
        "{log}"
    );
    // A third supervisor beside a live one is refused.
    let out = Command::new(BIN)
        .args([
            "supervise",
            "--no-register",
            "--no-host",
            "--listen",
            &s.listen,
        ])
        .args(["--discovery-listen", &s.discovery])
        .arg("--data-dir")
        .arg(s.data())
        .env("HOME", &s.dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("a supervisor already runs"),
        "{said}"
    );
    kill(second.id(), "TERM");
    assert!(second.wait().unwrap().success());
}

/// (f) A `git push` in flight when the server gets SIGTERM completes: the drain lets its
/// request finish, so the push ends with the server's own answer (here the pre-receive hook's
/// refusal of a 100 MiB source, which needs the whole upload), not a cut connection.
#[test]
fn a_git_push_in_flight_at_sigterm_completes() {
    use crate::push::{app_repo, commit, create_in, push};
    let mut s = TestServer::start();
    let dir = app_repo(&s, "drainpush", &[("Procfile", "web: httpd -f -p $PORT\n")]);
    create_in(&s, &dir, "drainpush");
    // Incompressible, so that the upload takes a while.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..(100usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    commit(&dir, &[], "big");
    let pid = s.pid();
    let pushing = std::thread::scope(|scope| {
        let pushed = scope.spawn(|| push(&s, &dir, "main"));
        // In flight: the server runs `git receive-pack` (or `git-receive-pack`) for it.
        wait_for(120, "git receive-pack under the server", || {
            Command::new("pgrep")
                .args(["-P", &pid.to_string(), "-f", "receive-pack"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        kill(pid, "TERM");
        let t = Instant::now();
        let got = pushed.join().unwrap();
        (got, t.elapsed())
    });
    let ((ok, err), took) = pushing;
    eprintln!("the push ended {took:?} after SIGTERM:\n{err}");
    assert!(!ok);
    assert!(
        err.contains("over the ") && err.contains("big.bin is 100.0 MiB"),
        "the push in flight did not complete with the server's answer:\n{err}"
    );
    wait_for(70, "the server's exit", || !alive(pid));
    s.kill();
}

/// The supervisor's own start: the server child is running before it answers. A SIGTERM then
/// (`systemctl stop` right after a start) used to find no handler installed yet: its default
/// action killed the supervisor at once and left the server running, unknown to anyone (under
/// `KillMode=process` systemd does not stop it either). Now the supervisor stops it and exits 0.
#[test]
fn a_sigterm_while_the_first_server_starts_stops_it_and_the_supervisor() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3900 + std::process::id() % 10,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: vec!["--no-host".into()],
    };
    let mut sup = s.spawn();
    let t = Instant::now();
    let server = loop {
        if let Some(p) = s.server_pid() {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no server child");
        std::thread::sleep(Duration::from_millis(1));
    };
    let answering = std::net::TcpStream::connect(&s.listen).is_ok();
    kill(sup.id(), "TERM");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = sup.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the supervisor did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("SIGTERM with the server answering: {answering}; exit {status:?}");
    assert!(status.success(), "the supervisor: {status:?}\n{}", s.log());
    wait_for(30, "the server child's exit", || !alive(server));
}

/// The processes whose command line has `needle` as one of its arguments.
fn pids_with_arg(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// An error of the supervisor's (here `server.pid` cannot be written: a directory is in the
/// way, as a full or read-only disk would fail it) used to return at once and leave the server
/// child running with no pid file naming it: the next supervisor would start a second server on
/// the same data dir. Now the supervisor stops its children before it exits with the error.
#[test]
fn a_supervisor_that_fails_stops_its_children_before_it_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3910 + std::process::id() % 10,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: vec!["--no-host".into()],
    };
    std::fs::create_dir_all(s.data().join("server.pid/in-the-way")).unwrap();
    let mut sup = s.spawn();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = sup.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the supervisor did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = s.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("cannot write the pid file"), "{log}");
    let data = s.data().display().to_string();
    let left = pids_with_arg(&data);
    for p in &left {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    assert!(left.is_empty(), "children left running: {left:?}\n{log}");
}

/// A second supervisor on the same data dir but with another pid file (the systemd unit's is
/// `/run/slipway.pid`, a `slipway supervise` typed by hand uses `<data dir>/supervise.pid`) did
/// not see the first: it took the first one's live server for an orphan, stopped it, and both
/// then ran servers (and routers taking the ports from each other) on one data dir. The data
/// dir is now locked by the supervisor that runs on it.
#[test]
fn a_second_supervisor_with_another_pid_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3920 + std::process::id() % 10,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: vec!["--no-host".into()],
    };
    let mut first = s.spawn();
    wait_for(60, "the first router", || s.router_pid().is_some());
    let server = s.server_pid().unwrap();
    let err = tmp.path().join("second.log");
    let mut second = Command::new(BIN)
        .args(["supervise", "--no-register", "--no-host"])
        .args(["--listen", &s.listen, "--discovery-listen", &s.discovery])
        .arg("--pid-file")
        .arg(tmp.path().join("other.pid"))
        .arg("--data-dir")
        .arg(s.data())
        .env("HOME", &s.dir)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(20) {
            kill(second.id(), "TERM");
            second.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.is_some_and(|st| !st.success()) && said.contains("a supervisor already runs"),
        "the second supervisor ran ({status:?}):\n{said}"
    );
    assert!(alive(server), "the first supervisor's server was stopped");
    kill(first.id(), "TERM");
    assert!(first.wait().unwrap().success());
}

/// A server that exits as it starts (here: etcd does not answer, a check made before anything
/// starts) is started again with backoff. Before, the supervisor
/// waited up to 120 s for the dead server to answer on its port, restarting nothing (neither
/// it nor a router that crashed meanwhile, e.g. after an upgrade to a binary whose server fails).
#[test]
fn a_server_that_exits_as_it_starts_is_restarted_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = free_port();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3930 + std::process::id() % 5,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: vec![
            "--no-host".into(),
            "--etcd".into(),
            format!("http://127.0.0.1:{dead}"),
        ],
    };
    let mut sup = s.spawn();
    let took = wait_for(30, "two restarts of the server", || {
        s.log().matches("the server exited unexpectedly").count() >= 2
    });
    eprintln!("two restarts within {took:?}");
    kill(sup.id(), "TERM");
    assert!(sup.wait().unwrap().success(), "{}", s.log());
}

/// `SLIPWAY_ROLES` in the supervisor's environment reached the server child (`--roles` is
/// refused, its variable was not): with `router` the child found no role to run and the
/// supervisor waited on it; with another set it silently ran a part of Slipway. Refused now.
#[test]
fn slipway_roles_in_the_environment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sup = Command::new(BIN)
        .args(["supervise", "--no-register", "--no-host"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--discovery-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("HOME", tmp.path())
        .env("SLIPWAY_ROLES", "router")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = sup.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = sup.kill();
            sup.wait().unwrap();
            for p in pids_with_arg(&tmp.path().join("data").display().to_string()) {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(tmp.path().join("log")).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()) && said.contains("SLIPWAY_ROLES is set"),
        "{status:?}: {said}"
    );
}

/// A connection accepted during the drain (kept open so that a push in flight can have its
/// hook called back) is answered 503, and does not hold the drain itself: before, one that
/// sent nothing (a port scan, a browser's preconnect) held the server — its API answering 503
/// to everyone — until the header timeout (30 s) or the drain timeout, whichever came first.
#[test]
fn an_idle_connection_made_during_the_drain_does_not_hold_it() {
    let mut s =
        TestServer::start_with(&["--no-host".into(), "--drain-timeout".into(), "20".into()]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let pid = s.pid();
    let t = Instant::now();
    kill(pid, "TERM");
    wait_for(10, "the drain", || {
        std::fs::read_to_string(s.dir.path().join("server.log"))
            .unwrap_or_default()
            .contains("the API: draining")
    });
    let _idle = std::net::TcpStream::connect(&addr).unwrap();
    let took = wait_for(30, "the server's exit", || !alive(pid));
    eprintln!(
        "the server exited {took:?} after the idle connection, {:?} after SIGTERM",
        t.elapsed()
    );
    assert!(
        took < Duration::from_secs(5),
        "an idle connection held the drain {took:?}"
    );
    s.kill();
}

/// The supervisor's stop gives the router its own drain (`--router-drain-timeout`), not the
/// server's: with `--drain-timeout 1` the router was SIGKILLed after 16 s, however long it was
/// told to drain (here a client connection that has not sent its request keeps it draining
/// until the 25 s header timeout).
#[test]
fn the_supervisor_lets_the_router_drain_for_its_own_drain_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        n: 3935 + std::process::id() % 5,
        bin: PathBuf::from(BIN),
        listen: format!("127.0.0.1:{}", free_port()),
        discovery: format!("127.0.0.1:{}", free_port()),
        ports: (free_port(), free_port(), free_port()),
        extra: [
            "--no-host",
            "--drain-timeout",
            "1",
            "--router-drain-timeout",
            "40",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--header-timeout".to_string(), "25".to_string()])
        .collect(),
    };
    let mut sup = s.spawn();
    wait_for(60, "the router", || s.router_pid().is_some());
    let router = s.router_pid().unwrap();
    let _client = std::net::TcpStream::connect(("127.0.0.1", s.ports.0)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    kill(sup.id(), "TERM");
    assert!(sup.wait().unwrap().success());
    eprintln!("the supervisor stopped in {:?}", t.elapsed());
    let log = s.log();
    assert!(!alive(router));
    assert!(
        !log.contains("the router did not exit within"),
        "the router was killed in its drain:\n{log}"
    );
}
