//! A host agent in a process of its own: `slipway server --roles host --host-listen ADDR
//! --discovery-url …` serves its host API, registers itself in discovery, and the scheduler of
//! another process (controller, scheduler, discovery) follows it there — starts jobs on it,
//! and replaces them when the host process dies (kill -9) within 15 s. Real runc, real
//! processes, real HTTP.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `slipway server --roles host` process, killed on drop with what its jobs left.
pub(super) struct HostProcess {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    n: u32,
}

impl HostProcess {
    pub(super) fn start(
        dir: &Path,
        n: u32,
        discovery: &str,
        key: &str,
        token: &str,
    ) -> HostProcess {
        let log = dir.join("host.log");
        let data = dir.join("host-data");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "host", "--no-register"])
            .args(["--discovery-url", discovery])
            .args(["--host-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--bridge", &format!("slws{n}")])
            .args(["--nft-table", &format!("slws{n}")])
            .args([
                "--subnet",
                &format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
            ])
            .args(["--cgroup-parent", &format!("slipway-srvtest-{n}")])
            .arg("--stacks-dir")
            .arg(std::env::temp_dir().join("slipway-test-stacks"))
            .env("SLIPWAY_API_KEY", key)
            .env("SLIPWAY_CLUSTER_TOKEN", token)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the host process");
        HostProcess {
            child,
            data,
            log,
            n,
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The host's id, once it registered in discovery.
    pub(super) fn registered_id(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains("registered in discovery") {
            assert!(
                Instant::now() < deadline,
                "the host never registered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(self.data.join("host/host-id"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
        remove_host_leftovers(
            &self.data.join("host"),
            &format!("slipway-srvtest-{}", self.n),
            &format!("slws{}", self.n),
        );
    }
}

/// The app's job rows: (id, state, host, host error).
fn rows(s: &TestServer, app: &str) -> Vec<(String, String, String, String)> {
    let c = s.client();
    block_on(async move { c.jobs(app).await.unwrap() })
        .into_iter()
        .map(|j| {
            (
                j.id,
                j.state.as_str().to_string(),
                j.host_id.unwrap_or_default(),
                j.host_error.unwrap_or_default(),
            )
        })
        .collect()
}

fn wait_rows(
    s: &TestServer,
    app: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = rows(s, app);
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_host_only_process_runs_the_jobs_of_another_processs_scheduler_and_is_lost_when_killed() {
    if skip_unless_root("a_host_only_process_runs_the_jobs_of_another_processs_scheduler") {
        return;
    }
    let n = 3100 + std::process::id() % 100;
    let s = TestServer::start_with(&[
        "--roles".into(),
        "controller,scheduler,discovery,logs".into(),
        "--discovery-listen".into(),
        "127.0.0.1:0".into(),
        // The host registers its loopback API address.
        "--discovery-allow".into(),
        "127.0.0.1".into(),
    ]);
    let discovery = format!("http://{}", logged_addr(&s, "discovery API on http://"));
    let mut host = HostProcess::start(s.dir.path(), n, &discovery, &s.key(), &cluster_token(&s));
    let host_id = host.registered_id();

    // A second host with the same id (a copied data dir) refuses to start, saying why.
    let twin_dir = s.dir.path().join("twin");
    std::fs::create_dir_all(twin_dir.join("host-data/host")).unwrap();
    std::fs::write(twin_dir.join("host-data/host/host-id"), &host_id).unwrap();
    let mut twin = HostProcess::start(&twin_dir, n + 100, &discovery, &s.key(), &cluster_token(&s));
    let status = twin.child.wait().unwrap();
    assert!(!status.success());
    let log = twin.log();
    assert!(
        log.contains(&format!("another host with id {host_id} is registered")),
        "{log}"
    );
    drop(twin);

    s.create_app("far");
    let c = s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hello from far; exec sleep 3600".into(),
                ],
                ..Default::default()
            },
        );
        let r = c.create_release("far", &r).await.unwrap();
        c.set_app_release("far", r.id).await.unwrap();
    });
    s.ok(&["-a", "far", "scale", "web=2"]);
    let up = wait_rows(
        &s,
        "far",
        "2 jobs up on the remote host",
        Duration::from_secs(60),
        |r| r.iter().filter(|j| j.1 == "up" && j.2 == host_id).count() == 2,
    );
    assert!(up.iter().all(|j| j.1 != "up" || j.2 == host_id), "{up:#?}");

    // The host process dies: its registration expires and the scheduler marks its jobs lost.
    host.kill();
    let t0 = Instant::now();
    let lost = wait_rows(
        &s,
        "far",
        "the host's jobs lost",
        Duration::from_secs(20),
        |r| r.iter().filter(|j| j.2 == host_id && j.1 == "down").count() == 2,
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "lost after {took:?}: {lost:#?}"
    );
    assert!(
        lost.iter()
            .filter(|j| j.2 == host_id)
            .all(|j| j.3.contains(&format!("host {host_id} was lost"))),
        "{lost:#?}"
    );
    // Nowhere else to go: the replacements wait for a host.
    wait_rows(
        &s,
        "far",
        "replacements blocked",
        Duration::from_secs(10),
        |r| r.iter().filter(|j| j.1 == "blocked").count() == 2,
    );
}

