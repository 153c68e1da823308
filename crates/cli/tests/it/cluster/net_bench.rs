//! Requests through a router to a job on its own host and to one on another host, over the
//! overlay (issue 18: "cross-host request latency and throughput vs same-host, VXLAN overhead,
//! failover times"). Both a test and the benchmark `bench/cluster-net.sh` (docs/cluster.md
//! "Measurements"): the test always runs a short version and asserts that every request of
//! both paths succeeds; with `SLIPWAY_BENCH=1` it runs longer, in rounds, and prints the table.
//!
//! For each backend (`vxlan`, then `host-gw`): three hosts on the netns test LAN
//! ([`super::lan::LanCluster`], etcd on the gateway), two apps whose one `web` job is pinned
//! with the formation tag `host=<id>`: `near` on host 0, `far` on host 2. `wrk` (keep-alive, in
//! the root netns) sends to host 0's router with `Host: near…` (the router's backend is on its
//! own bridge) and `Host: far…` (the backend is behind the overlay), alternating, for a 12-byte
//! page and a 1 MiB one (what the encapsulation costs in bandwidth). The router opens a new
//! connection to the job per request (busybox httpd closes them), so the cross-host path pays
//! a TCP handshake over the overlay each time. Then failover: `far`'s pin is dropped and host
//! 2's cable pulled; measured is the time until a `far` job is up on another host and until
//! host 0's router answers for `far` again.
//!
//! `n`: 4608 and 4609 (LANs `100.127.0.0/24` and `100.127.1.0/24`: residues 0 and 1).

use super::lan::{Etcd, LanCluster, get};
use crate::support::{DOMAIN, block_on};
use std::process::Command;
use std::time::{Duration, Instant};

const N_BASE: u32 = 4608;
/// The large page: 1 MiB.
const BIG: usize = 1 << 20;

/// Run length, rounds and connections: short under test, longer with `SLIPWAY_BENCH=1`.
struct Plan {
    secs: u32,
    rounds: usize,
    conns: u32,
    failover: bool,
}

fn plan() -> Plan {
    if std::env::var("SLIPWAY_BENCH").is_ok_and(|v| v == "1") {
        let env = |k: &str, d: u32| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Plan {
            secs: env("D", 5),
            rounds: env("R", 3) as usize,
            conns: env("C", 8),
            failover: true,
        }
    } else {
        Plan {
            secs: 2,
            rounds: 1,
            conns: 8,
            failover: false,
        }
    }
}

#[test]
fn requests_reach_a_job_on_another_host_through_the_router_over_vxlan_and_host_gw() {
    let test = slipway_testkit::current_test();
    if slipway_testkit::skip_unless_root(&test) {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err()
        && slipway_testkit::skip(
            &test,
            "wrk (apt-get install wrk; scripts/install-deps has it)",
        )
    {
        return;
    }
    let plan = plan();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (k, backend) in ["vxlan", "host-gw"].into_iter().enumerate() {
        // Failover on vxlan always (one measurement, asserted), on both with SLIPWAY_BENCH=1.
        let failover = plan.failover || k == 0;
        if !one_backend(
            backend,
            N_BASE + k as u32,
            &plan,
            failover,
            &mut rows,
            &mut notes,
        ) {
            return;
        }
    }
    eprintln!(
        "\nwrk -t1 -c{} -d{}s, {} round(s), through host 0's router (keep-alive to the router):\n",
        plan.conns, plan.secs, plan.rounds
    );
    eprintln!("| backend | job on | page | req/s | p50 | p99 | MB/s |");
    eprintln!("|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!("{r}");
    }
    eprintln!();
    for n in &notes {
        eprintln!("{n}");
    }
}

/// The MTU of host 0's link named by `pick` (from `ip -o link`).
fn mtu(c: &LanCluster, pick: impl Fn(&str) -> bool) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", &c.lan.hosts[0].netns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| pick(l))
        .and_then(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "mtu")?;
            w.next()?.parse().ok()
        })
}

/// The up `web` jobs of `app`: their host ids.
fn up_hosts(c: &LanCluster, app: &str) -> Vec<String> {
    let client = c.client(0);
    let app = app.to_string();
    let jobs = block_on(async move { client.jobs(&app).await }).unwrap_or_default();
    jobs.into_iter()
        .filter(|j| j.state.as_str() == "up" && j.process_type.is_some())
        .map(|j| j.host_id.unwrap_or_default())
        .collect()
}

