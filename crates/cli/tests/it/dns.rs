//! Containers resolve service names through discovery's DNS (issue 6), on real runc with the
//! real `slipway server`: by default the DNS serves the jobs' bridge address on port 53 and every
//! container's /etc/resolv.conf names it; other names are forwarded to `--dns-upstream` (here a
//! stand-in resolver on loopback, which containers could not reach themselves). Root only.

use crate::support::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A stand-in for the host's resolver on loopback UDP: every A query is answered with
/// 192.0.2.7 (TEST-NET-1), other types with no records. Returns its address.
fn stand_in_upstream() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            // Header (12 bytes), then the question: labels up to a zero byte, type, class.
            let mut i = 12;
            while i < n && q[i] != 0 {
                i += 1 + q[i] as usize;
            }
            if i + 5 > n {
                continue;
            }
            let question = &q[12..i + 5];
            let is_a = q[i + 1..i + 3] == [0, 1];
            let mut r = vec![q[0], q[1], 0x81, 0x80, 0, 1, 0, is_a as u8, 0, 0, 0, 0];
            r.extend_from_slice(question);
            if is_a {
                // Name: a pointer to the question's name (offset 12); A, IN, TTL 60, 4 bytes.
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

/// `slipway -a APP run -- sh -c SCRIPT` in a new container; its stdout (stderr appended), whatever
/// the exit code (busybox `nslookup` exits 1 when the AAAA half finds nothing).
fn run_sh(s: &TestServer, app: &str, script: &str) -> String {
    let out = s
        .cmd()
        .args(["-a", app, "run", "--", "sh", "-c", script])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The IPv4 addresses busybox `nslookup NAME` printed as answers (`Address: IP` lines; the
/// server's own line is `Address:\tIP:53` and does not parse).
fn nslookup(s: &TestServer, app: &str, name: &str) -> (Vec<Ipv4Addr>, String) {
    let out = run_sh(s, app, &format!("nslookup {name}"));
    let mut ips: Vec<Ipv4Addr> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Address:")?.trim().parse().ok())
        .collect();
    ips.sort();
    (ips, out)
}

/// The job IPs of a service's instances, from discovery's HTTP API.
fn instance_ips(discovery: &str, key: &str, service: &str) -> Vec<Ipv4Addr> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(discovery).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /services/{service}/instances HTTP/1.1\r\nHost: discovery\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("[]");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let mut ips: Vec<Ipv4Addr> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["addr"].as_str()?.parse::<SocketAddr>().ok())
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// Sets the app's release: `web` is busybox httpd on 8080 serving `body`.
fn web_app(s: &TestServer, name: &str, body: &str) {
    s.create_app(name);
    block_on(async {
        let c = s.client();
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("mkdir -p /tmp/www && echo {body} > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release(name, &r).await.unwrap();
        c.set_app_release(name, r.id).await.unwrap();
    });
}

/// An app whose release has no process types: a place for one-off `slipway run` jobs.
fn client_app(s: &TestServer, name: &str) {
    s.create_app(name);
    block_on(async {
        let c = s.client();
        let r = c
            .create_release(name, &slipway_types::NewRelease::default())
            .await
            .unwrap();
        c.set_app_release(name, r.id).await.unwrap();
    });
}

/// Repeats `f` until `done` holds for its result (10 s at most); returns the last result.
fn until<T: std::fmt::Debug>(f: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containers_resolve_services_leaders_and_forwarded_names_through_discovery_dns() {
    if skip_unless_root(
        "containers_resolve_services_leaders_and_forwarded_names_through_discovery_dns",
    ) {
        return;
    }
    let n = 2600 + std::process::id() % 50;
    let upstream = stand_in_upstream();
    let hs = HostServer::start(
        n,
        &loopback_router(&[
            "--discovery-listen",
            "127.0.0.1:0",
            "--router-admin",
            "127.0.0.1:0",
            "--dns-upstream",
            &upstream.to_string(),
        ]),
    );
    let s = &hs.s;
    let discovery = logged_addr(s, "discovery API on http://");
    // The default: the bridge's gateway (HostServer's subnet 100.X.Y.0/24), port 53.
    let gateway = Ipv4Addr::new(100, (220 + n / 256) as u8, (n % 256) as u8, 1);
    assert_eq!(
        logged_addr(s, "discovery DNS on "),
        format!("{gateway}:53"),
        "the DNS listens on the bridge's address by default"
    );
    // The host lets containers reach it there, and the rule says so.
    let input = std::process::Command::new("nft")
        .args(["list", "chain", "ip", &format!("slws{n}"), "input"])
        .output()
        .unwrap();
    let input = String::from_utf8_lossy(&input.stdout);
    for proto in ["udp", "tcp"] {
        assert!(
            input.contains(&format!("ip daddr {gateway} {proto} dport 53 accept")),
            "{input}"
        );
    }

    web_app(s, "dnsweb", "hello-from-dnsweb");
    client_app(s, "dnsclient");
    s.ok(&["-a", "dnsweb", "scale", "web=2"]);
    let web = until(
        || instance_ips(&discovery, &s.key(), "dnsweb-web"),
        |v| v.len() == 2,
    );
    assert_eq!(web.len(), 2, "two web instances in discovery: {web:?}");

    // Every container's /etc/resolv.conf names the DNS, read-only.
    let conf = run_sh(
        s,
        "dnsclient",
        "cat /etc/resolv.conf; echo x >> /etc/resolv.conf && echo WRITABLE",
    );
    assert!(conf.contains(&format!("nameserver {gateway}\n")), "{conf}");
    assert!(conf.contains("search discover"), "{conf}");
    assert!(!conf.contains("WRITABLE"), "{conf}");

    // APP-web.discover: both jobs; leader.APP-web.discover: one of them.
    let (ips, out) = nslookup(s, "dnsclient", "dnsweb-web.discover");
    assert_eq!(ips, web, "nslookup dnsweb-web.discover:\n{out}");
    let (ips, out) = nslookup(s, "dnsclient", "leader.dnsweb-web.discover");
    assert!(
        ips.len() == 1 && web.contains(&ips[0]),
        "nslookup leader.dnsweb-web.discover:\n{out}"
    );
    // A name only the upstream knows is forwarded there (from the host: the container could
    // not reach 127.0.0.1 on the host).
    let (ips, out) = nslookup(s, "dnsclient", "outside.example");
    assert_eq!(
        ips,
        [Ipv4Addr::new(192, 0, 2, 7)],
        "nslookup outside.example:\n{out}"
    );
    // The libc resolver (wget's getaddrinfo) finds the service, and the service answers.
    let page = run_sh(s, "dnsclient", "wget -qO- http://dnsweb-web.discover:8080/");
    assert_eq!(page.trim(), "hello-from-dnsweb", "{page}");
    // With the search domain, the bare service name works too.
    let page = run_sh(s, "dnsclient", "wget -qO- http://dnsweb-web:8080/");
    assert_eq!(page.trim(), "hello-from-dnsweb", "{page}");

    // Scaled down to one job, the name has one address.
    s.ok(&["-a", "dnsweb", "scale", "web=1"]);
    let (ips, out) = until(
        || nslookup(s, "dnsclient", "dnsweb-web.discover"),
        |(ips, _)| ips.len() == 1,
    );
    assert_eq!(ips.len(), 1, "after scale web=1:\n{out}");
    assert!(web.contains(&ips[0]), "{ips:?} is one of {web:?}");
    assert_eq!(instance_ips(&discovery, &s.key(), "dnsweb-web"), ips);
    s.ok(&["-a", "dnsweb", "scale", "web=0"]);
}

#[test]
fn with_dns_listen_none_containers_keep_the_hosts_resolv_conf() {
    if skip_unless_root("with_dns_listen_none_containers_keep_the_hosts_resolv_conf") {
        return;
    }
    let n = 2650 + std::process::id() % 50;
    let hs = HostServer::start(
        n,
        &loopback_router(&[
            "--discovery-listen",
            "127.0.0.1:0",
            "--router-admin",
            "127.0.0.1:0",
            "--dns-listen",
            "none",
        ]),
    );
    let s = &hs.s;
    client_app(s, "plain");
    let conf = run_sh(s, "plain", "cat /etc/resolv.conf");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    assert_eq!(conf, host);
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(!log.contains("discovery DNS on "), "{log}");
    assert!(!s.dir.path().join("data/host/resolv.conf").exists());
}
