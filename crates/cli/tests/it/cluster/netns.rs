//! A cluster of real hosts (issue 18): three network namespaces on a test LAN
//! ([`super::lan::LanCluster`]), each running its own `slipway server` with its own network,
//! data dir, runc root and cgroup parent, and its own etcd member (on its LAN address), all on
//! one PostgreSQL (through a forwarder on the LAN's gateway). Host 0 runs every role; hosts 1 and 2 are hosts and
//! routers that follow host 0's controller.
//!
//! An app scaled to 6 runs 2 jobs on each host; each host's router serves it — for the jobs on
//! its own host, and, with the harness's host-gw routes standing in for the overlay network, for
//! those on the others too. A host's server killed and restarted serves again. At the end
//! nothing of the test is left on the machine.
//!
//! `n` range of this file: 4000-4089 (and 4090-4099 for testkit's own netns tests).

use super::lan::{Etcd, LanCluster, get};
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
    let Some(mut c) = LanCluster::new(n, 3, Etcd::OnHosts(3)) else {
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
    c.release_httpd(
        "web",
        "mkdir -p /tmp/www && echo hello-from-the-lan > /tmp/www/index.html",
    );
    let t0 = Instant::now();
    c.ok(0, &["-a", "web", "scale", "--no-wait", "web=6"]);
    c.wait(0, "6 jobs up", Duration::from_secs(90), || {
        up_per_host(&c).values().sum::<usize>() == 6
    });
    eprintln!("6 jobs up after {:?}", t0.elapsed());
    let per_host = up_per_host(&c);
    let host_ids: Vec<String> = (0..3).map(|i| c.host_id(i)).collect();
    for id in &host_ids {
        assert_eq!(
            per_host.get(id),
            Some(&2),
            "not 2 jobs on host {id}: {per_host:?}"
        );
    }
    // Each host's agent, asked from the root netns on its LAN address, runs the jobs the
    // scheduler placed on it.
    let token = c.cluster_token(0);
    let client = c.client(0);
    let jobs = block_on(async move { client.jobs("web").await }).unwrap();
    for (i, id) in host_ids.iter().enumerate() {
        let api = slipway_host::client::HttpHost::new(&c.host_api_url(i), &token);
        let on_host: std::collections::BTreeSet<String> = block_on(async move {
            use slipway_host::HostApi;
            api.list_jobs().await
        })
        .unwrap()
        .into_iter()
        .map(|j| j.job.id)
        .collect();
        let placed: std::collections::BTreeSet<String> = jobs
            .iter()
            .filter(|j| j.host_id.as_deref() == Some(id) && j.state.as_str() == "up")
            .map(|j| j.id.clone())
            .collect();
        assert!(
            placed.len() == 2 && placed.is_subset(&on_host),
            "host {i}: placed {placed:?}, its agent has {on_host:?}"
        );
    } // Every host's router serves the app, reached on its host's LAN address; every request of
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

    // Host 2's server killed (SIGKILL): the scheduler replaces its jobs on the other hosts.
    // Started again with the same flags in its netns (once its registration has expired: a
    // host id registered twice is refused), it binds its fixed ports again, is followed again,
    // and its router serves again.
    let followed = c.log(0).matches("following a registered host").count();
    c.kill(2);
    assert!(!c.is_running(2));
    let killed = Instant::now();
    let lost = c.wait(
        0,
        "host 2's jobs to be replaced",
        Duration::from_secs(60),
        || {
            let m = up_per_host(&c);
            m.values().sum::<usize>() == 6 && !m.contains_key(&host_ids[2])
        },
    );
    eprintln!("a killed host's jobs replaced after {lost:?}");
    // Its registration (a 10 s lease) may outlive the replacement by a little.
    c.wait(
        2,
        "host 2's registration to expire",
        Duration::from_secs(30),
        || killed.elapsed() > Duration::from_secs(11),
    );
    c.restart(2);
    c.wait(
        0,
        "the restarted host to be followed",
        Duration::from_secs(60),
        || c.log(0).matches("following a registered host").count() > followed,
    );
    c.wait(
        2,
        "the restarted router to serve",
        Duration::from_secs(30),
        || serves(&c, 2),
    );
    eprintln!(
        "host 2's server restarted and serving after {:?}",
        t_start.elapsed()
    );

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