/// Creates `app` with a release whose `web` job serves its job id at `/` and 1 MiB at `/big`.
fn create_app(c: &LanCluster, app: &str) -> slipway_types::Id {
    c.ok(0, &["create", app]);
    c.release_httpd(
        app,
        &format!(
            "mkdir -p /tmp/www && echo $SLIPWAY_JOB_ID > /tmp/www/index.html && \
             head -c {BIG} /dev/zero > /tmp/www/big"
        ),
    )
}

/// The body of a 200 response from host 0's router for `app`, trimmed.
fn served(c: &LanCluster, app: &str) -> Option<String> {
    let resp = get(&c.router_addr(0), "/", &format!("{app}.{DOMAIN}"));
    if !resp.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(resp.split_once("\r\n\r\n")?.1.trim().to_string())
}

/// One `wrk` run: requests/s, latency p50 and p99 (µs), MB/s, and the failed requests
/// (socket errors and non-2xx answers).
#[derive(Default, Clone, Copy)]
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    mbs: f64,
    failed: u64,
}

fn wrk(url: &str, host: &str, plan: &Plan) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", plan.conns),
            &format!("-d{}s", plan.secs),
            "--latency",
            "-H",
            &format!("Host: {host}"),
            url,
        ])
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url}: {text}");
    let run = parse_wrk(&text).unwrap_or_else(|| panic!("wrk's output, not understood:\n{text}"));
    if run.failed > 0 {
        eprintln!("wrk {host} {url}: failed requests:\n{text}");
    }
    run
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`) in µs.
fn micros(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix("m") {
        (v, 60e6)
    } else {
        (s.strip_suffix('s')?, 1e6)
    };
    Some(num.parse::<f64>().ok()? * mult)
}

/// A wrk size (`1.20MB`, `512.00KB`, `100B`) in MB.
fn megabytes(s: &str) -> Option<f64> {
    let (num, mult) = [
        ("GB", 1024.0),
        ("MB", 1.0),
        ("KB", 1.0 / 1024.0),
        ("B", 1.0 / 1048576.0),
    ]
    .into_iter()
    .find_map(|(u, m)| Some((s.strip_suffix(u)?, m)))?;
    Some(num.parse::<f64>().ok()? * mult)
}

fn parse_wrk(text: &str) -> Option<Run> {
    let mut r = Run::default();
    let mut seen = (false, false, false);
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => {
                r.p50 = micros(v)?;
                seen.0 = true;
            }
            ["99%", v] => {
                r.p99 = micros(v)?;
                seen.1 = true;
            }
            ["Requests/sec:", v] => {
                r.rps = v.parse().ok()?;
                seen.2 = true;
            }
            ["Transfer/sec:", v] => r.mbs = megabytes(v)?,
            ["Socket", "errors:", rest @ ..] => {
                r.failed += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", v] => r.failed += v.parse::<u64>().ok()?,
            _ => {}
        }
    }
    (seen == (true, true, true)).then_some(r)
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1e3)
}

/// Runs one backend's cluster, benchmark and failover; pushes table rows and notes. False when
/// the test is skipped.
fn one_backend(
    backend: &str,
    n: u32,
    plan: &Plan,
    failover: bool,
    rows: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> bool {
    let t_start = Instant::now();
    let Some(mut c) = LanCluster::new(n, 3, Etcd::Gateway(1)) else {
        return false;
    };
    let overlay = ["--overlay", backend];
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
        c.wait(
            i,
            "routes to both other hosts",
            Duration::from_secs(30),
            || c.overlay_routes(i, backend) == 2,
        );
    }
    let ids: Vec<String> = (0..3).map(|i| c.host_id(i)).collect();
    let mut far_release = None;
    for (app, host) in [("near", 0), ("far", 2)] {
        far_release = Some(create_app(&c, app));
        let count = format!("web=1,host={}", ids[host]);
        c.ok(0, &["-a", app, "scale", "--no-wait", &count]);
    }
    for (app, host) in [("near", 0), ("far", 2)] {
        c.wait(0, "the pinned job up", Duration::from_secs(90), || {
            up_hosts(&c, app) == [ids[host].clone()]
        });
        c.wait(
            0,
            "host 0's router to serve it",
            Duration::from_secs(30),
            || served(&c, app).is_some_and(|b| b.starts_with(&ids[host])),
        );
    }
    eprintln!(
        "{backend}: cluster up, near on host 0, far on host 2, after {:?}",
        t_start.elapsed()
    );

    // wrk, alternating the two paths so that outside load hits both alike.
    let url0 = format!("http://{}/", c.router_addr(0));
    let cases = [("near", "/", "same host"), ("far", "/", "other host")];
    let big = [("near", "/big", "same host"), ("far", "/big", "other host")];
    for (page, cases) in [("12 B", cases), ("1 MiB", big)] {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
        for _ in 0..plan.rounds {
            for (k, (app, path, _)) in cases.iter().enumerate() {
                let url = format!("{}{}", url0.trim_end_matches('/'), path);
                runs[k].push(wrk(&url, &format!("{app}.{DOMAIN}"), plan));
            }
        }
        for (k, (app, _, label)) in cases.iter().enumerate() {
            let rs = &runs[k];
            let failed: u64 = rs.iter().map(|r| r.failed).sum();
            assert_eq!(failed, 0, "{backend}, {app} {page}: failed requests");
            assert!(
                rs.iter().all(|r| r.rps > 0.0),
                "{backend}, {app} {page}: no requests"
            );
            // The median round (by req/s) stands for the path; all rounds' req/s shown.
            let mut sorted = rs.clone();
            sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let m = sorted[sorted.len() / 2];
            let all: Vec<String> = rs.iter().map(|r| format!("{:.0}", r.rps)).collect();
            rows.push(format!(
                "| {backend} | {label} | {page} | {} | {} | {} | {:.1} |",
                all.join(" / "),
                ms(m.p50),
                ms(m.p99),
                m.mbs
            ));
        }
    }
    let lan_mtu = mtu(&c, |l| l.contains(": lan0@"));
    let vx_mtu = mtu(&c, |l| l.contains(": vx-"));
    notes.push(match (lan_mtu, vx_mtu) {
        (Some(l), Some(v)) => format!("{backend}: LAN MTU {l}, VXLAN device (and jobs) MTU {v}"),
        (Some(l), None) => format!("{backend}: LAN MTU {l}, no VXLAN device (jobs' MTU {l})"),
        _ => format!("{backend}: LAN MTU not found"),
    });

    if failover {
        // Drop far's pin (its job stays on host 2) and pull host 2's cable.
        // (a PUT of the formation: `slipway scale` keeps tags it is not given).
        let client = c.client(0);
        let update = slipway_types::FormationUpdate {
            processes: [("web".to_string(), 1)].into(),
            tags: Default::default(),
        };
        let rel = far_release.unwrap();
        block_on(async move { client.put_formation("far", rel, &update).await }).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            up_hosts(&c, "far"),
            [ids[2].clone()],
            "far moved before the cut"
        );
        c.lan.cut_link(2);
        let cut = Instant::now();
        let moved = c.wait(
            0,
            "far's job to run on host 0 or 1",
            Duration::from_secs(40),
            || {
                let up = up_hosts(&c, "far");
                up.len() == 1 && up[0] != ids[2]
            },
        );
        let answered = c.wait(
            0,
            "host 0's router to answer for far",
            Duration::from_secs(40),
            || (0..5).all(|_| served(&c, "far").is_some_and(|b| !b.starts_with(&ids[2]))),
        );
        let answered = cut.elapsed().min(moved + answered);
        assert!(
            moved < Duration::from_secs(30),
            "{backend}: replaced after {moved:?}"
        );
        notes.push(format!(
            "{backend} failover (host 2's cable pulled): far's job up elsewhere after {:.1} s, \
             host 0's router answers for it after {:.1} s",
            moved.as_secs_f64(),
            answered.as_secs_f64()
        ));
        c.lan.restore_link(2);
    }
    let left = c.finish();
    eprintln!("{backend}: done after {:?}", t_start.elapsed());
    assert!(
        left.is_empty(),
        "left on the machine after the test: {left:#?}"
    );
    true
}

#[test]
fn wrk_output_is_understood() {
    let text = "Running 2s test @ http://x/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   812.00us    1.10ms  20.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    2.50ms\n  8000 requests in 2.00s, 1.20MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:   4000.00\nTransfer/sec:    614.40KB\n";
    let r = parse_wrk(text).unwrap();
    assert_eq!(r.p50, 812.0);
    assert_eq!(r.p99, 2500.0);
    assert_eq!(r.rps, 4000.0);
    assert_eq!(r.failed, 7);
    assert!((r.mbs - 0.6).abs() < 1e-9);
    assert!(parse_wrk("Requests/sec: 1\n").is_none());
}
