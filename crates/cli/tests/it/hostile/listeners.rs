//! Hostile tests: listeners (see mod.rs). Discovery's API (`:1111`), TCP routes, the control
//! listeners' timeouts (`:7070` API, `:1111` discovery, `:1112` the router's admin endpoint)
//! and the connection caps, against a live `slipway server` over raw sockets.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request on a new connection (closed after it); the whole response.
fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Waits up to `within` for the server to close `s`: (closed, what it sent).
fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, String::from_utf8_lossy(&got).into());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&got).into());
            }
            Err(_) => return (false, String::from_utf8_lossy(&got).into()),
        }
    }
}

fn with_listeners(more: &[&str]) -> TestServer {
    let mut flags = vec![
        "--discovery-listen",
        "127.0.0.1:0",
        "--router-admin",
        "127.0.0.1:0",
        "--dns-listen",
        "none",
    ];
    flags.extend_from_slice(more);
    let mut args = vec!["--no-host".to_string()];
    args.extend(loopback_router(&flags));
    TestServer::start_with(&args)
}

/// Before: `PUT /services/APP-web/instances/x {"addr":"127.0.0.1:1111"}` with no key was taken,
/// and the router served discovery's own API on the app's domain.
#[test]
fn discovery_api_takes_no_request_without_the_key_nor_the_hosts_own_addresses() {
    let s = with_listeners(&[]);
    let discovery = logged_addr(&s, "discovery API on http://");
    let router = logged_addr(&s, "router: HTTP on ");
    s.create_app("evil");
    let body = format!("{{\"addr\":\"{discovery}\"}}");
    let path = "/services/evil-web/instances/x";

    let resp = http(&discovery, "PUT", path, None, &body);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let resp = http(&discovery, "GET", "/services/evil-web/instances", None, "");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let resp = http(&discovery, "PUT", path, Some("wrong"), &body);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    let key = s.key();
    let resp = http(&discovery, "PUT", path, Some(&key), &body);
    assert!(resp.starts_with("HTTP/1.1 422"), "{resp}");
    assert!(
        resp.contains("loopback") && resp.contains(&discovery),
        "{resp}"
    );
    // Nothing registered: the app's domain has no backend, and is not discovery's API.
    let mut s2 = TcpStream::connect(&router).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s2,
        "GET /services/evil-web/instances HTTP/1.1\r\nHost: evil.{DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s2.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    let list = http(
        &discovery,
        "GET",
        "/services/evil-web/instances",
        Some(&key),
        "",
    );
    assert!(
        list.starts_with("HTTP/1.1 200") && list.ends_with("[]"),
        "{list}"
    );
}

/// A port some other process holds, inside a range made around it.
fn held_port_and_range() -> (std::net::TcpListener, u16, String) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let range = format!("{}-{}", port - 5, port + 5);
    (held, port, range)
}

/// Before: `route add tcp -p 22` made the router listen on 0.0.0.0:22, and ports 80 and 7070
/// were accepted with a WARN in the log only.
#[test]
fn tcp_routes_stay_in_their_range_and_off_ports_other_processes_hold() {
    let (held, held_port, range) = held_port_and_range();
    let mut s = with_listeners(&["--tcp-ports", &range]);
    let app = s.create_app("tcpr");
    let api_port = s.url.rsplit(':').next().unwrap().to_string();
    for p in ["22", "80", &api_port] {
        let err = s.fails(&["route", "-a", &app, "add", "tcp", "-p", p]);
        assert!(
            err.contains(&format!("port {p} is outside the TCP route range {range}")),
            "-p {p}: {err}"
        );
    }
    let err = s.fails(&[
        "route",
        "-a",
        &app,
        "add",
        "tcp",
        "-p",
        &held_port.to_string(),
    ]);
    assert!(
        err.contains("conflict") && err.contains("in use by another process"),
        "{err}"
    );
    // Port 0: a free one in the range, never the held one.
    let out = s.ok(&["route", "-a", &app, "add", "tcp"]);
    let port: u16 = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(port, held_port);
    assert!(range.starts_with(&(held_port - 5).to_string()) && port.abs_diff(held_port) <= 5);
    let table = s.ok(&["route", "-a", &app]);
    assert!(
        table.contains("STATE") && table.contains("listening"),
        "{table}"
    );

    // The route's port taken by another process while the server is down: it restarts, the
    // listener fails, and `slipway route` says so.
    drop(held);
    s.kill();
    let thief = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    s.restart();
    let table = s.ok(&["route", "-a", &app]);
    assert!(
        table.contains("failed:") && table.contains("in use by another process"),
        "{table}"
    );
    let json = s.json(&["route", "-a", &app, "--json"]);
    assert!(
        json.to_string().contains("\"listener\":\"failed: "),
        "{json}"
    );
    drop(thief);
}

