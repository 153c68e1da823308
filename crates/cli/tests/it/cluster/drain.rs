//! `slipway host drain` under load (issue 18): a two-host cluster (a full server, and a host
//! agent in a process of its own) serves an app through the server's router while the second
//! host is drained: its jobs move to the first (start new, route, then drain old), with no
//! failed request although the host ran every job of the app; `host list` shows it drained,
//! and after `host undrain` it gets jobs again. An omni process type runs its count on each
//! host that takes jobs: not on the drained one, on it again once undrained, and it is not
//! moved when that host dies.
//! Test numbers `n`: 4250-4274 (4200-4249: partition tests, 4275-4299: join).

use super::scheduling::{HostProcess, cluster_token};
use crate::support::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request on a new connection: `Ok(())` for a 200, `Err(what)` otherwise.
fn get(addr: &str, host: &str) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    match out.starts_with("HTTP/1.1 200") {
        true => Ok(()),
        false => Err(out.lines().next().unwrap_or("empty response").to_string()),
    }
}

/// Jobs up per host id.
fn up_per_host(s: &TestServer, app: &str) -> std::collections::BTreeMap<String, usize> {
    let c = s.client();
    let jobs = block_on(async move { c.jobs(app).await.unwrap() });
    let mut m = std::collections::BTreeMap::new();
    for j in jobs {
        if j.state == slipway_types::JobState::Up {
            *m.entry(j.host_id.unwrap_or_default()).or_insert(0) += 1;
        }
    }
    m
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_host_drained_under_load_moves_its_jobs_with_no_failed_request_and_omni_jobs_run_on_each_host()
{
    if skip_unless_root("a_host_drained_under_load_moves_its_jobs_with_no_failed_request") {
        return;
    }
    let n = 4250 + (std::process::id() % 12) * 2;
    let hs = HostServer::start(
        n,
        &loopback_router(&[
            "--discovery-listen",
            "127.0.0.1:0",
            // The host process registers its loopback API address.
            "--discovery-allow",
            "127.0.0.1",
            // The gate asks the router whether it has a new job (else it waits its timeout).
            "--router-admin",
            "127.0.0.1:0",
        ]),
    );
    let s = &hs.s;
    let discovery = format!("http://{}", logged_addr(s, "discovery API on http://"));
    let remote = HostProcess::start(s.dir.path(), n + 1, &discovery, &s.key(), &cluster_token(s));
    let remote_id = remote.registered_id();
    let local_id = std::fs::read_to_string(s.dir.path().join("data/host/host-id"))
        .unwrap()
        .trim()
        .to_string();
    let router = logged_addr(s, "router: HTTP on ");
    wait_until(
        "the remote host to be followed",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(s.dir.path().join("server.log"))
                .unwrap_or_default()
                .contains("following a registered host")
        },
    );

    s.create_app("dr");
    let c = s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                // No signal handler: SIGTERM ends httpd at once, requests in flight or not, so
                // only draining before the stop keeps requests from failing.
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && \
                     exec httpd -f -p 8080 -h /tmp/www"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release("dr", &r).await.unwrap();
        c.set_app_release("dr", r.id).await.unwrap();
    });
    s.ok(&["-a", "dr", "scale", "web=2"]);
    wait_until("a job up on each host", Duration::from_secs(60), || {
        let m = up_per_host(s, "dr");
        m.get(&remote_id) == Some(&1) && m.get(&local_id) == Some(&1)
    });
    // Both jobs onto the remote host first (drain the local one, then undrain it): then the
    // drain under load moves every job the app has, so only "start new, route, then stop
    // old" keeps it answering.
    s.ok(&["host", "drain", &local_id]);
    assert_eq!(up_per_host(s, "dr").get(&remote_id), Some(&2));
    s.ok(&["host", "undrain", &local_id]);
    let host = format!("dr.{DOMAIN}");
    wait_until(
        "the router to serve the app",
        Duration::from_secs(20),
        || get(&router, &host).is_ok(),
    );

    // The load: 3 clients, a connection per request, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            let (router, host) = (router.clone(), host.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(&router, &host) {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = s.ok(&["host", "drain", &remote_id]);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let served = served.load(Ordering::Relaxed);
    eprintln!(
        "drain took {took:?}; {served} requests served, {} failed:\n{out}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during the drain: {failures:?}"
    );
    assert!(served >= 100, "only {served} requests in the drain");
    assert!(out.contains("moved 2 of 2 jobs"), "{out}");
    let m = up_per_host(s, "dr");
    assert_eq!(m.get(&local_id), Some(&2), "{m:?}");
    assert!(!m.contains_key(&remote_id), "{m:?}");

    let listed = s.ok(&["host", "list", "--json"]);
    let hosts: Vec<slipway_types::HostInfo> = serde_json::from_str(&listed).unwrap();
    let state = |id: &str| hosts.iter().find(|h| h.id == id).map(|h| h.state);
    assert_eq!(
        state(&remote_id),
        Some(slipway_types::HostState::Drained),
        "{listed}"
    );
    assert_eq!(state(&local_id), Some(slipway_types::HostState::Up));
    // New jobs do not go there while it is drained.
    s.ok(&["-a", "dr", "scale", "web=3"]);
    wait_until("three jobs up", Duration::from_secs(60), || {
        up_per_host(s, "dr").values().sum::<usize>() == 3
    });
    assert!(!up_per_host(s, "dr").contains_key(&remote_id));

    // Unknown host: a clear 404, not a drain of nothing.
    let err = s.fails(&["host", "drain", "no-such-host"]);
    assert!(err.contains("host no-such-host not found"), "{err}");

    // An omni process type: its count is per host, on the hosts that take jobs (not the
    // drained one). `scale` waits for it as such.
    s.create_app("om");
    let c = s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "agent".into(),
            slipway_types::ProcessType {
                args: vec!["sh".into(), "-c".into(), "exec sleep 3600".into()],
                omni: true,
                ..Default::default()
            },
        );
        let r = c.create_release("om", &r).await.unwrap();
        c.set_app_release("om", r.id).await.unwrap();
    });
    s.ok(&["-a", "om", "scale", "agent=1"]);
    let om = up_per_host(s, "om");
    assert_eq!(om, [(local_id.clone(), 1)].into(), "{om:?}");

    // Undrained, it takes jobs again, and gets its omni job.
    s.ok(&["host", "undrain", &remote_id]);
    s.ok(&["-a", "dr", "scale", "web=7"]);
    wait_until(
        "jobs on the undrained host",
        Duration::from_secs(60),
        || {
            let m = up_per_host(s, "dr");
            m.values().sum::<usize>() == 7 && m.get(&remote_id).is_some_and(|n| *n >= 1)
        },
    );
    wait_until("an omni job on each host", Duration::from_secs(30), || {
        up_per_host(s, "om") == [(local_id.clone(), 1), (remote_id.clone(), 1)].into()
    });

    // The host goes (its process dies): its web jobs are replaced on the other host, its omni
    // job is not (the other host has its own already).
    drop(remote);
    wait_until(
        "the lost host's web jobs replaced",
        Duration::from_secs(30),
        || up_per_host(s, "dr") == [(local_id.clone(), 7)].into(),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(up_per_host(s, "om"), [(local_id.clone(), 1)].into());
}
