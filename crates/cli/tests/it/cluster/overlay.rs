//! The overlay network end to end (issue 18, docs/cluster.md "Overlay network"): three hosts on
//! the netns test LAN ([`super::lan::LanCluster`]), each `slipway server` with `--overlay
//! vxlan` (and again with `host-gw`), each host's /24 claimed in etcd (the harness gives host
//! `i` `--subnet 100.100.<i+1>.0/24`, which the overlay honours as the /24 asked for). No
//! harness routes: jobs reach other hosts' jobs only through the overlay.
//!
//! `scale web=6` puts 2 jobs on each host; a one-off job (`slipway run`) resolves
//! `web-web.discover` to all 6, in three /24s, and fetches a page from each of them by IP
//! (jobs on both other hosts among them) and by name; it cannot reach any host's agent API, the
//! controller API or etcd on their LAN addresses, but does reach the routers; its MTU is the LAN's
//! less VXLAN's 50 bytes. Every host's router serves all 6 jobs, and a TCP route too. An app
//! with `network=isolated` (one job per host) is served by every host's router, but no job of
//! another app reaches it, and of its own jobs only the one on the same host (the documented
//! limit: group membership is known per host).
//!
//! `n` range of this file: 4100-4199.

use super::lan::{API_PORT, Etcd, HOST_API_PORT, LanCluster, get};
use crate::support::{DOMAIN, block_on};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const N_BASE: u32 = 4100;
const TCP_PORT: u16 = 3000;

#[test]
fn three_hosts_on_a_vxlan_overlay_reach_each_others_jobs_by_ip_and_name_but_not_the_hosts() {
    end_to_end("vxlan", N_BASE + (std::process::id() % 15) * 3);
}

#[test]
fn three_hosts_with_host_gw_routes_reach_each_others_jobs_by_ip_and_name_but_not_the_hosts() {
    end_to_end("host-gw", N_BASE + 50 + (std::process::id() % 15) * 3);
}

/// Up jobs of `app`: id → host id.
fn up_jobs(c: &LanCluster, app: &str) -> BTreeMap<String, String> {
    let client = c.client(0);
    let app = app.to_string();
    let jobs = block_on(async move { client.jobs(&app).await }).unwrap_or_default();
    jobs.into_iter()
        .filter(|j| j.state.as_str() == "up" && j.process_type.is_some())
        .map(|j| (j.id, j.host_id.unwrap_or_default()))
        .collect()
}

/// The host of a job id (`<host id>-<uuid without dashes>`).
fn host_of(job_id: &str) -> &str {
    job_id.rsplit_once('-').map_or(job_id, |(h, _)| h)
}

/// The body of a 200 response, trimmed.
fn body_200(resp: &str) -> Option<String> {
    if !resp.starts_with("HTTP/1.1 200") && !resp.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(resp.split_once("\r\n\r\n")?.1.trim().to_string())
}

/// Gives `app` a release whose `web` jobs serve their job id on 8080.
fn release(c: &LanCluster, app: &str) {
    c.release_httpd(
        app,
        "mkdir -p /tmp/www && echo $SLIPWAY_JOB_ID > /tmp/www/index.html",
    );
}

/// `slipway -a APP run -- sh -c SCRIPT` (a one-off job on whichever host the scheduler picks):
/// stdout and stderr.
fn run_sh(c: &LanCluster, app: &str, script: &str) -> String {
    let out = c
        .cli(0)
        .timeout(Duration::from_secs(120))
        .args(["-a", app, "run", "--", "sh", "-c", script])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The non-empty values of `key=` in the output lines starting with `line_key=`.
fn field<'a>(out: &'a str, line_key: &str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(&format!("{line_key}=")))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// A script that prints the one-off job's id and MTU, then fetches `/` from every instance of
/// `service` by IP (busybox `wget -T` crashes: `timeout` bounds it instead).
fn fetch_every_instance(service: &str) -> String {
    format!(
        "echo me=x id=$SLIPWAY_JOB_ID mtu=$(cat /sys/class/net/eth0/mtu); \
         for ip in $(nslookup {service}.discover | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p'); do \
           echo ip=x addr=$ip page=$(timeout 3 wget -qO- http://$ip:8080/); done; "
    )
}

