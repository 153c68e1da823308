//! The edges of `host drain` and `cluster token` (issue 18 review): the routes need the API
//! key, host ids in the URL are checked (400) or unknown (404), and draining the only host
//! stops nothing and says so at once instead of waiting out the timeout.
//! Test numbers `n`: 4300-4319.

use crate::support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One raw HTTP request to the server; `(status, body)`.
fn call(s: &TestServer, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn drain_and_token_routes_need_the_key_and_check_host_ids() {
    let s = TestServer::start();
    let key = s.key();
    for (method, path) in [
        ("GET", "/cluster/token"),
        ("POST", "/hosts/h1/drain"),
        ("GET", "/hosts/h1/drain"),
        ("DELETE", "/hosts/h1/drain"),
    ] {
        let (status, body) = call(&s, method, path, None);
        assert_eq!(status, 401, "{method} {path} without the key: {body}");
        assert!(!body.contains("token\":\""), "{body}");
        let (status, _) = call(&s, method, path, Some("wrong"));
        assert_eq!(status, 401, "{method} {path} with a wrong key");
    }
    // The token: to the key's holder, 256 random bits.
    let (status, body) = call(&s, "GET", "/cluster/token", Some(&key));
    assert_eq!(status, 200, "{body}");
    let token = s.ok(&["cluster", "token"]).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert!(body.contains(&token));
    // Junk ids: 400 with the API's error body; an etcd key path cannot be built from them.
    let long = "h".repeat(129);
    for id in ["a%2Fb", "..%2Fx", "a%20b", "a%0Ab", long.as_str(), "%C3%A9"] {
        let (status, body) = call(&s, "POST", &format!("/hosts/{id}/drain"), Some(&key));
        assert_eq!(status, 400, "{id}: {body}");
        assert!(
            body.contains("\"code\"") && body.contains("invalid host id"),
            "{body}"
        );
    }
    // Unknown hosts: 404, for drain, status and undrain, and through the CLI.
    for method in ["POST", "GET", "DELETE"] {
        let (status, body) = call(&s, method, "/hosts/nope/drain", Some(&key));
        assert_eq!(status, 404, "{method}: {body}");
        assert!(body.contains("host nope not found"), "{body}");
    }
    let err = s.fails(&["host", "drain", "nope"]);
    assert!(err.contains("host nope not found"), "{err}");
    let err = s.fails(&["host", "undrain", "nope"]);
    assert!(err.contains("host nope not found"), "{err}");
}

/// Draining the only host: its jobs have nowhere to go. Nothing is stopped, and the CLI says
/// so at once (it used to wait its whole 300 s timeout, printing nothing).
#[test]
fn draining_the_only_host_stops_nothing_and_says_so_at_once() {
    if skip_unless_root("draining_the_only_host_stops_nothing_and_says_so_at_once") {
        return;
    }
    let n = 4300 + std::process::id() % 20;
    let hs = HostServer::start(n, &[]);
    let s = &hs.s;
    let host = std::fs::read_to_string(s.dir.path().join("data/host/host-id"))
        .unwrap()
        .trim()
        .to_string();
    s.create_app("alone");
    let c = s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "worker".into(),
            slipway_types::ProcessType {
                args: vec!["sleep".into(), "1000".into()],
                ..Default::default()
            },
        );
        let r = c.create_release("alone", &r).await.unwrap();
        c.set_app_release("alone", r.id).await.unwrap();
    });
    s.ok(&["-a", "alone", "scale", "worker=1"]);
    let up = |s: &TestServer| -> Vec<String> {
        let c = s.client();
        block_on(async move { c.jobs("alone").await.unwrap() })
            .into_iter()
            .filter(|j| j.state == slipway_types::JobState::Up)
            .map(|j| j.id)
            .collect()
    };
    let before = up(s);
    assert_eq!(before.len(), 1);

    let t = Instant::now();
    let err = s.fails(&["host", "drain", &host]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("no other host takes jobs"), "{err}");
    assert!(err.contains("nothing was stopped"), "{err}");
    // Recorded, and its job still the same one, running, a while later.
    let listed = s.ok(&["host", "list"]);
    assert!(listed.contains("drained"), "{listed}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(up(s), before);
    s.ok(&["host", "undrain", &host]);
    let listed = s.ok(&["host", "list"]);
    assert!(!listed.contains("drained"), "{listed}");
    // Undrain of a host that is not drained: fine, nothing changes.
    s.ok(&["host", "undrain", &host]);
    assert_eq!(up(s), before);
}