/// Sends half a request head and checks the listener at `addr` closes the connection within
/// the (1 s) header timeout plus slack; then the same for an idle kept-alive connection.
fn closes_slow_and_idle_clients(addr: &str, what: &str) {
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .unwrap();
    let (closed, got) = closed_within(&mut c, Duration::from_secs(10));
    assert!(
        closed,
        "{what}: a half-sent request stayed open 10 s: {got:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "{what}: closed after {:?}",
        t0.elapsed()
    );
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{what}");
    let t0 = Instant::now();
    let (closed, _) = closed_within(&mut c, Duration::from_secs(10));
    assert!(
        closed,
        "{what}: an idle kept-alive connection stayed open 10 s"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "{what}: idle connection closed after {:?}",
        t0.elapsed()
    );
}

/// Reads `s` until `needle` appears, failing if it ends first or 10 s pass.
fn read_until(s: &mut TcpStream, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: no {needle:?} within 10 s: {}",
            String::from_utf8_lossy(&got)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "{what}: the stream ended ({other:?}) before {needle:?}: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Before: an idle or half-sent request on :7070, :1111 or :1112 stayed open 330 s and more.
/// Streams are responses, not idle connections: they outlive the timeout.
#[test]
fn control_listeners_close_slow_and_idle_clients_but_keep_their_streams() {
    let s = with_listeners(&["--header-timeout", "1"]);
    let api = s.url.trim_start_matches("http://").to_string();
    let discovery = logged_addr(&s, "discovery API on http://");
    let admin = logged_addr(&s, "router: admin (metrics) on http://");
    closes_slow_and_idle_clients(&api, "the API");
    closes_slow_and_idle_clients(&discovery, "discovery");
    closes_slow_and_idle_clients(&admin, "the router's admin endpoint");

    let key = s.key();
    let open = |addr: &str, path: &str| {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        c
    };
    let mut watch = open(&discovery, "/events");
    let mut events = open(&api, "/events");
    read_until(&mut watch, "HTTP/1.1 200", "discovery's watch");
    read_until(&mut events, "HTTP/1.1 200", "the API's event stream");
    std::thread::sleep(Duration::from_secs(3));
    let resp = http(
        &discovery,
        "PUT",
        "/services/late-web/instances/x",
        Some(&key),
        "{\"addr\":\"10.250.0.9:8080\"}",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    read_until(
        &mut watch,
        "10.250.0.9:8080",
        "discovery's watch, 3 s past the timeout",
    );
    s.create_app("late");
    read_until(
        &mut events,
        "late",
        "the API's event stream, 3 s past the timeout",
    );
}

/// Before: 2,000 idle connections to the router took 2,000 descriptors of the one process
/// (shared with the API and the agent) with no cap, under a soft limit left as it was.
#[test]
fn the_router_and_the_api_cap_their_connections_and_the_fd_limit_is_raised() {
    // The server inherits a soft limit of 1024 (nextest runs each test in its own process).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let low = libc::rlimit {
        rlim_cur: 1024.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let s = with_listeners(&["--router-max-connections", "4"]);
    let router = logged_addr(&s, "router: HTTP on ");
    let logged = logged_addr(&s, "open files limit ");
    assert_eq!(
        logged,
        lim.rlim_max.to_string(),
        "the soft limit is raised to the hard one"
    );

    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&router).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The router accepts on one listener per core and the kernel spreads connections
        // over them, so a later connection can be accepted before an earlier one: one of the
        // four may have been the refused one. Such a one is opened again until four hold.
        for s in idle.iter_mut() {
            s.set_nonblocking(true).unwrap();
            let gone = !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if gone {
                *s = TcpStream::connect(&router).unwrap();
            } else {
                s.set_nonblocking(false).unwrap();
            }
        }
        let mut c = TcpStream::connect(&router).unwrap();
        let (closed, got) = closed_within(&mut c, Duration::from_secs(2));
        if closed && got.starts_with("HTTP/1.1 503") {
            assert!(got.contains("too many open connections"), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 5th connection was not refused: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(&router).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (_, got) = closed_within(&mut c, Duration::from_secs(5));
        if got.starts_with("HTTP/1.1 404") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);

    let s = TestServer::start_with(&[
        "--no-host".into(),
        "--no-router".into(),
        "--api-max-connections".into(),
        "3".into(),
    ]);
    let api = s.url.trim_start_matches("http://").to_string();
    let _idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&api).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(&api).unwrap();
        let (closed, got) = closed_within(&mut c, Duration::from_secs(5));
        if closed && got.starts_with("HTTP/1.1 503") {
            assert!(got.contains("connections open"), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 4th API connection was not refused: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