fn end_to_end(backend: &str, n: u32) {
    let t_start = Instant::now();
    // etcd on host 0 (as on real machines): jobs must not reach it either.
    let Some(mut c) = LanCluster::new(n, 3, Etcd::OnHosts(1)) else {
        return;
    };
    // A lease of 5 s: a dead host's /24 is released within the test.
    let overlay = ["--overlay", backend, "--overlay-lease-ttl", "5"];
    c.start_controller(0, &overlay);
    c.start_host(1, "host,router", 0, &overlay);
    c.start_host(2, "host,router", 0, &overlay);
    c.wait(
        0,
        "the scheduler to follow both other hosts",
        Duration::from_secs(60),
        || c.log(0).matches("following a registered host").count() >= 2,
    );
    for i in 0..3 {
        let claimed = format!("this host's jobs are in 100.100.{}.0/24", i + 1);
        c.wait(i, "its overlay subnet", Duration::from_secs(30), || {
            c.log(i).contains(&claimed)
        });
        // Each host routes the two others' /24s: through its VXLAN device, or via their LAN
        // addresses.
        c.wait(
            i,
            "routes to both other hosts",
            Duration::from_secs(30),
            || c.overlay_routes(i, backend) == 2,
        );
    }
    eprintln!("cluster and overlay up after {:?}", t_start.elapsed());

    assert_eq!(c.ok(0, &["create", "web"]), "Created web\n");
    release(&c, "web");
    c.ok(
        0,
        &[
            "route",
            "-a",
            "web",
            "add",
            "tcp",
            "-p",
            &TCP_PORT.to_string(),
        ],
    );
    c.ok(0, &["-a", "web", "scale", "--no-wait", "web=6"]);
    c.wait(0, "6 jobs up", Duration::from_secs(90), || {
        up_jobs(&c, "web").len() == 6
    });
    let jobs = up_jobs(&c, "web");
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for h in jobs.values() {
        *per_host.entry(h).or_default() += 1;
    }
    assert_eq!(per_host.len(), 3, "{per_host:?}");
    assert!(per_host.values().all(|&k| k == 2), "{per_host:?}");
    let ids: BTreeSet<String> = jobs.keys().cloned().collect();

    // A one-off job: discovery's DNS names all 6 jobs; each answers by IP, and by name.
    let lan: Vec<String> = c.lan.hosts.iter().map(|h| h.ip.to_string()).collect();
    let mut script = fetch_every_instance("web-web");
    script += "echo name=x page=$(timeout 5 wget -qO- http://web-web.discover:8080/); ";
    // Hosts' agent APIs and the controller API on the LAN: refused; the routers: served.
    for ip in &lan {
        script += &format!(
            "echo host=x addr={ip}:{HOST_API_PORT} \
             $(timeout 3 wget -O /dev/null http://{ip}:{HOST_API_PORT}/ 2>&1 | tr ' ' _); \
             echo router=x addr={ip} \
             page=$(timeout 5 wget -qO- --header 'Host: web.{DOMAIN}' http://{ip}/); "
        );
    }
    for port in [API_PORT, 2379] {
        script += &format!(
            "echo host=x addr={ip}:{port} \
             $(timeout 3 wget -O /dev/null http://{ip}:{port}/ping 2>&1 | tr ' ' _); ",
            ip = lan[0]
        );
    }
    let t0 = Instant::now();
    let mut out = String::new();
    while t0.elapsed() < Duration::from_secs(60) {
        out = run_sh(&c, "web", &script);
        if field(&out, "ip", "addr").len() == 6 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("the one-off job's output:\n{out}");
    let addrs = field(&out, "ip", "addr");
    assert_eq!(addrs.len(), 6, "6 jobs in web-web.discover:\n{out}");
    let subnets: BTreeSet<String> = addrs
        .iter()
        .map(|a| a.rsplit_once('.').unwrap().0.to_string())
        .collect();
    assert_eq!(
        subnets,
        ["100.100.1", "100.100.2", "100.100.3"]
            .map(String::from)
            .into(),
        "two jobs in each host's /24:\n{out}"
    );
    let pages: BTreeSet<String> = field(&out, "ip", "page")
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(pages, ids, "every job's page, fetched by its IP:\n{out}");
    // So pages came from jobs on both hosts the one-off job did not run on.
    let me = field(&out, "me", "id")[0];
    let other_hosts: BTreeSet<&str> = jobs
        .values()
        .map(String::as_str)
        .filter(|h| *h != host_of(me))
        .collect();
    assert_eq!(other_hosts.len(), 2, "the one-off job {me}; {jobs:?}");
    let lan_mtu: u32 =
        std::fs::read_to_string(format!("/sys/class/net/{}/mtu", c.lan.hosts[0].veth))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let want_mtu = match backend {
        "vxlan" => lan_mtu - 50,
        _ => lan_mtu,
    };
    assert_eq!(field(&out, "me", "mtu"), [want_mtu.to_string()], "{out}");
    let name = field(&out, "name", "page");
    assert!(
        name.len() == 1 && ids.contains(name[0]),
        "fetched by web-web.discover:\n{out}"
    );
    let hosts_tried: Vec<&str> = out.lines().filter(|l| l.starts_with("host=")).collect();
    assert_eq!(hosts_tried.len(), 5, "{out}");
    for l in hosts_tried {
        assert!(
            l.contains("refused") && !l.contains("HTTP"),
            "a job reached a host's API: {l}"
        );
    }
    let routers = field(&out, "router", "page");
    assert_eq!(routers.len(), 3, "{out}");
    for p in routers {
        assert!(ids.contains(p), "a router, from a job: {p:?}\n{out}");
    }

    // Every host's router serves every job (on any host), HTTP and the TCP route.
    let served_by = |i: usize, app: &str, want: &BTreeSet<String>| {
        let mut seen = BTreeSet::new();
        let t0 = Instant::now();
        while &seen != want && t0.elapsed() < Duration::from_secs(30) {
            if let Some(b) = body_200(&get(&c.router_addr(i), "/", &format!("{app}.{DOMAIN}"))) {
                seen.insert(b);
            }
        }
        seen
    };
    for i in 0..3 {
        assert_eq!(served_by(i, "web", &ids), ids, "host {i}'s router");
        let tcp = format!("{}:{TCP_PORT}", c.lan.hosts[i].ip);
        let mut seen = BTreeSet::new();
        let t0 = Instant::now();
        while seen.len() < 2 && t0.elapsed() < Duration::from_secs(30) {
            if let Some(b) = body_200(&get(&tcp, "/", "x")) {
                seen.insert(b);
            }
        }
        assert!(
            !seen.is_empty() && seen.is_subset(&ids),
            "the TCP route on host {i}: {seen:?}"
        );
    }
    eprintln!(
        "every router serves every job after {:?}",
        t_start.elapsed()
    );

    // What the overlay costs a router: from host 0's netns, sequential GETs (a new connection
    // each, as busybox httpd closes them) to a job on host 0 and to one on host 2. Printed for
    // docs/cluster.md, not asserted (the machine is shared).
    let addr_on = |host: &str| -> String {
        out.lines()
            .filter(|l| l.starts_with("ip="))
            .find_map(|l| {
                let a = field(l, "ip", "addr").first().copied()?;
                let p = field(l, "ip", "page").first().copied()?;
                (jobs.get(p).map(String::as_str) == Some(host)).then(|| format!("{a}:8080"))
            })
            .unwrap()
    };
    let mut timing = Vec::new();
    for (what, addr) in [
        ("same host", addr_on(&c.host_id(0))),
        ("other host", addr_on(&c.host_id(2))),
    ] {
        let us = c.lan.in_netns(0, move || {
            let t0 = Instant::now();
            for _ in 0..300 {
                assert!(body_200(&get(&addr, "/", "x")).is_some(), "GET {addr}");
            }
            t0.elapsed().as_micros() / 300
        });
        timing.push(format!("{what} {us} µs"));
    }
    eprintln!(
        "{backend}: GET over a new connection from host 0: {}",
        timing.join(", ")
    );

    // An isolated app, one job per host.
    c.ok(0, &["create", "iso"]);
    c.ok(0, &["-a", "iso", "meta", "set", "network=isolated"]);
    release(&c, "iso");
    c.ok(0, &["-a", "iso", "scale", "--no-wait", "web=3"]);
    c.wait(0, "3 isolated jobs up", Duration::from_secs(90), || {
        up_jobs(&c, "iso").len() == 3
    });
    let iso_jobs = up_jobs(&c, "iso");
    let iso: BTreeSet<String> = iso_jobs.keys().cloned().collect();
    for i in 0..3 {
        assert_eq!(
            served_by(i, "iso", &iso),
            iso,
            "host {i}'s router, isolated app"
        );
    }
    let script = fetch_every_instance("iso-web");
    let mut out = String::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        out = run_sh(&c, "web", &script);
        if field(&out, "ip", "addr").len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(field(&out, "ip", "addr").len(), 3, "{out}");
    assert!(
        field(&out, "ip", "page").is_empty(),
        "a job of another app reached the isolated app:\n{out}"
    );
    let out = run_sh(&c, "iso", &script);
    let me = field(&out, "me", "id")[0];
    let pages = field(&out, "ip", "page");
    assert_eq!(
        pages.len(),
        1,
        "only the isolated job on its own host:\n{out}"
    );
    assert_eq!(
        iso_jobs.get(pages[0]).map(String::as_str),
        Some(host_of(me)),
        "{out}"
    );

    // Host 2 dies (SIGKILL): once its lease ends the others remove its routes; started
    // again, it claims the same /24 and is routed again.
    c.kill(2);
    let t0 = Instant::now();
    for i in 0..2 {
        c.wait(i, "host 2's route to go", Duration::from_secs(30), || {
            c.overlay_routes(i, backend) == 1
        });
    }
    eprintln!("host 2's /24 released after {:?}", t0.elapsed());
    // Its registration in `slipway-host` (TTL 10 s) must be gone before it may start again.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(t0.elapsed()));
    let claimed = "this host's jobs are in 100.100.3.0/24";
    let before = c.log(2).matches(claimed).count();
    c.restart(2);
    c.wait(2, "the same /24 again", Duration::from_secs(30), || {
        c.log(2).matches(claimed).count() > before
    });
    for i in 0..2 {
        c.wait(i, "host 2's route again", Duration::from_secs(30), || {
            c.overlay_routes(i, backend) == 2
        });
    }

    let left = c.finish();
    assert!(
        left.is_empty(),
        "left on the machine after the test: {left:#?}"
    );
}
