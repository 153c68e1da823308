//! `slipway server` runs discovery and the router: a new app's default route reaches an
//! instance registered over discovery's HTTP API, through the router's HTTP port.

use crate::support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The A records of `name` from the DNS server at `addr` (a hand-made query over UDP).
fn dns_a(addr: &str, name: &str) -> Vec<[u8; 4]> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&q, addr).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("a DNS answer");
    let r = &buf[..n];
    assert_eq!(&r[..2], &[0x12, 0x34]);
    assert_eq!(r[3] & 0x0f, 0, "rcode NOERROR");
    let answers = u16::from_be_bytes([r[6], r[7]]) as usize;
    // Skip the question (same bytes as ours), then read each answer.
    let mut i = q.len();
    let mut out = Vec::new();
    for _ in 0..answers {
        // The owner name: labels up to a zero byte, or a 2-byte compression pointer.
        while r[i] != 0 && r[i] & 0xc0 == 0 {
            i += 1 + r[i] as usize;
        }
        i += if r[i] == 0 { 1 } else { 2 };
        let rtype = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = u16::from_be_bytes([r[i + 8], r[i + 9]]) as usize;
        i += 10;
        if rtype == 1 && len == 4 {
            out.push([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        }
        i += len;
    }
    out
}

/// Repeats `f` until its answer starts with `prefix` (5 s at most).
fn until(f: impl Fn() -> String, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = f();
        if resp.starts_with(prefix) {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "expected {prefix:?}, got: {resp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request on a new connection; the whole response as text.
fn http(addr: &str, method: &str, path: &str, host: &str, body: &str) -> String {
    http_as(addr, method, path, host, "", body)
}

/// [`http`] with `Authorization: Bearer KEY` (discovery's API needs the API key).
fn http_as(addr: &str, method: &str, path: &str, host: &str, key: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {key}\r\n")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn app_default_route_reaches_a_registered_instance_through_the_router() {
    let server = TestServer::start_with(&[
        "--no-host".into(),
        "--router-ip".into(),
        "127.0.0.1".into(),
        "--http-port".into(),
        "0".into(),
        "--https-port".into(),
        "0".into(),
        "--discovery-listen".into(),
        "127.0.0.1:0".into(),
        "--dns-listen".into(),
        "127.0.0.1:0".into(),
        "--router-admin".into(),
        "127.0.0.1:0".into(),
        // The test's backend listens on loopback, which discovery's API refuses by default.
        "--discovery-allow".into(),
        "127.0.0.0/8".into(),
    ]);
    let router = logged_addr(&server, "router: HTTP on ");
    let admin = logged_addr(&server, "router: admin (metrics) on http://");
    let discovery = logged_addr(&server, "discovery API on http://");
    let dns = logged_addr(&server, "discovery DNS on ");

    // A backend: answers every request with a fixed body.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in backend.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello shop\n",
            );
        }
    });

    server.create_app("shop");
    let host = format!("shop.{DOMAIN}");
    // The route arrives through the store's event stream (milliseconds); no instance yet.
    let resp = until(|| http(&router, "GET", "/", &host, ""), "HTTP/1.1 503");
    assert!(
        resp.contains("no backend is up for service shop-web"),
        "{resp}"
    );

    let reg = http_as(
        &discovery,
        "PUT",
        "/services/shop-web/instances/job1",
        "discovery",
        &server.key(),
        &format!("{{\"addr\":\"{backend_addr}\"}}"),
    );
    assert!(reg.starts_with("HTTP/1.1 200"), "{reg}");
    let resp = until(|| http(&router, "GET", "/", &host, ""), "HTTP/1.1 200");
    assert!(resp.ends_with("hello shop\n"), "{resp}");
    // The same instance in DNS: one A record, 127.0.0.1.
    let answer = dns_a(&dns, "shop-web.discover.");
    assert_eq!(
        answer,
        vec![[127, 0, 0, 1]],
        "A records of shop-web.discover."
    );
    let resp = http(&router, "GET", "/", "unknown.example", "");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let metrics = http(&admin, "GET", "/metrics", "admin", "");
    assert!(
        metrics
            .contains("slipway_router_requests_total{route=\"shop.apps.test/\",status=\"2xx\"} 1"),
        "{metrics}"
    );
}

/// Item 6 of the issue, on real runc: a job of the app's web process is registered in
/// discovery once it runs, the router sends the app's domain to it, and scaling to 0 removes it.
#[test]
fn a_web_job_is_served_by_the_router_leaves_it_when_killed_and_on_scale_down() {
    if skip_unless_root("a_web_job_is_served_by_the_router_leaves_it_when_killed_and_on_scale_down")
    {
        return;
    }
    let n = 600 + std::process::id() % 200;
    let host = HostServer::start(n, &loopback_router(&["--discovery-listen", "127.0.0.1:0"]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let discovery = logged_addr(server, "discovery API on http://");
    server.create_app("hello");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = server.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("mkdir -p /tmp/www && echo hello-from-job > /tmp/www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait # {n}"),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release("hello", &r).await.unwrap();
        c.set_app_release("hello", r.id).await.unwrap();
    });
    let host = format!("hello.{DOMAIN}");
    server.ok(&["-a", "hello", "scale", "web=1"]);
    let resp = until(|| http(&router, "GET", "/", &host, ""), "HTTP/1.1 200");
    assert!(resp.contains("hello-from-job"), "{resp}");

    // kill -9 of the job's init: its instance leaves discovery (well within the 10 s TTL), and
    // the job the scheduler starts instead is served.
    let key = server.key();
    let ids = |d: &str| -> Vec<String> {
        let resp = http_as(
            d,
            "GET",
            "/services/hello-web/instances",
            "discovery",
            &key,
            "",
        );
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("[]");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = ids(&discovery);
    assert_eq!(first.len(), 1, "{first:?}");
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &format!("wait # {n}$")])
        .status()
        .unwrap();
    assert!(
        killed.success(),
        "the job's init process was found and killed"
    );
    let t0 = Instant::now();
    while ids(&discovery).contains(&first[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the killed job stayed registered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("killed job left discovery after {:?}", t0.elapsed());
    let resp = until(|| http(&router, "GET", "/", &host, ""), "HTTP/1.1 200");
    assert!(resp.contains("hello-from-job"), "{resp}");

    server.ok(&["-a", "hello", "scale", "web=0"]);
    let resp = until(|| http(&router, "GET", "/", &host, ""), "HTTP/1.1 503");
    assert!(
        resp.contains("no backend is up for service hello-web"),
        "{resp}"
    );
}
