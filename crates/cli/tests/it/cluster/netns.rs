//! A cluster of real hosts (issue 18): three network namespaces on a test LAN
//! ([`super::lan::LanCluster`]), each running its own `slipway server` with its own network,
//! data dir, runc root and cgroup parent, all on one etcd (on the LAN's gateway) and one
//! PostgreSQL (through its Unix socket). Host 0 runs every role; hosts 1 and 2 are hosts and
//! routers that follow host 0's controller.
//!
//! An app scaled to 6 runs 2 jobs on each host; each host's router serves it — for the jobs on
//! its own host, and, with the harness's host-gw routes standing in for the overlay network, for
//! those on the others too. At the end nothing of the test is left on the machine.
//!
//! `n` range of this file: 4000-4089 (and 4090-4099 for testkit's own netns tests).

use super::lan::{LanCluster, get};
use crate::support::{DOMAIN, block_on};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const N_BASE: u32 = 4000;

/// Up jobs of app `web` per host id.
fn up_per_host(c: &LanCluster) -> BTreeMap<String, usize> {
    let client = c.client(0);
    let jobs = block_on(async move { client.jobs("web").await }).unwrap_or_default();
    let mut m = BTreeMap::new();
    for j in jobs {
        if j.state.as_str() == "up" {
            *m.entry(j.host_id.unwrap_or_default()).or_default() += 1;
        }
    }
    m
}

fn serves(c: &LanCluster, i: usize) -> bool {
    let r = get(&c.router_addr(i), "/", &format!("web.{DOMAIN}"));
    r.starts_with("HTTP/1.1 200") && r.contains("hello-from-the-lan")
}

#[test]
fn three_hosts_in_network_namespaces_run_an_app_two_jobs_each_and_leave_nothing() {
    let t_start = Instant::now();
    let n = N_BASE + (std::process::id() % 30) * 3;
    let Some(mut c) = LanCluster::new(n, 3, 1) else {
        return;
    };
    eprintln!("LAN, etcd and database up after {:?}", t_start.elapsed());
    c.start_controller(0, &[]);
    c.start_host(1, "host,router", 0, &[]);
    c.start_host(2, "host,router", 0, &[]);
    c.route_host_gw();
    // The scheduler follows all three hosts (its own in-process, the others through etcd).
    c.wait(
        0,
        "the scheduler to follow both other hosts",
        Duration::from_secs(60),
        || c.log(0).matches("following a registered host").count() >= 2,
    );
    eprintln!("cluster up after {:?}", t_start.elapsed());

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
                    "mkdir -p /tmp/www && echo hello-from-the-lan > /tmp/www/index.html; \
                     trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = client.create_release("web", &r).await.unwrap();
        client.set_app_release("web", r.id).await.unwrap();
    });
    let t0 = Instant::now();
    c.ok(0, &["-a", "web", "scale", "--no-wait", "web=6"]);
    c.wait(0, "6 jobs up", Duration::from_secs(90), || {
        up_per_host(&c).values().sum::<usize>() == 6
    });
    eprintln!("6 jobs up after {:?}", t0.elapsed());
    let per_host = up_per_host(&c);
    let host_ids: Vec<String> = (0..3)
        .map(|i| {
            std::fs::read_to_string(c.data_dir(i).join("host/host-id"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    for id in &host_ids {
        assert_eq!(
            per_host.get(id),
            Some(&2),
            "not 2 jobs on host {id}: {per_host:?}"
        );
    }
    // Every host's router serves the app, reached on its host's LAN address; every request of
    // a round (the router balances over all 6 jobs, on all 3 hosts) succeeds.
    for i in 0..3 {
        c.wait(
            i,
            "its router to serve the app",
            Duration::from_secs(30),
            || serves(&c, i),
        );
        for _ in 0..12 {
            assert!(serves(&c, i), "router of host {i} failed a request");
        }
    }
    eprintln!("every router serves after {:?}", t_start.elapsed());

    let t0 = Instant::now();
    let left = c.finish();
    eprintln!(
        "teardown: {:?}; whole test: {:?}",
        t0.elapsed(),
        t_start.elapsed()
    );
    assert!(
        left.is_empty(),
        "left on the machine after the test: {left:#?}"
    );
}
