//! Every role's Prometheus endpoint (docs/metrics.md): Debian's `promtool check metrics`
//! accepts what `GET /metrics` serves, the API's requests are counted by route template, a
//! job's memory metric follows what the job allocates, and `--log-format json` logs JSON.
//! `n` range: 4300-4399.

use crate::support::{HostServer, TestServer, logged_addr};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `GET /metrics` at `addr` (HTTP/1.0: the body ends with the connection), with the
/// Prometheus text format's content type.
fn scrape(addr: &str) -> String {
    let (head, body) = get_metrics(addr);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body
}

/// `GET /metrics` at `addr`: the head and the body.
fn get_metrics(addr: &str) -> (String, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    (head.to_string(), body.to_string())
}

/// `promtool check metrics` (Debian's prometheus package) accepts `text`, lint included, and
/// no series has a label Prometheus sets itself on what it scrapes (`job`, `instance`: it would
/// rename ours `exported_job`, which promtool does not say).
fn promtool_accepts(text: &str) {
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = l.split_once('{').map_or("", |(_, rest)| rest);
        assert!(
            !["{job=", ",job=", "{instance=", ",instance="]
                .iter()
                .any(|t| format!("{{{labels}").contains(t)),
            "a label Prometheus sets itself: {l}"
        );
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused them:\n{}{}\n--- the metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_promtool(test: &str) -> bool {
    slipway_testkit::skip_unless_program(test, "promtool", "apt-get install prometheus")
}

/// The value of the sample that starts with `series` (name and labels), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_role_without_a_host_serves_metrics_promtool_accepts_and_json_logs() {
    if no_promtool(
        "metrics::every_role_without_a_host_serves_metrics_promtool_accepts_and_json_logs",
    ) {
        return;
    }
    let mut flags = crate::support::loopback_router(&["--router-admin", "127.0.0.1:0"]);
    for f in [
        "--no-host",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ] {
        flags.push(f.into());
    }
    let s = TestServer::start_with(&flags);
    let addr = logged_addr(&s, "metrics on http://");
    // The router keeps its own endpoint (its admin port): promtool takes it too.
    let admin = logged_addr(&s, "router: admin (metrics) on http://");
    let (_, router) = get_metrics(&admin);
    assert!(
        router.contains("# TYPE slipway_router_requests_total counter"),
        "{router}"
    );
    promtool_accepts(&router);
    s.create_app("metered");
    s.ok(&["-a", "metered", "info"]);
    s.fails(&["-a", "nosuchapp", "info"]);
    let text = scrape(&addr);
    promtool_accepts(&text);
    for family in [
        "# TYPE slipway_controller_requests_total counter",
        "# TYPE slipway_controller_request_duration_seconds histogram",
        "# TYPE slipway_scheduler_reconcile_duration_seconds histogram",
        "# TYPE slipway_scheduler_jobs gauge",
        "# TYPE slipway_scheduler_restarts_total counter",
        "# TYPE slipway_scheduler_lost_hosts_total counter",
        "# TYPE slipway_logs_lines_total counter",
        "# TYPE slipway_logs_followers gauge",
        "# TYPE slipway_logs_disk_bytes gauge",
        "# TYPE slipway_builds_total counter",
        "# TYPE slipway_registry_uploads_total counter",
    ] {
        assert!(text.contains(family), "no {family:?} in:\n{text}");
    }
    // By route template, not path: one series whatever the app.
    assert_eq!(
        value(
            &text,
            r#"slipway_controller_requests_total{method="POST",route="/apps",status="201"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"slipway_controller_requests_total{method="GET",route="/apps/{app}",status="404"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        !text.contains("nosuchapp") && !text.contains("route=\"/apps/metered"),
        "{text}"
    );

    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[test]
fn a_jobs_memory_metric_follows_what_it_allocates() {
    if crate::support::skip_unless_root("metrics::a_jobs_memory_metric_follows_what_it_allocates")
        || no_promtool("metrics::a_jobs_memory_metric_follows_what_it_allocates")
    {
        return;
    }
    let n = 4350 + std::process::id() % 50;
    let h = HostServer::start(n, &["--metrics-listen".into(), "127.0.0.1:0".into()]);
    let s = &h.s;
    let addr = logged_addr(s, "metrics on http://");
    s.create_app("hungry");
    crate::support::block_on(async {
        let c = s.client();
        let new = slipway_types::NewRelease::default();
        let r = c.create_release("hungry", &new).await.unwrap();
        c.set_app_release("hungry", r.id).await.unwrap();
    });
    // A one-off job has no process type (the label is empty, as absent). 96 MiB in the job's tmpfs /tmp: pages charged to its memory cgroup.
    let id = s
        .ok(&[
            "-a",
            "hungry",
            "run",
            "-d",
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=96 2>/dev/null; sleep 600",
        ])
        .trim()
        .to_string();
    let series = format!(r#"slipway_job_memory_bytes{{app="hungry",type="",job_id="{id}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(&addr);
        if value(&text, &series).is_some_and(|b| b >= 96.0 * 1024.0 * 1024.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached 96 MiB:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    promtool_accepts(&text);
    let cpu = format!(r#"slipway_job_cpu_seconds_total{{app="hungry",type="",job_id="{id}"}}"#);
    assert!(value(&text, &cpu).is_some_and(|c| c > 0.0), "{text}");
    assert!(
        value(&text, r#"slipway_host_jobs{status="running"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "slipway_host_job_start_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The scheduler placed it and tracks it as up; its reconcile rounds are timed.
    assert!(
        value(&text, "slipway_scheduler_placements_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, r#"slipway_scheduler_jobs{state="up"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "slipway_scheduler_reconcile_duration_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // `slipway top` shows the same numbers (-a filters by app).
    let top = s.json(&[
        "-a",
        "hungry",
        "top",
        "--metrics",
        &addr,
        "--interval",
        "0.2",
        "--json",
    ]);
    let row = top
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == id.as_str())
        .unwrap_or_else(|| panic!("job {id} not in top: {top}"));
    assert!(row["memory_bytes"].as_u64().unwrap() >= 96 << 20, "{row}");
    assert!(row["cpu_percent"].as_f64().unwrap() >= 0.0, "{row}");
    let table = s.ok(&["top", "--metrics", &addr, "--interval", "0.2"]);
    assert!(table.contains("MEMORY") && table.contains(&id), "{table}");
    // A host whose endpoint does not answer is left out with a warning (the others' jobs are
    // still shown); none answering is an error that names the address.
    let out = s
        .cmd()
        .args(["-a", "hungry", "top", "--metrics", "127.0.0.1:1"])
        .args(["--metrics", &addr, "--interval", "0.2", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains(&id),
        "{stdout}{stderr}"
    );
    assert_eq!(
        stderr
            .matches("warning: cannot read the metrics at 127.0.0.1:1")
            .count(),
        1,
        "{stderr}"
    );
    let e = s.fails(&["top", "--metrics", "127.0.0.1:1"]);
    assert!(e.contains("cannot read the metrics at 127.0.0.1:1"), "{e}");
    let empty = s.json(&["-a", "someone-else", "top", "--metrics", &addr, "--json"]);
    assert_eq!(empty, serde_json::json!([]));
    // stderr is a file here, not a terminal: plain text, no colour codes.
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log}");

    s.ok(&["-a", "hungry", "kill", &id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while value(&scrape(&addr), &series).is_some() {
        assert!(
            Instant::now() < deadline,
            "{series} stayed after the job ended"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metrics listener is a control listener like the API's: a client that sends no request
/// head is closed at the header timeout, and `/metrics` is all it serves.
#[test]
fn the_metrics_listener_times_out_silent_clients() {
    let s = TestServer::start_with(&[
        "--no-host".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--header-timeout".into(),
        "1".into(),
    ]);
    let addr = logged_addr(&s, "metrics on http://");
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(c, "GET /apps HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 404"), "{resp}");
}

/// Bound to an address other than loopback, the endpoint (which takes no credential) warns at
/// start that whoever reaches it reads the app names and job ids.
#[test]
fn a_metrics_listener_off_loopback_warns_that_it_is_open() {
    let s = TestServer::start_with(&[
        "--no-host".into(),
        "--metrics-listen".into(),
        "0.0.0.0:0".into(),
    ]);
    let addr = logged_addr(&s, "metrics on http://");
    let port = addr.rsplit_once(':').unwrap().1;
    // Served (on loopback too, as 0.0.0.0 is every address), and said to be open.
    let text = scrape(&format!("127.0.0.1:{port}"));
    assert!(text.contains("slipway_controller_requests_total"), "{text}");
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("is not a loopback address") && log.contains("firewall"),
        "{log}"
    );
}
