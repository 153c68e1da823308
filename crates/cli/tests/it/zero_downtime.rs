//! Zero downtime through the real router to real jobs (issue 6): while clients send requests
//! through the router, a deploy of a new release of a 3-instance app and a scale 3 → 1 complete
//! with no failed request, every answer from the old or the new release. The web process is a
//! plain `httpd` that dies at once on SIGTERM (the init forwards it), so only draining before
//! the stop and waiting for the router before counting a job up keep requests from failing.

use crate::support::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Clients sending requests in a loop until stopped; answers counted by body, failures kept.
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

#[test]
fn a_deploy_and_a_scale_down_under_load_fail_no_request() {
    if skip_unless_root("a_deploy_and_a_scale_down_under_load_fail_no_request") {
        return;
    }
    let n = 2400 + std::process::id() % 100;
    let hs = HostServer::start(
        n,
        &loopback_router(&[
            "--discovery-listen",
            "127.0.0.1:0",
            "--router-admin",
            "127.0.0.1:0",
        ]),
    );
    let s = &hs.s;
    let router = logged_addr(s, "router: HTTP on ");
    s.create_app("zd");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = rt.block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                // Each answer names the release that served it. No signal handler: SIGTERM
                // ends httpd at once, in-flight requests or not.
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
        let r = c.create_release("zd", &r).await.unwrap();
        c.set_app_release("zd", r.id).await.unwrap();
        r.id.to_string()
    });
    let host = format!("zd.{DOMAIN}");
    s.ok(&["-a", "zd", "scale", "web=3"]);
    // Every job answers before the load starts (the router had them when scale returned).
    assert_eq!(get(&router, &host), Ok(old.clone()));

    let load = Load::start(&router, &host, 4);
    std::thread::sleep(Duration::from_millis(500));
    let out = s.ok(&["-a", "zd", "env", "set", "ZD=1"]);
    let new = created_release(out.lines().last().unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["-a", "zd", "scale", "web=1"]);
    std::thread::sleep(Duration::from_millis(500));
    let (seen, failures) = load.finish();

    let total: usize = seen.values().sum();
    eprintln!("{total} requests: {seen:?}; {} failed", failures.len());
    if !failures.is_empty() {
        let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
        for l in log.lines() {
            eprintln!("server: {l}");
        }
    }
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?} (served: {seen:?})"
    );
    assert!(total > 100, "the load loop ran: {seen:?}");
    for body in seen.keys() {
        assert!(
            body == &old || body == &new,
            "an answer from neither release: {body:?}"
        );
    }
    assert!(
        seen.contains_key(&old) && seen.contains_key(&new),
        "{seen:?}"
    );
    // The scale down happened: one job of the new release is left.
    let jobs = s.json(&["-a", "zd", "ps", "--json"]);
    let up: Vec<_> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "up")
        .collect();
    assert_eq!(up.len(), 1, "{jobs}");
}
