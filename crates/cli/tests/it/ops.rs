//! The operator's views through the real binary: `slipway host list` on an embedded server
//! (real runc: its one host, with the jobs `scale` started), and `slipway cluster status` on
//! an embedded server and on one with a real 3-member etcd and PostgreSQL, also with an etcd
//! member stopped.

use crate::support::{HostServer, TestServer, skip_unless_root};
use std::time::{Duration, Instant};

/// A web process that stops on SIGTERM.
const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 8080 & wait";

/// The rows of `slipway host list` (without the header), split on whitespace.
fn host_rows(s: &TestServer) -> Vec<Vec<String>> {
    let out = s.ok(&["host", "list"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "STATE", "ADDRESS", "JOBS", "TAGS", "SINCE"],
        "{out}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn host_list_on_an_embedded_server_shows_its_host_up_with_its_jobs() {
    if skip_unless_root("host_list_on_an_embedded_server_shows_its_host_up_with_its_jobs") {
        return;
    }
    let hs = HostServer::start(3400 + std::process::id() % 100, &[]);
    let s = &hs.s;
    let rows = host_rows(s);
    assert_eq!(rows.len(), 1, "one host: {rows:?}");
    assert_eq!(rows[0][1..4], ["up", "in-process", "0"], "{rows:?}");
    let host_id = rows[0][0].clone();

    s.create_app("opsweb");
    let mut release = slipway_types::NewRelease::default();
    release.processes.insert(
        "web".into(),
        slipway_types::ProcessType {
            args: vec!["sh".into(), "-c".into(), HTTPD.into()],
            ..Default::default()
        },
    );
    crate::support::block_on(async {
        let c = s.client();
        let r = c.create_release("opsweb", &release).await.unwrap();
        c.set_app_release("opsweb", r.id).await.unwrap();
    });
    s.ok(&["-a", "opsweb", "scale", "web=2"]);
    let rows = host_rows(s);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..4],
        [&host_id, "up", "in-process", "2"],
        "{rows:?}"
    );
    // The alias and JSON say the same.
    let json = s.json(&["hosts", "--json"]);
    assert_eq!(json[0]["id"], host_id.as_str(), "{json}");
    assert_eq!(json[0]["state"], "up", "{json}");
    assert_eq!(json[0]["jobs"], 2, "{json}");
    assert!(json[0]["addr"].is_null(), "{json}");

    // The embedded server's status says what it is instead of failing for want of etcd.
    let status = s.json(&["cluster", "status", "--json"]);
    assert_eq!(status["coordination"], "in_process", "{status}");
    assert_eq!(status["store"], "sqlite", "{status}");
    assert_eq!(status["hosts"], 1, "{status}");
    assert_eq!(status["etcd"].as_array().unwrap().len(), 0, "{status}");
    let controllers = status["controllers"].as_array().unwrap();
    assert_eq!(controllers.len(), 1, "itself: {status}");
    let text = s.ok(&["cluster", "status"]);
    eprintln!("{text}\n{}", s.ok(&["host", "list"]));
    assert!(
        text.contains("Coordination: in-process (an embedded server"),
        "{text}"
    );
    assert!(text.contains("Store:        sqlite"), "{text}");
    assert!(text.contains("1 host followed"), "{text}");

    s.ok(&["-a", "opsweb", "scale", "web=0"]);
    let rows = host_rows(s);
    assert_eq!(
        rows[0][..4],
        [&host_id, "up", "in-process", "0"],
        "{rows:?}"
    );
}

/// `cluster status --json`, through the CLI.
fn status(s: &TestServer) -> serde_json::Value {
    s.json(&["cluster", "status", "--json"])
}

fn members(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["etcd"].as_array().cloned().unwrap_or_default()
}

fn count(members: &[serde_json::Value], field: &str) -> usize {
    members.iter().filter(|m| m[field] == true).count()
}

