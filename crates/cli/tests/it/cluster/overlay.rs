//! The overlay network end to end (issue 18, docs/cluster.md "Overlay network"): three hosts on
//! the netns test LAN ([`super::lan::LanCluster`]), each `slipway server` with `--overlay
//! vxlan`, each host's /24 claimed in etcd (the harness gives host `i` `--subnet
//! 100.100.<i+1>.0/24`, which the overlay honours as the /24 asked for). No harness routes:
//! jobs reach other hosts' jobs only through the VXLAN devices.
//!
//! `scale web=6` puts 2 jobs on each host; a one-off job (`slipway run`) resolves
//! `web-web.discover` to all 6, in three /24s, and fetches a page from each of them by IP
//! (jobs on both other hosts among them) and by name; it cannot reach any host's agent API or
//! the controller API on their LAN addresses, but does reach the routers. Every host's router
//! serves all 6 jobs, and a TCP route too.
//!
//! `n` range of this file: 4100-4199.

use super::lan::{API_PORT, HOST_API_PORT, LanCluster, get};
use crate::support::{DOMAIN, block_on};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const N_BASE: u32 = 4100;
const TCP_PORT: u16 = 3000;

/// Up jobs of app `web`: id → host id.
fn up_jobs(c: &LanCluster) -> BTreeMap<String, String> {
    let client = c.client(0);
    let jobs = block_on(async move { client.jobs("web").await }).unwrap_or_default();
    jobs.into_iter()
        .filter(|j| j.state.as_str() == "up" && j.process_type.is_some())
        .map(|j| (j.id, j.host_id.unwrap_or_default()))
        .collect()
}

/// The body of a 200 response, trimmed.
fn body_200(resp: &str) -> Option<String> {
    if !resp.starts_with("HTTP/1.1 200") && !resp.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(resp.split_once("\r\n\r\n")?.1.trim().to_string())
}

/// `slipway -a web run -- sh -c SCRIPT` (a one-off job on whichever host the scheduler picks):
/// stdout and stderr.
fn run_sh(c: &LanCluster, script: &str) -> String {
    let out = c
        .cli(0)
        .timeout(Duration::from_secs(120))
        .args(["-a", "web", "run", "--", "sh", "-c", script])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The values of the `KEY=VALUE` words of the output lines starting with `KEY=`.
fn field<'a>(out: &'a str, line_key: &str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(&format!("{line_key}=")))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
        })
        .collect()
}

#[test]
fn three_hosts_on_a_vxlan_overlay_reach_each_others_jobs_by_ip_and_name_but_not_the_hosts() {
    let t_start = Instant::now();
    let n = N_BASE + (std::process::id() % 30) * 3;
    let Some(mut c) = LanCluster::new(n, 3, 1) else {
        return;
    };
    let overlay = ["--overlay", "vxlan"];
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
        // Each host has routes to the two others through its VXLAN device.
        let want = 2;
        c.wait(
            i,
            "routes to both other hosts",
            Duration::from_secs(30),
            || {
                let out = std::process::Command::new("ip")
                    .args(["-n", &c.lan.hosts[i].netns, "route", "show", "proto", "83"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("dev vx-") && l.contains("onlink"))
                    .count()
                    == want
            },
        );
    }
    eprintln!("cluster and overlay up after {:?}", t_start.elapsed());

    assert_eq!(c.ok(0, &["create", "web"]), "Created web\n");
    let client = c.client(0);
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo $SLIPWAY_JOB_ID > /tmp/www/index.html; \
                     trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = client.create_release("web", &r).await.unwrap();
        client.set_app_release("web", r.id).await.unwrap();
    });
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
        up_jobs(&c).len() == 6
    });
    let jobs = up_jobs(&c);
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for h in jobs.values() {
        *per_host.entry(h).or_default() += 1;
    }
    assert_eq!(per_host.len(), 3, "{per_host:?}");
    assert!(per_host.values().all(|&k| k == 2), "{per_host:?}");
    let ids: BTreeSet<String> = jobs.keys().cloned().collect();

    // A one-off job: discovery's DNS names all 6 jobs; each answers by IP, and by name.
    let lan: Vec<String> = c.lan.hosts.iter().map(|h| h.ip.to_string()).collect();
    let mut script = String::from(
        "echo me=x id=$SLIPWAY_JOB_ID; \
         for ip in $(nslookup web-web.discover | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p'); do \
           echo ip=x addr=$ip page=$(timeout 5 wget -qO- http://$ip:8080/); done; \
         echo name=x page=$(timeout 5 wget -qO- http://web-web.discover:8080/); ",
    );
    // Hosts' agent APIs and the controller API on the LAN: refused; the routers: served.
    for ip in &lan {
        script += &format!(
            "echo host=x addr={ip}:{HOST_API_PORT} $(timeout 3 wget -O /dev/null http://{ip}:{HOST_API_PORT}/ 2>&1 | tr ' ' _); "
        );
        script += &format!(
            "echo router=x addr={ip} page=$(timeout 5 wget -qO- --header 'Host: web.{DOMAIN}' http://{ip}/); "
        );
    }
    script += &format!(
        "echo host=x addr={ip}:{API_PORT} $(timeout 3 wget -O /dev/null http://{ip}:{API_PORT}/ping 2>&1 | tr ' ' _); ",
        ip = lan[0]
    );
    let t0 = Instant::now();
    let mut out = String::new();
    while t0.elapsed() < Duration::from_secs(60) {
        out = run_sh(&c, &script);
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
    // Job ids are `<host id>-<uuid>`: the pages came from jobs on both other hosts too.
    let me = field(&out, "me", "id")[0];
    let other_hosts: BTreeSet<&str> = jobs
        .values()
        .map(String::as_str)
        .filter(|h| !me.starts_with(&format!("{h}-")))
        .collect();
    assert_eq!(
        other_hosts.len(),
        2,
        "the one-off job {me} ran on one of the hosts: {jobs:?}"
    );
    let name = field(&out, "name", "page");
    assert!(
        name.len() == 1 && ids.contains(name[0]),
        "fetched by web-web.discover:\n{out}"
    );
    let hosts_reached: Vec<&str> = out.lines().filter(|l| l.starts_with("host=")).collect();
    assert_eq!(hosts_reached.len(), 4, "{out}");
    for l in hosts_reached {
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
    for i in 0..3 {
        let mut seen = BTreeSet::new();
        let t0 = Instant::now();
        while seen != ids && t0.elapsed() < Duration::from_secs(30) {
            if let Some(b) = body_200(&get(&c.router_addr(i), "/", &format!("web.{DOMAIN}"))) {
                seen.insert(b);
            }
        }
        assert_eq!(seen, ids, "the jobs host {i}'s router served");
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

    let left = c.finish();
    assert!(
        left.is_empty(),
        "left on the machine after the test: {left:#?}"
    );
}
