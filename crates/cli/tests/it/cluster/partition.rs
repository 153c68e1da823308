//! A partitioned host (issue 18, "Done when"): three hosts in network namespaces
//! ([`super::lan::LanCluster`]), 2 jobs each; host 1's LAN link is cut (its cable pulled:
//! nothing it sends arrives). Within 15 s its jobs run on hosts 0 and 2 and host 0's router
//! answers every request (it no longer sends to host 1); cut off from etcd past its lease and
//! the grace, host 1 fences itself (stops its jobs). Link restored: host 1 registers again and
//! is followed, no job it ran comes back and none runs twice, and it takes new jobs.
//!
//! `n` range of this file: 4200-4249.

use super::lan::{Etcd, LanCluster, get};
use crate::support::{DOMAIN, block_on};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const N_BASE: u32 = 4200;

/// Up (and, separately, alive: not finished) jobs of app `web` per host id.
fn per_host(c: &LanCluster) -> (BTreeMap<String, usize>, usize) {
    let client = c.client(0);
    let jobs = block_on(async move { client.jobs("web").await }).unwrap_or_default();
    let mut up = BTreeMap::new();
    let mut alive = 0;
    for j in jobs {
        if j.state.as_str() == "up" {
            *up.entry(j.host_id.clone().unwrap_or_default()).or_default() += 1;
        }
        if !j.state.is_finished() {
            alive += 1;
        }
    }
    (up, alive)
}

/// The processes in host `i`'s cgroup parent (its jobs' containers), in any hierarchy: what
/// tells that the fence really stopped its jobs, not just logged that it would.
fn job_pids(c: &LanCluster, i: usize) -> std::collections::BTreeSet<i32> {
    let mut pids = std::collections::BTreeSet::new();
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let mut stack = vec![ctrl.path().join(&c.lan.hosts[i].cgroup_parent)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids
}

fn serves(c: &LanCluster, i: usize) -> bool {
    let r = get(&c.router_addr(i), "/", &format!("web.{DOMAIN}"));
    r.starts_with("HTTP/1.1 200") && r.contains("hello-from-the-lan")
}

#[test]
fn a_host_cut_off_is_replaced_within_15_s_fences_itself_and_rejoins_without_duplicates() {
    let t_start = Instant::now();
    let n = N_BASE + (std::process::id() % 16) * 3;
    let Some(mut c) = LanCluster::new(n, 3, Etcd::Gateway(1)) else {
        return;
    };
    c.start_controller(0, &[]);
    c.start_host(1, "host,router", 0, &[]);
    c.start_host(2, "host,router", 0, &[]);
    c.route_host_gw();
    c.wait(
        0,
        "the scheduler to follow both other hosts",
        Duration::from_secs(60),
        || c.log(0).matches("following a registered host").count() >= 2,
    );
    let ids: Vec<String> = (0..3)
        .map(|i| {
            std::fs::read_to_string(c.data_dir(i).join("host/host-id"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();

    assert_eq!(c.ok(0, &["create", "web"]), "Created web\n");
    c.release_httpd(
        "web",
        "mkdir -p /tmp/www && echo hello-from-the-lan > /tmp/www/index.html",
    );
    c.ok(0, &["-a", "web", "scale", "--no-wait", "web=6"]);
    c.wait(0, "2 jobs up on each host", Duration::from_secs(90), || {
        let (up, _) = per_host(&c);
        ids.iter().all(|id| up.get(id) == Some(&2))
    });
    c.wait(
        0,
        "host 0's router to serve",
        Duration::from_secs(30),
        || serves(&c, 0),
    );
    eprintln!("cluster up, 2 jobs per host, after {:?}", t_start.elapsed());

    assert!(
        !job_pids(&c, 1).is_empty(),
        "no job process found on host 1"
    );

    // Host 1's cable is pulled.
    c.lan.cut_link(1);
    let cut = Instant::now();
    let moved = c.wait(
        0,
        "host 1's jobs to run on hosts 0 and 2",
        Duration::from_secs(30),
        || {
            let (up, _) = per_host(&c);
            up.values().sum::<usize>() == 6 && !up.contains_key(&ids[1])
        },
    );
    eprintln!("host 1's jobs replaced {moved:?} after the cut");
    // Host 0's router no longer sends to host 1: every request of a round succeeds.
    let switched = c.wait(
        0,
        "host 0's router to stop sending to host 1",
        Duration::from_secs(30),
        || (0..12).all(|_| serves(&c, 0)),
    );
    let since_cut = cut.elapsed();
    eprintln!("host 0's router serves every request {since_cut:?} after the cut");
    assert!(
        moved < Duration::from_secs(15),
        "replaced after {moved:?} (router switched after {switched:?})"
    );
    let mut failed = 0;
    for _ in 0..200 {
        if !serves(&c, 0) {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "failed requests through host 0's router after the switch"
    );

    // Cut off past its lease and the grace, host 1 stops its jobs.
    let fenced = c.wait(1, "host 1 to fence itself", Duration::from_secs(40), || {
        c.log(1).contains("fencing: cut off from etcd")
    });
    eprintln!(
        "host 1 fenced {:?} after the cut",
        cut.elapsed().min(fenced + since_cut)
    );
    // Its jobs really stopped (their processes are gone), while it is still cut off.
    c.wait(
        1,
        "host 1's job processes to end",
        Duration::from_secs(30),
        || job_pids(&c, 1).is_empty(),
    );
    eprintln!("host 1's jobs stopped {:?} after the cut", cut.elapsed());

    // The cable back: host 1 registers again and is followed; nothing comes back, nothing runs
    // twice.
    c.lan.restore_link(1);
    let back = c.wait(
        0,
        "host 1 to be followed again",
        Duration::from_secs(60),
        || {
            c.log(0)
                .lines()
                .filter(|l| l.contains("following a registered host") && l.contains(&ids[1]))
                .count()
                >= 2
        },
    );
    eprintln!("host 1 followed again {back:?} after the link came back");
    for _ in 0..10 {
        let (up, alive) = per_host(&c);
        assert_eq!(up.values().sum::<usize>(), 6, "{up:?}");
        assert_eq!(alive, 6, "a job came back or runs twice: {up:?}");
        assert!(
            !up.contains_key(&ids[1]),
            "a job on host 1 came back: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // It takes new jobs again.
    c.ok(0, &["-a", "web", "scale", "--no-wait", "web=9"]);
    c.wait(0, "jobs on host 1 again", Duration::from_secs(60), || {
        let (up, _) = per_host(&c);
        up.values().sum::<usize>() == 9 && up.get(&ids[1]).is_some_and(|n| *n >= 1)
    });
    let left = c.finish();
    eprintln!("whole test: {:?}", t_start.elapsed());
    assert!(
        left.is_empty(),
        "left on the machine after the test: {left:#?}"
    );
}
