//! Scheduler and deployment scenarios on real runc through the `slipway` binary: `slipway
//! server` with its local host agent, apps whose releases run busybox commands. Root only.

use crate::support::{HostServer, TestServer, skip_unless_root};
use slipway_types::{NewRelease, ProcessType};
use std::time::{Duration, Instant};

/// A web process that stops on SIGTERM.
const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 8080 & wait";

/// Creates an app whose current release runs `web` (and returns the release id).
fn app_with_web(s: &TestServer, name: &str, web: &[&str]) -> String {
    s.create_app(name);
    app_with_web_only(s, name, web)
}

/// Gives an existing app a current release that runs `web`.
fn app_with_web_only(s: &TestServer, name: &str, web: &[&str]) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = s.client();
        let r = c.create_release(name, &release(web)).await.unwrap();
        c.set_app_release(name, r.id).await.unwrap();
        r.id.to_string()
    })
}

fn release(web: &[&str]) -> NewRelease {
    let mut r = NewRelease::default();
    r.processes.insert(
        "web".into(),
        ProcessType {
            args: web.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    r
}

/// `==> TYPE ID STATE` lines of `scale` output, as `STATE`s.
fn event_states(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            l.split_once(" ==> ")
                .map(|(_, rest)| rest.split(' ').nth(2).unwrap_or("").to_string())
        })
        .filter(|s| s == "up" || s == "down")
        .collect()
}