/// A `slipway server --roles discovery` process, killed on drop.
struct DiscoveryProcess {
    child: Child,
    log: PathBuf,
}

impl DiscoveryProcess {
    fn start(dir: &Path, key: &str) -> DiscoveryProcess {
        let log = dir.join("discovery.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "discovery", "--no-register"])
            .args(["--discovery-listen", "127.0.0.1:0"])
            .args(["--discovery-allow", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.join("discovery-data"))
            .env("SLIPWAY_API_KEY", key)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the discovery process");
        DiscoveryProcess { child, log }
    }

    fn url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let marker = "discovery API on http://";
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = log.split(marker).nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                return format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "no {marker:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DiscoveryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_log(s: &TestServer) -> String {
    std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default()
}

fn wait_log(s: &TestServer, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !server_log(s).contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            server_log(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster token a controller settled in the store (and copied to its data dir): what a
/// host process of its cluster must present.
pub(super) fn cluster_token(s: &TestServer) -> String {
    std::fs::read_to_string(s.dir.path().join("data").join("cluster-token"))
        .expect("the controller's cluster-token file")
        .trim()
        .to_string()
}

/// Every job the host was ever asked to start (its agent keeps finished ones).
fn started_on(host_api: &str, token: &str) -> usize {
    let api = slipway_host::client::HttpHost::new(host_api, token);
    block_on(async move {
        use slipway_host::HostApi;
        api.list_jobs().await.unwrap().len()
    })
}

#[test]
fn two_schedulers_on_one_postgres_start_each_job_once_and_a_paused_leader_is_fenced() {
    if skip_unless_root("two_schedulers_on_one_postgres") {
        return;
    }
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let n = 3300 + std::process::id() % 100;
    let dir = tempfile::tempdir().unwrap();
    let key = "k".repeat(24) + &std::process::id().to_string();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, &key).unwrap();
    let discovery = DiscoveryProcess::start(dir.path(), &key);
    let d = discovery.url();
    let controller = |_: &str| {
        TestServer::start_with(&[
            "--roles".into(),
            "controller,scheduler".into(),
            "--database-url".into(),
            db.url.clone(),
            "--discovery-url".into(),
            d.clone(),
            "--api-key-file".into(),
            key_file.display().to_string(),
        ])
    };
    let mut a = controller("a");
    wait_log(
        &a,
        "acting as the scheduler leader",
        Duration::from_secs(30),
    );
    let b = controller("b");
    let token = cluster_token(&a);
    let host = HostProcess::start(dir.path(), n, &d, &key, &token);
    let host_id = host.registered_id();
    // Scaled before the leader follows the host, the jobs would first be `blocked` rows (then
    // placed under new ids): wait, so each job has one row.
    wait_log(&a, "following a registered host", Duration::from_secs(30));
    let host_api = {
        let log = host.log();
        let rest = log.split("host API on http://").nth(1).unwrap().to_string();
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        format!("http://{addr}")
    };

    // Both follow the host; only the leader starts jobs, each once.
    a.create_app("duo");
    let c = a.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            },
        );
        let r = c.create_release("duo", &r).await.unwrap();
        c.set_app_release("duo", r.id).await.unwrap();
    });
    b.ok(&["-a", "duo", "scale", "--no-wait", "web=2"]);
    wait_rows(&b, "duo", "2 up", Duration::from_secs(60), |r| {
        r.iter().filter(|j| j.1 == "up" && j.2 == host_id).count() == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(started_on(&host_api, &token), 2, "a job was started twice");
    let all = rows(&b, "duo");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(!server_log(&b).contains("acting as the scheduler leader"));

    // `kill` and `run` through the follower's controller go to the leader's.
    let victim = rows(&b, "duo").remove(0).0;
    b.ok(&["-a", "duo", "kill", &victim]);
    wait_rows(
        &b,
        "duo",
        "the killed job replaced",
        Duration::from_secs(30),
        |r| {
            r.iter().any(|j| j.0 == victim && j.1 == "down")
                && r.iter().filter(|j| j.1 == "up").count() == 2
        },
    );
    let out = b.ok(&["-a", "duo", "run", "-d", "--", "sleep", "1"]);
    wait_rows(
        &b,
        "duo",
        "the one-off job ran",
        Duration::from_secs(30),
        |r| r.iter().any(|j| out.contains(&j.0) && j.1 == "down"),
    );
    // Attached: started by the leader, its output read through the follower's host connection.
    let out = b.ok(&["-a", "duo", "run", "--", "echo", "through-the-follower"]);
    assert!(out.contains("through-the-follower"), "{out}");
    let started_before = started_on(&host_api, &token);
    assert_eq!(started_before, 5, "2 + the replacement + two one-offs");

    // The leader is paused (SIGSTOP: to the others it is dead); a scale issued meanwhile is
    // finished by the other, which takes over.
    let signal = |sig: &str| {
        let pid = a.pid().to_string();
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let t0 = Instant::now();
    b.ok(&["-a", "duo", "scale", "--no-wait", "web=3"]);
    // The takeover first: a row still `up` from before the pause could make "3 up" true
    // before the new leader has started anything.
    wait_log(
        &b,
        "acting as the scheduler leader",
        Duration::from_secs(40),
    );
    wait_rows(&b, "duo", "3 up", Duration::from_secs(40), |r| {
        r.iter().filter(|j| j.1 == "up").count() == 3
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while started_on(&host_api, &token) < started_before + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took over after {:?}",
        t0.elapsed()
    );
    assert_eq!(started_on(&host_api, &token), started_before + 1);

    // It resumes: its lease has passed and a newer epoch leads, so it starts, stops and writes
    // nothing (a round it was in the middle of is refused by the host and the store).
    signal("-CONT");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        started_on(&host_api, &token),
        started_before + 1,
        "a job was started twice"
    );
    let live = rows(&b, "duo");
    assert_eq!(live.iter().filter(|j| j.1 == "up").count(), 3, "{live:#?}");
    wait_log(&a, "the scheduler stops acting", Duration::from_secs(5));
    a.kill();
    b.ok(&["-a", "duo", "scale", "--no-wait", "web=1"]);
    wait_rows(&b, "duo", "1 up", Duration::from_secs(30), |r| {
        r.iter().filter(|j| j.1 == "up").count() == 1
    });
    drop(host);
    drop(discovery);
}

/// A `git push` through a controller whose scheduler does not lead: its build job is handed
/// to the leader's controller (only the leader starts jobs), runs on the host, and the push
/// deploys — before, it was refused with the leader's URL.
#[test]
fn a_push_through_a_controller_whose_scheduler_does_not_lead_builds_and_deploys() {
    if skip_unless_root("a_push_through_a_follower_controller") {
        return;
    }
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let n = 3500 + std::process::id() % 100;
    let dir = tempfile::tempdir().unwrap();
    let key = "p".repeat(24) + &std::process::id().to_string();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, &key).unwrap();
    let discovery = DiscoveryProcess::start(dir.path(), &key);
    let d = discovery.url();
    let controller = || {
        TestServer::start_with(&[
            "--roles".into(),
            "controller,scheduler,builder,blobstore".into(),
            "--database-url".into(),
            db.url.clone(),
            "--discovery-url".into(),
            d.clone(),
            "--api-key-file".into(),
            key_file.display().to_string(),
        ])
    };
    let a = controller();
    wait_log(
        &a,
        "acting as the scheduler leader",
        Duration::from_secs(30),
    );
    let b = controller();
    let token = cluster_token(&a);
    let host = HostProcess::start(dir.path(), n, &d, &key, &token);
    let host_id = host.registered_id();
    wait_log(&a, "following a registered host", Duration::from_secs(30));
    wait_log(&b, "following a registered host", Duration::from_secs(30));

    let app = "relayed";
    let src = crate::push::app_repo(
        &b,
        app,
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "relayed\n"),
        ],
    );
    crate::push::create_in(&b, &src, app);
    let (ok, err) = crate::push::push(&b, &src, "main");
    assert!(ok, "the push through the follower failed:\n{err}");
    assert!(err.contains("Application deployed"), "{err}");
    assert!(
        !server_log(&b).contains("acting as the scheduler leader"),
        "b was meant to be the follower"
    );
    wait_rows(
        &b,
        app,
        "web up on the host",
        Duration::from_secs(30),
        |r| r.iter().any(|j| j.1 == "up" && j.2 == host_id),
    );
    drop(host);
}
