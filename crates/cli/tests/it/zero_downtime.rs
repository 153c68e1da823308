//! Zero downtime through the real router to real jobs (issue 6): while clients send requests
//! through the router, a deploy of a new release of a 3-instance app and a scale 3 → 1 complete
//! with no failed request, every answer from the old or the new release. The web process is a
//! plain `httpd` that dies at once on SIGTERM (the init forwards it), so only draining before
//! the stop and waiting for the router before counting a job up keep requests from failing.
//! Some clients open a connection per request, others keep theirs alive across the deploy.

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

/// One response read off a kept-alive connection: `Ok((body, the server closes))` for a 200.
fn read_response(r: &mut impl std::io::BufRead) -> Result<(String, bool), String> {
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("read: {e}"))?;
    if status.is_empty() {
        return Err("the connection was closed without an answer".into());
    }
    let (mut len, mut chunked, mut close) = (None, false, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| format!("read: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        let (k, v) = (k.to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => len = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v.contains("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| format!("read: {e}"))?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let n = len.ok_or("an answer without a length on a kept-alive connection")?;
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status.trim().to_string());
    }
    Ok((String::from_utf8_lossy(&body).trim().to_string(), close))
}

/// Clients sending requests in a loop until stopped; answers counted by body, failures kept.
/// `fresh` clients open a connection per request; `kept` clients reuse theirs (HTTP/1.1
/// keep-alive) for as long as the router keeps it: a request on a reused connection must be
/// answered too, unless the answer before it said `Connection: close`.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    /// Requests answered on a connection that had answered one before.
    reused: Arc<std::sync::atomic::AtomicUsize>,
    started: std::time::Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, host: &str, fresh: usize, kept: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let reused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads = (0..fresh + kept)
            .map(|i| {
                let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
                let reused = reused.clone();
                let (addr, host) = (addr.to_string(), host.to_string());
                std::thread::spawn(move || {
                    let mut conn: Kept = None;
                    while !stop.load(Ordering::Relaxed) {
                        let res = if i < fresh {
                            get(&addr, &host)
                        } else {
                            keep_alive_get(&addr, &host, &mut conn, &reused)
                        };
                        match res {
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
            reused,
            started: std::time::Instant::now(),
            threads,
        }
    }

    /// What was served, the failures, requests answered on reused connections, and how long
    /// the load ran.
    fn finish(self) -> (BTreeMap<String, usize>, Vec<String>, usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let ran = self.started.elapsed();
        for t in self.threads {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (seen, failures, self.reused.load(Ordering::Relaxed), ran)
    }
}

/// A kept-alive connection: its two halves, and whether it has answered a request before.
type Kept = Option<(
    std::net::TcpStream,
    std::io::BufReader<std::net::TcpStream>,
    bool,
)>;

/// One request on the kept connection `conn` (opened if there is none); the connection is kept
/// unless the answer says `Connection: close`.
fn keep_alive_get(
    addr: &str,
    host: &str,
    conn: &mut Kept,
    reused: &std::sync::atomic::AtomicUsize,
) -> Result<String, String> {
    if conn.is_none() {
        let s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = std::io::BufReader::new(s.try_clone().unwrap());
        *conn = Some((s, r, false));
    }
    let (s, r, used) = conn.as_mut().unwrap();
    let was_used = *used;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let res = s
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))
        .and_then(|()| read_response(r));
    let what = if was_used { "reused" } else { "new" };
    match res {
        Ok((body, close)) => {
            if was_used {
                reused.fetch_add(1, Ordering::Relaxed);
            }
            if close {
                *conn = None;
            } else {
                conn.as_mut().unwrap().2 = true;
            }
            Ok(body)
        }
        Err(e) => {
            *conn = None;
            Err(format!("on a {what} kept-alive connection: {e}"))
        }
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

    let load = Load::start(&router, &host, 4, 2);
    std::thread::sleep(Duration::from_millis(500));
    let out = s.ok(&["-a", "zd", "env", "set", "ZD=1"]);
    let new = created_release(out.lines().last().unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["-a", "zd", "scale", "web=1"]);
    std::thread::sleep(Duration::from_millis(500));
    let (seen, failures, reused, ran) = load.finish();

    let total: usize = seen.values().sum();
    eprintln!(
        "{total} requests in {ran:?} ({reused} on reused connections): {seen:?}; {} failed",
        failures.len()
    );
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
    // The load ran all along: at least 20 answers per second of the deploy and the scale down
    // (a router that held requests for most of it would not get there).
    let floor = (ran.as_secs_f64() * 20.0) as usize;
    assert!(
        total >= floor.max(100),
        "{total} answers in {ran:?}, fewer than 20 per second: {seen:?}"
    );
    // The kept-alive clients did reuse their connections across the deploy.
    assert!(
        reused as f64 >= ran.as_secs_f64() * 5.0,
        "{reused} answers on reused connections in {ran:?}"
    );
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