/// Rows of `ps` (without the header), split on whitespace.
fn ps(s: &TestServer, app: &str, all: bool) -> Vec<Vec<String>> {
    let mut args = vec!["-a", app, "ps"];
    if all {
        args.push("-a");
    }
    s.ok(&args)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn scale_web_0_3_1_0_on_runc_and_a_killed_job_is_replaced() {
    if skip_unless_root("scale_web_0_3_1_0_on_runc_and_a_killed_job_is_replaced") {
        return;
    }
    let hs = HostServer::start(std::process::id() % 200, &[]);
    let s = &hs.s;
    // busybox httpd as PID 1 ignores SIGTERM (it would wait out the 30 s grace): trap it.
    let release = app_with_web(s, "web1", &["sh", "-c", HTTPD]);
    assert_eq!(s.ok(&["-a", "web1", "scale"]), "\n");
    let t0 = Instant::now();
    let out = s.ok(&["-a", "web1", "scale", "web=3"]);
    eprintln!("scale 0=>3 on runc took {:?}\n{out}", t0.elapsed());
    assert!(out.starts_with("scaling web: 0=>3\n\n"), "{out}");
    assert_eq!(event_states(&out), ["up", "up", "up"], "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("scale completed in "),
        "{out}"
    );
    let rows = ps(s, "web1", false);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        // ID TYPE STATE CREATED… RELEASE RESTARTS
        assert_eq!(
            (
                &r[1][..],
                &r[2][..],
                &r[r.len() - 2][..],
                &r[r.len() - 1][..]
            ),
            ("web", "up", &release[..], "0"),
            "{r:?}"
        );
    }
    assert_eq!(s.ok(&["-a", "web1", "scale"]), "web=3\n");

    // kill: the job goes down and the formation gets a new one.
    let victim = rows[0][0].clone();
    assert_eq!(
        s.ok(&["-a", "web1", "kill", &victim]),
        format!("Job {victim} killed.\n")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = ps(s, "web1", false);
        let all = ps(s, "web1", true);
        let victim_down = all.iter().any(|r| r[0] == victim && r[2] == "down");
        if victim_down && rows.len() == 3 && rows.iter().all(|r| r[2] == "up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "killed job not replaced: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = s.ok(&["-a", "web1", "scale", "web=1"]);
    assert!(out.starts_with("scaling web: 3=>1\n"), "{out}");
    assert_eq!(event_states(&out), ["down", "down"], "{out}");
    assert_eq!(ps(s, "web1", false).len(), 1);
    let out = s.ok(&["-a", "web1", "scale", "web=0"]);
    assert_eq!(event_states(&out), ["down"], "{out}");
    assert_eq!(ps(s, "web1", false).len(), 0);
    assert_eq!(
        s.ok(&["-a", "web1", "ps"]),
        "ID   TYPE   STATE   CREATED   RELEASE   RESTARTS\n"
    );

    let err = s.fails(&["-a", "web1", "scale", "foo=1"]);
    assert!(err.contains("unknown process types: \"foo\""), "{err}");
}

#[test]
fn a_crashing_process_restarts_with_backoff_and_run_d_reports_its_exit() {
    if skip_unless_root("a_crashing_process_restarts_with_backoff_and_run_d_reports_its_exit") {
        return;
    }
    let hs = HostServer::start(200 + std::process::id() % 200, &[]);
    let s = &hs.s;
    app_with_web(s, "crash", &["sh", "-c", "exit 3"]);
    let out = s.ok(&["-a", "crash", "scale", "--no-wait", "web=1"]);
    assert_eq!(out, "scaling web: 0=>1\n");
    // Restarts 1..5 come at once; the 6th waits 10 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fifth = loop {
        let rows = ps(s, "crash", true);
        if rows.iter().any(|r| r[r.len() - 1] == "5") {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "no 5th restart: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        deadline - fifth > Duration::from_secs(24),
        "5 restarts took more than 6 s"
    );
    let sixth = loop {
        let rows = ps(s, "crash", true);
        if rows.iter().any(|r| r[r.len() - 1] == "6") {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "no 6th restart: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let gap = sixth - fifth;
    assert!(
        gap >= Duration::from_millis(9_000),
        "the 6th restart came after {gap:?}, not ~10 s"
    );
    s.ok(&["-a", "crash", "scale", "web=0"]);

    let id = s
        .ok(&["-a", "crash", "run", "-d", "--", "sh", "-c", "exit 42"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs: serde_json::Value = s.json(&["-a", "crash", "ps", "-a", "--json"]);
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id.as_str())
            .cloned();
        if let Some(j) = job.filter(|j| j["state"] == "crashed") {
            assert_eq!(j["exit_status"], 42);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run -d job {id} never finished: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Attached: stdout and stderr apart, the exit code passed back.
    let out = s
        .cmd()
        .args([
            "-a",
            "crash",
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 42",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("out"));
    let out = s
        .cmd()
        .args(["-a", "crash", "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_release_whose_command_does_not_exist_fails_to_deploy_and_the_old_one_keeps_serving() {
    if skip_unless_root(
        "a_release_whose_command_does_not_exist_fails_to_deploy_and_the_old_one_keeps_serving",
    ) {
        return;
    }
    let hs = HostServer::start(400 + std::process::id() % 200, &[]);
    let s = &hs.s;
    let old = app_with_web(s, "bad", &["sh", "-c", HTTPD]);
    s.ok(&["-a", "bad", "scale", "web=2"]);
    let before = ps(s, "bad", false);
    // env set deploys the new release (same command): all-at-once replaces both jobs.
    let out = s.ok(&["-a", "bad", "env", "set", "A=1"]);
    assert!(
        out.lines().last().unwrap().starts_with("Created release "),
        "{out}"
    );
    assert_eq!(
        event_states(&out),
        ["up", "up", "down", "down"],
        "progress: {out}"
    );
    assert_eq!(s.ok(&["-a", "bad", "deployment", "timeout"]), "120\n");
    s.ok(&["-a", "bad", "deployment", "strategy", "one-by-one"]);
    assert_eq!(
        s.ok(&["-a", "bad", "deployment", "strategy"]),
        "one-by-one\n"
    );
    let err = s.fails(&["-a", "bad", "deployment", "strategy", "sideways"]);
    assert!(
        err.contains("unknown deploy strategy \"sideways\""),
        "{err}"
    );
    let rows = ps(s, "bad", false);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| before.iter().all(|b| b[0] != r[0])),
        "new jobs replaced the old ones"
    );
    let current = rows[0][rows[0].len() - 2].clone();
    assert_ne!(current, old);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let broken = rt.block_on(async {
        s.client()
            .create_release("bad", &release(&["foo"]))
            .await
            .unwrap()
            .id
            .to_string()
    });
    let err = s.fails(&["-a", "bad", "release", "rollback", "-y", &broken]);
    eprintln!("{err}\n{}", s.ok(&["-a", "bad", "ps", "-a", "--json"]));
    assert!(
        err.contains("deployment failed: web job failed to start: "),
        "{err}"
    );
    assert!(
        err.contains("web job failed to start: exec: \"foo\": executable file not found in $PATH"),
        "the error names the command: {err}"
    );
    let rows = ps(s, "bad", false);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r[r.len() - 2] == current && r[2] == "up"),
        "{rows:?}"
    );
    let deployments = s.ok(&["-a", "bad", "deployment"]);
    assert!(
        deployments.lines().nth(1).unwrap().contains(" failed "),
        "{deployments}"
    );
    s.ok(&["-a", "bad", "scale", "web=0"]);
}

#[test]
fn without_a_host_jobs_are_blocked_and_ps_says_so() {
    // No root needed: a server with no host agent.
    let s = TestServer::start();
    let err = s.fails(&["-a", "nohost", "scale", "web=1"]);
    assert!(
        err.contains("app \"nohost\" not found") || err.contains("not found"),
        "{err}"
    );
    s.create_app("nohost");
    let err = s.fails(&["-a", "nohost", "scale", "web=1"]);
    assert!(
        err.contains("app \"nohost\" has no release yet: push a release first"),
        "{err}"
    );
    app_with_web_only(&s, "nohost", &["sh", "-c", HTTPD]);
    let out = s.ok(&["-a", "nohost", "scale", "--no-wait", "web=2"]);
    assert_eq!(out, "scaling web: 0=>2\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = ps(&s, "nohost", false);
        if rows.len() == 2 {
            break rows;
        }
        assert!(Instant::now() < deadline, "no blocked jobs: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        rows.iter().all(|r| r[1] == "web" && r[2] == "blocked"),
        "{rows:?}"
    );
    let jobs = s.json(&["-a", "nohost", "ps", "--json"]);
    assert_eq!(
        jobs[0]["host_error"],
        "no host is available: waiting for one"
    );
    assert_eq!(s.ok(&["-a", "nohost", "scale"]), "web=2\n");
    let err = s.fails(&["-a", "nohost", "run", "-d", "--", "true"]);
    assert!(err.contains("no host is available to run the job"), "{err}");
    // Killing a blocked job ends it; the formation asks for another one.
    let victim = rows[0][0].clone();
    assert_eq!(
        s.ok(&["-a", "nohost", "kill", &victim]),
        format!("Job {victim} killed.\n")
    );
    let all = ps(&s, "nohost", true);
    assert!(
        all.iter().any(|r| r[0] == victim && r[2] == "down"),
        "{all:?}"
    );
    let err = s.fails(&["-a", "nohost", "kill", "nope"]);
    assert!(err.contains("job nope not found"), "{err}");
    // Tags per type, Flynn's way.
    s.ok(&[
        "-a",
        "nohost",
        "scale",
        "--no-wait",
        "web=2,disk=ssd,zone=a",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let formations = rt.block_on(s.client().formations("nohost")).unwrap();
    let web_tags = &formations[0].tags["web"];
    assert_eq!(
        (web_tags["disk"].as_str(), web_tags["zone"].as_str()),
        ("ssd", "a")
    );
    let err = s.fails(&["-a", "nohost", "scale", "web=1,disk"]);
    assert!(
        err.contains("invalid argument \"disk\": expected KEY=VALUE"),
        "{err}"
    );
    let out = s.ok(&["-a", "nohost", "scale", "--no-wait", "web=0"]);
    assert_eq!(out, "scaling web: 2=>0\n");
}

/// Deleting an app stops its jobs at once. The deletion removes the app's formations without
/// formation events, so the scheduler used to notice only at its 10 s resync.
#[test]
fn deleting_an_app_stops_its_jobs_without_waiting_for_the_resync() {
    if skip_unless_root("deleting_an_app_stops_its_jobs_without_waiting_for_the_resync") {
        return;
    }
    let hs = HostServer::start(2900 + std::process::id() % 100, &[]);
    let s = &hs.s;
    app_with_web(s, "gone1", &["sh", "-c", HTTPD]);
    let out = s.ok(&["-a", "gone1", "scale", "web=2"]);
    assert_eq!(event_states(&out), ["up", "up"], "{out}");
    let containers = s.dir.path().join("data/host/containers");
    let running = || std::fs::read_dir(&containers).map_or(0, |d| d.count());
    assert_eq!(running(), 2);
    let t0 = Instant::now();
    s.ok(&["-a", "gone1", "delete", "-y", "-r", ""]);
    while running() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "{} job(s) of the deleted app still on the host after {:?}",
            running(),
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("jobs of the deleted app gone after {:?}", t0.elapsed());
}
