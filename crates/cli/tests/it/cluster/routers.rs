//! Several routers, one zero-downtime gate (issue 16): a router in a process of its own
//! (`--roles router --controller-url … --discovery-url …`) registers itself in discovery, and
//! the scheduler of the other process (controller, scheduler, discovery, router, host) counts
//! a job up only once both routers have it and stops a job only once both drained it. A deploy
//! and a scale-down under load through BOTH routers fail no request; a router killed with
//! `kill -9` is waited for only until its registration expires. Real runc, real processes,
//! real HTTP (busybox httpd, as `zero_downtime.rs`).

use crate::support::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `slipway server --roles router` process, killed on drop.
struct RouterProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl RouterProcess {
    fn start(dir: &Path, controller: &str, discovery: &str, key: &str, token: &str) -> Self {
        let log = dir.join("router.log");
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "router", "--no-register"])
            .args(["--controller-url", controller])
            .args(["--discovery-url", discovery])
            .arg("--data-dir")
            .arg(dir.join("router-data"))
            .args(loopback_router(&["--router-admin", "127.0.0.1:0"]))
            .env("SLIPWAY_API_KEY", key)
            .env("SLIPWAY_CLUSTER_TOKEN", token)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the router process");
        RouterProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `marker` in the log; returns what follows it on its line.
    fn logged(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(rest) = log.split(marker).nth(1) {
                return rest.lines().next().unwrap_or_default().to_string();
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the router process exited:\n{log}"
            );
            assert!(Instant::now() < deadline, "no {marker:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a new connection: `Ok(body)` for a 200, `Err(what)` otherwise.
fn get(addr: &str, host: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(out.lines().next().unwrap_or("empty response").to_string());
    }
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Clients sending requests in a loop through one router until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, host: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
                let (addr, host) = (addr.to_string(), host.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(&addr, &host) {
                            Ok(body) => *seen.lock().unwrap().entry(body).or_default() += 1,
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            failures,
            threads,
        }
    }

    fn finish(self) -> (BTreeMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (seen, failures)
    }
}

/// The app's jobs that are `up`.
fn up_jobs(s: &TestServer, app: &str) -> usize {
    let jobs = s.json(&["-a", app, "ps", "--json"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "up")
        .count()
}

#[test]
fn two_routers_in_two_processes_serve_a_deploy_under_load_with_no_failed_request() {
    if skip_unless_root(
        "two_routers_in_two_processes_serve_a_deploy_under_load_with_no_failed_request",
    ) {
        return;
    }
    let n = 3600 + std::process::id() % 100;
    // The router process registers its loopback admin address through discovery's API.
    let hs = HostServer::start(
        n,
        &loopback_router(&[
            "--discovery-listen",
            "127.0.0.1:0",
            "--router-admin",
            "127.0.0.1:0",
            "--discovery-allow",
            "127.0.0.1/32",
        ]),
    );
    let s = &hs.s;
    let router_a = logged_addr(s, "router: HTTP on ");
    logged_addr(s, "router: registered in discovery as ");
    let discovery = format!("http://{}", logged_addr(s, "discovery API on http://"));
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rp = RouterProcess::start(
        dir.path(),
        &s.url,
        &discovery,
        &s.key_from_data_dir(),
        token.trim(),
    );
    let router_b: String = rp
        .logged("router: HTTP on ")
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    rp.logged("router: registered in discovery as ");

    s.create_app("rr");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = rt.block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                // Each answer names its release; SIGTERM ends httpd at once.
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo $SLIPWAY_RELEASE_ID > /tmp/www/index.html && \
                     exec httpd -f -p 8080 -h /tmp/www"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release("rr", &r).await.unwrap();
        c.set_app_release("rr", r.id).await.unwrap();
        r.id.to_string()
    });
    let host = format!("rr.{DOMAIN}");
    s.ok(&["-a", "rr", "scale", "web=3"]);
    // Up means both routers have the jobs: each answers at once. (Router B follows the
    // routes over the controller's events: give it the route if it is a moment behind.)
    assert_eq!(get(&router_a, &host), Ok(old.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&router_b, &host).is_err() {
        assert!(
            Instant::now() < deadline,
            "router B never routed:\n{}",
            rp.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let loads = [
        Load::start(&router_a, &host, 3),
        Load::start(&router_b, &host, 3),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let out = s.ok(&["-a", "rr", "env", "set", "RR=1"]);
    let new = created_release(out.lines().last().unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["-a", "rr", "scale", "web=1"]);
    std::thread::sleep(Duration::from_millis(500));
    for (name, load) in ["A (in-process)", "B (own process)"].iter().zip(loads) {
        let (seen, failures) = load.finish();
        let total: usize = seen.values().sum();
        eprintln!(
            "router {name}: {total} answers {seen:?}, {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "router {name}: {} failed requests, first: {:?}\nserver log:\n{}\nrouter B log:\n{}",
            failures.len(),
            &failures[..failures.len().min(5)],
            std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default(),
            rp.log()
        );
        assert!(total >= 20, "router {name}: only {total} answers");
        assert!(
            seen.keys().all(|b| b == &old || b == &new),
            "router {name}: {seen:?}"
        );
        assert!(seen.contains_key(&new), "router {name}: {seen:?}");
    }
    assert_eq!(up_jobs(s, "rr"), 1);

    // Router B dies. A stop now waits for it only until its registration expires (10 s TTL,
    // heartbeats every 3.3 s), well within the 30 s drain timeout.
    s.ok(&["-a", "rr", "scale", "web=2"]);
    let _ = rp.child.kill();
    let _ = rp.child.wait();
    let t0 = Instant::now();
    s.ok(&["-a", "rr", "scale", "web=1"]);
    while up_jobs(s, "rr") != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the scale-down never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t0.elapsed();
    eprintln!("the scale-down with router B dead took {took:?}");
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
    assert!(
        took < Duration::from_secs(25) && !log.contains("stopping it anyway"),
        "the stop took {took:?}: the gate waited for the dead router past its registration:\n{log}"
    );
    // It did wait for it (the registration outlives the process by 6.7 s to 11 s): the gate
    // knew of router B from discovery.
    assert!(
        took >= Duration::from_secs(4),
        "the stop took only {took:?}"
    );
    // Router A still serves the job left.
    assert_eq!(get(&router_a, &host), Ok(new));
}
