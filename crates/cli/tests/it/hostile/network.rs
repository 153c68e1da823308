//! Hostile tests: network (see mod.rs). Who may talk to whom on the jobs' bridge: a job may send
//! only as itself (its MAC, its IP), reaches the host only for DNS and the router, and jobs of a
//! network-isolated app are reachable only by the router and the app's own jobs.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn n(offset: u32) -> u32 {
    3100 + offset + std::process::id() % 10 * 5
}

fn gateway(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(100, (220 + n / 256) as u8, (n % 256) as u8, 1)
}

/// Sets the app's release: `web` is busybox httpd on 8080 serving `body`; its command ends with
/// `# MARKER` so the test can find its process.
fn web_app(s: &TestServer, name: &str, body: &str, marker: &str) {
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
                    format!(
                        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html; \
                         trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait # {marker}"
                    ),
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

/// `slipway -a APP run -- sh -c SCRIPT`: stdout then stderr, whatever the exit code.
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

/// The job IPs of a service's instances, from discovery's HTTP API.
fn instance_ips(discovery: &str, key: &str, service: &str) -> Vec<Ipv4Addr> {
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

/// Polls `f` until `done` (20 s at most); returns the last value.
fn until<T>(f: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = f();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 GET through the router at `addr` for `host`; the whole response ("" if the
/// connection failed).
fn get(addr: &str, host: &str) -> String {
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = c.write_all(req.as_bytes());
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    resp
}

/// The host's neighbour entry (`lladdr`) for `ip` on the bridge, if any.
fn neighbour_mac(bridge: &str, ip: Ipv4Addr) -> Option<String> {
    let out = Command::new("ip")
        .args(["neigh", "show", &ip.to_string(), "dev", bridge])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = out.split_whitespace();
    w.find(|x| *x == "lladdr")?;
    w.next().map(str::to_string)
}

/// The pid of the process whose command line ends with `# MARKER`.
fn pid_of(marker: &str) -> u32 {
    let out = Command::new("pgrep")
        .args(["-f", &format!("# {marker}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process of job {marker}"))
}

/// Listens on the host bridge with an `AF_PACKET` socket for `secs` seconds and prints, one per
/// line, the UDP payloads starting with `SLWTEST` it saw. Prints `ready` once listening.
const SNIFF: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    i = f.find(b"SLWTEST")
    if i >= 0:
        print(f[i:i + 40].split(b"\0")[0].decode(), flush=True)
"#;

/// Run inside the attacker's netns (as root, so with a raw socket whatever the job's
/// capabilities): claims `victim_ip` by gratuitous ARP (with the victim's MAC as source, then
/// with its own: the last one would leave the host's entry on the attacker), and sends UDP to the gateway once from its own IP and once from the victim's.
const FORGE: &str = r#"
import socket, struct, sys, time
victim_ip, victim_mac, own_ip, gw_ip, gw_mac, tag = sys.argv[1:7]
ip = socket.inet_aton
mac = lambda m: bytes.fromhex(m.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
own_mac = s.getsockname()[4]
def garp(src_mac, op):
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + ip(victim_ip) + b"\xff" * 6 + ip(victim_ip)
    return b"\xff" * 6 + src_mac + b"\x08\x06" + arp
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    return ~(t + (t >> 16)) & 0xffff
def udp(src_ip, payload):
    u = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 1, 0, 64, 17, 0, ip(src_ip), ip(gw_ip))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return mac(gw_mac) + own_mac + b"\x08\x00" + h + u
# For 2.5 s: the kernel ignores ARP for an entry updated within the last second (locktime).
for _ in range(10):
    for op in (1, 2):
        s.send(garp(mac(victim_mac), op))
        s.send(garp(own_mac, op))
    s.send(udp(own_ip, ("SLWTEST-LEGIT-" + tag).encode()))
    s.send(udp(victim_ip, ("SLWTEST-SPOOF-" + tag).encode()))
    time.sleep(0.25)
print("sent", flush=True)
"#;

/// Finding 1: a job sends forged gratuitous ARP (and a spoofed-source packet) claiming another
/// app's job IP from a raw socket in its own netns. The host's neighbour entry must keep the
/// victim's MAC, the victim must stay reachable through the router, and the spoofed packet
/// must never reach the host while the job's own one does. Then, after a restart of the server
/// (the agent re-adopts the jobs), the jobs' filters are back.
#[test]
fn a_job_cannot_claim_another_apps_ip_with_forged_arp_or_spoofed_packets() {
    if skip_unless_root("a_job_cannot_claim_another_apps_ip_with_forged_arp_or_spoofed_packets") {
        return;
    }
    let n = n(0);
    let mut hs = HostServer::start(n, &loopback_router(&["--discovery-listen", "127.0.0.1:0"]));
    let (bridge, gw) = (format!("slws{n}"), gateway(n));
    let router = logged_addr(&hs.s, "router: HTTP on ");
    let discovery = logged_addr(&hs.s, "discovery API on http://");
    let s = &hs.s;
    web_app(s, "victim", "victim-ok", &format!("victim-{n}"));
    web_app(s, "attacker", "attacker", &format!("attacker-{n}"));
    s.ok(&["-a", "victim", "scale", "web=1"]);
    s.ok(&["-a", "attacker", "scale", "web=1"]);
    let victim_host = format!("victim.{DOMAIN}");
    let resp = until(|| get(&router, &victim_host), |r| r.contains("victim-ok"));
    assert!(resp.contains("victim-ok"), "{resp}");
    let victim = until(
        || instance_ips(&discovery, &s.key(), "victim-web"),
        |v| v.len() == 1,
    )[0];
    let attacker = until(
        || instance_ips(&discovery, &s.key(), "attacker-web"),
        |v| v.len() == 1,
    )[0];
    let victim_mac = slipway_host::runc::network::mac_for(victim);
    assert_eq!(
        neighbour_mac(&bridge, victim).as_deref(),
        Some(victim_mac.as_str()),
        "the router's request left the host a neighbour entry for the victim"
    );

    let mut sniffer = Command::new("python3")
        .args(["-c", SNIFF, &bridge, "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = sniffer.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    let pid = pid_of(&format!("attacker-{n}"));
    let forge = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["python3", "-c", FORGE])
        .args([
            &victim.to_string(),
            &victim_mac,
            &attacker.to_string(),
            &gw.to_string(),
            &slipway_host::runc::network::mac_for(gw),
            &n.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&forge.stdout).contains("sent"),
        "the forger ran: {}",
        String::from_utf8_lossy(&forge.stderr)
    );
    // The neighbour entry keeps the victim's MAC (polled: an accepted ARP is processed at once,
    // so a second's worth of looks would see it move).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            neighbour_mac(&bridge, victim).as_deref(),
            Some(victim_mac.as_str()),
            "the host's ARP entry for the victim's IP moved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen = String::new();
    out.read_to_string(&mut seen).unwrap();
    sniffer.wait().unwrap();
    assert!(
        seen.contains(&format!("SLWTEST-LEGIT-{n}")),
        "the attacker's own packets reach the host: {seen:?}"
    );
    assert!(
        !seen.contains("SLWTEST-SPOOF"),
        "a packet with the victim's source IP reached the host: {seen:?}"
    );
    for _ in 0..3 {
        let resp = get(&router, &victim_host);
        assert!(
            resp.contains("victim-ok"),
            "the victim is still served: {resp}"
        );
    }

    // A restarted server re-adopts the jobs and re-installs their filters.
    hs.s.restart();
    let ports = || {
        let out = Command::new("nft")
            .args(["list", "set", "bridge", &bridge, "port_ip"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let set = until(ports, |s| {
        s.contains(&format!("{victim}")) && s.contains(&format!("{attacker}"))
    });
    assert!(
        set.contains(&format!(". {victim}")) && set.contains(&format!(". {attacker}")),
        "the adopted jobs' filters are back: {set}"
    );
    // The log is appended to: the restarted router's address is the second one.
    let log = std::fs::read_to_string(hs.s.dir.path().join("server.log")).unwrap();
    let router: String = log
        .rsplit("router: HTTP on ")
        .next()
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    let resp = until(|| get(&router, &victim_host), |r| r.contains("victim-ok"));
    assert!(
        resp.contains("victim-ok"),
        "after the restart, via {router}: {resp}"
    );
}

/// Finding 2: a job reaches the host only for the gateway's DNS and the router's ports, not a
/// service listening on 0.0.0.0.
#[test]
fn a_job_reaches_the_hosts_dns_and_router_but_not_its_other_services() {
    if skip_unless_root("a_job_reaches_the_hosts_dns_and_router_but_not_its_other_services") {
        return;
    }
    let n = n(1);
    let hs = HostServer::start(
        n,
        &[
            "--router-ip",
            "0.0.0.0",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--discovery-listen",
            "127.0.0.1:0",
            "--router-admin",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let s = &hs.s;
    let gw = gateway(n);
    let router_port: u16 = logged_addr(s, "router: HTTP on ")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A host service on every address, on a random port.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // It answers a secret and notes that someone got it.
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = reached.clone();
    std::thread::spawn(move || {
        while let Ok((mut c, _)) = listener.accept() {
            r.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(b"host-secret\n");
        }
    });
    web_app(s, "hostweb", "hostweb-ok", &format!("hostweb-{n}"));
    client_app(s, "probe");
    s.ok(&["-a", "hostweb", "scale", "web=1"]);

    let t0 = Instant::now();
    let out = run_sh(
        s,
        "probe",
        &format!(
            "timeout 5 nc {gw} {port} </dev/null; \
             nslookup hostweb-web.discover; \
             timeout 5 wget -qO- --header 'Host: hostweb.{DOMAIN}' http://{gw}:{router_port}/"
        ),
    );
    assert!(
        !out.contains("host-secret"),
        "the job read from the host's 0.0.0.0:{port}: {out}"
    );
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "the host's listener accepted a connection from the job: {out}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    // DNS still answers (the web job's IP) and the router's published port is reachable.
    assert!(
        out.contains("Address: 100.") && out.contains("Name:"),
        "DNS from the job: {out}"
    );
    assert!(out.contains("hostweb-ok"), "the router from the job: {out}");
}

/// Finding 3: by default (flat) an app's job reaches another app's job directly; an isolated
/// app's jobs are reached only by the router and the app's own jobs. Its filter goes with its
/// last job.
#[test]
fn an_isolated_apps_jobs_are_reached_only_by_the_router_and_its_own_jobs() {
    if skip_unless_root("an_isolated_apps_jobs_are_reached_only_by_the_router_and_its_own_jobs") {
        return;
    }
    let n = n(2);
    let hs = HostServer::start(n, &loopback_router(&["--discovery-listen", "127.0.0.1:0"]));
    let s = &hs.s;
    let bridge = format!("slws{n}");
    let router = logged_addr(s, "router: HTTP on ");
    let discovery = logged_addr(s, "discovery API on http://");
    web_app(s, "flat", "flat-ok", &format!("flat-{n}"));
    web_app(s, "iso", "iso-ok", &format!("iso-{n}"));
    client_app(s, "other");
    s.ok(&["-a", "iso", "meta", "set", "network=isolated"]);
    s.ok(&["-a", "flat", "scale", "web=1"]);
    s.ok(&["-a", "iso", "scale", "web=2"]);
    let flat = until(
        || instance_ips(&discovery, &s.key(), "flat-web"),
        |v| v.len() == 1,
    );
    let iso = until(
        || instance_ips(&discovery, &s.key(), "iso-web"),
        |v| v.len() == 2,
    );
    assert_eq!((flat.len(), iso.len()), (1, 2), "{flat:?} {iso:?}");
    let fetch = |ip: Ipv4Addr| format!("timeout 3 wget -qO- http://{ip}:8080/ || echo UNREACHABLE");

    // The flat default: another app's job reaches it directly.
    let out = run_sh(s, "other", &fetch(flat[0]));
    assert!(out.contains("flat-ok"), "flat app from another app: {out}");
    // Isolated: another app's job cannot; the router and the app's own jobs can.
    let out = run_sh(s, "other", &fetch(iso[0]));
    assert!(
        out.contains("UNREACHABLE") && !out.contains("iso-ok"),
        "another app reached the isolated app's job: {out}"
    );
    let out = run_sh(s, "flat", &fetch(iso[1]));
    assert!(
        !out.contains("iso-ok"),
        "a flat app's job reached the isolated app's job: {out}"
    );
    let resp = until(
        || get(&router, &format!("iso.{DOMAIN}")),
        |r| r.contains("iso-ok"),
    );
    assert!(resp.contains("iso-ok"), "the router reaches it: {resp}");
    let out = run_sh(s, "iso", &format!("{}; {}", fetch(iso[0]), fetch(iso[1])));
    assert_eq!(
        out.matches("iso-ok").count(),
        2,
        "the app's own job reaches both: {out}"
    );

    // A value the agent does not know fails the job in words instead of leaving it open.
    s.ok(&["-a", "iso", "meta", "set", "network=isolate"]);
    let out = run_sh(s, "iso", "echo ran");
    assert!(
        !out.contains("ran\n") && out.contains("network=\"isolate\" is not understood"),
        "{out}"
    );

    // The filter goes with the jobs: no element, set or chain of the group is left.
    s.ok(&["-a", "iso", "scale", "web=0"]);
    s.ok(&["-a", "flat", "scale", "web=0"]);
    let table = || {
        let out = Command::new("nft")
            .args(["list", "table", "bridge", &bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let left = until(table, |t| !t.contains("elements") && !t.contains("chain g"));
    assert!(
        !left.contains("elements")
            && !left.contains("chain g")
            && left.contains("chain prerouting"),
        "the jobs' filters were left behind:\n{left}"
    );
}