#[test]
fn cluster_status_with_etcd_and_postgres_lists_members_leader_store_and_controller() {
    let Some(db) = crate::support::block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let Some(mut etcd) = slipway_testkit::etcd::etcd_cluster(3) else {
        return;
    };
    let flags: Vec<String> = [
        "--no-host",
        "--no-router",
        "--discovery-listen",
        "127.0.0.1:0",
        "--etcd",
        &etcd.client_urls(),
        "--database-url",
        &db.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let s = TestServer::start_with(&flags);

    let st = status(&s);
    assert_eq!(st["coordination"], "etcd", "{st}");
    assert_eq!(st["store"], "postgres", "{st}");
    let m = members(&st);
    assert_eq!(m.len(), 3, "{st}");
    assert_eq!(count(&m, "healthy"), 3, "{st}");
    assert_eq!(count(&m, "leader"), 1, "{st}");
    for i in 0..3 {
        assert!(
            m.iter().any(|m| m["url"] == etcd.client_url(i).as_str()),
            "member {i} ({}) missing: {st}",
            etcd.client_url(i)
        );
    }
    let controllers = st["controllers"].as_array().unwrap();
    assert_eq!(controllers.len(), 1, "{st}");
    assert_eq!(controllers[0]["url"], s.url.as_str(), "{st}");
    let roles: Vec<&str> = st["leaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["scheduler", "housekeeping"], "{st}");
    let text = s.ok(&["cluster", "status"]);
    eprintln!("{text}");
    assert!(text.contains("Coordination: etcd (3 members)"), "{text}");
    assert!(text.contains("Store:        postgres"), "{text}");
    assert!(text.contains("ETCD MEMBER"), "{text}");

    // One member down: the status still answers, naming it unhealthy; the other two elect
    // (or keep) a leader.
    etcd.stop_member(2);
    let stopped = etcd.client_url(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s);
        let m = members(&st);
        let down = m.iter().find(|m| m["url"] == stopped.as_str());
        let settled = m.len() == 3
            && down.is_some_and(|d| d["healthy"] == false && d["leader"] == false)
            && count(&m, "healthy") == 2
            && count(&m, "leader") == 1;
        if settled {
            assert!(down.unwrap()["error"].is_string(), "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no settled status with member 2 stopped within 30 s: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = s.ok(&["cluster", "status"]);
    eprintln!("{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&stopped))
        .unwrap_or_else(|| panic!("no row for {stopped}: {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3..5], ["no", "no"], "{row}");
}

/// The controllers `cluster status` on `s` lists, by URL.
fn controller_urls(s: &TestServer) -> Vec<String> {
    let st = status(s);
    let mut urls: Vec<String> = st["controllers"]
        .as_array()
        .unwrap_or_else(|| panic!("{st}"))
        .iter()
        .map(|c| c["url"].as_str().unwrap_or_default().to_string())
        .collect();
    urls.sort();
    urls
}

#[test]
fn every_controller_on_etcd_is_listed_and_one_stopped_leaves_at_once() {
    let Some(db) = crate::support::block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
        return;
    };
    let flags: Vec<String> = [
        "--no-host",
        "--no-router",
        "--discovery-listen",
        "127.0.0.1:0",
        "--etcd",
        &etcd.client_urls(),
        "--database-url",
        &db.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a = TestServer::start_with(&flags);
    // B by hand, to stop it with SIGTERM as an operator (or systemd) would.
    let dir = tempfile::tempdir().unwrap();
    let mut b = Killed(
        std::process::Command::new(crate::support::BIN)
            .args(["server", "--no-register", "--listen", "127.0.0.1:0"])
            .args(&flags)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("b.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let b = &mut b.0;
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(b.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let b_url = first
        .trim()
        .strip_prefix("Listening on ")
        .unwrap_or_else(|| panic!("B said {first:?}"))
        .to_string();
    let mut both = vec![a.url.clone(), b_url.clone()];
    both.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller_urls(&a) != both {
        assert!(
            Instant::now() < deadline,
            "B never listed: {:?}",
            controller_urls(&a)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let t0 = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    b.wait().unwrap();
    // Well before discovery's 10 s TTL: it deregistered on its way out.
    while controller_urls(&a) != [a.url.clone()] {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "B still listed {:?} after SIGTERM: {:?}",
            t0.elapsed(),
            controller_urls(&a)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
