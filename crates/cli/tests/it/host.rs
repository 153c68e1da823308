//! Host agent end-to-end tests through the real `slipway` binary: `slipway host daemon` runs
//! jobs on runc (its shims are `slipway host shim`), `slipway host run-job/ps/stop` drive it,
//! and a `kill -9`ed daemon re-adopts its jobs when restarted. Root-only tests say when skipped.

use crate::support::skip_unless_root;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_slipway");
fn stacks_dir() -> PathBuf {
    std::env::temp_dir().join("slipway-test-stacks")
}

/// The cluster token the test daemons are started with (the host API refuses anything else).
const TOKEN: &str = "host-test-token";

fn slipway(args: &[&str], url: &str) -> (Option<i32>, String, String) {
    slipway_with_token(args, url, TOKEN)
}

fn slipway_with_token(args: &[&str], url: &str, token: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SLIPWAY_HOST_URL", url)
        .env("SLIPWAY_CLUSTER_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `slipway host daemon` with a bridge, subnet, nft table and cgroup parent of its own.
struct Daemon {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
    n: u32,
}

impl Daemon {
    fn start(dir: tempfile::TempDir, n: u32) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["host", "daemon", "--listen", "127.0.0.1:0"])
            .env("SLIPWAY_CLUSTER_TOKEN", TOKEN)
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--bridge",
                &format!("slwc{n}"),
                "--nft-table",
                &format!("slwc{n}"),
            ])
            .args([
                "--subnet",
                &format!("100.{}.{}.0/24", 200 + n / 256, n % 256),
            ])
            .args(["--cgroup-parent", &format!("slipway-clitest-{n}")])
            .arg("--stacks-dir")
            .arg(stacks_dir())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("slipway host daemon did not start: {line:?}"))
            .to_string();
        Daemon {
            child: Some(child),
            url: format!("http://{addr}"),
            dir,
            n,
        }
    }

    fn kill9(&mut self) -> tempfile::TempDir {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        crate::support::remove_host_leftovers(
            self.dir.path(),
            &format!("slipway-clitest-{}", self.n),
            &format!("slwc{}", self.n),
        );
    }
}

#[test]
fn host_help_lists_the_agent_commands() {
    let (code, out, _) = slipway(&["host", "--help"], "http://127.0.0.1:1");
    assert_eq!(code, Some(0));
    for cmd in [
        "daemon", "run-job", "ps", "stop", "signal", "log", "status", "stack",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from:\n{out}");
    }
    let (code, _, err) = slipway(&["host", "ps"], "http://127.0.0.1:1");
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot reach the host agent"), "{err}");
}

#[test]
fn slipway_host_runs_jobs_and_readopts_them_after_kill_9() {
    if skip_unless_root("slipway_host_runs_jobs_and_readopts_them_after_kill_9") {
        return;
    }
    let (code, _, err) = slipway(
        &[
            "host",
            "stack",
            "build",
            "busybox",
            "--stacks-dir",
            stacks_dir().to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    let n = std::process::id() % 10_000;
    let mut d = Daemon::start(tempfile::tempdir().unwrap(), n);

    let (code, out, err) = slipway(
        &[
            "host",
            "run-job",
            "-e",
            "X=42",
            "--",
            "sh",
            "-c",
            "echo x is $X; exit 5",
        ],
        &d.url,
    );
    assert_eq!(code, Some(5), "{out}\n{err}");
    assert!(out.contains("x is 42"), "{out}");
    // The host API refuses another token.
    let (code, _, err) = slipway_with_token(&["host", "ps"], &d.url, "not-the-token");
    assert_ne!(code, Some(0));
    assert!(err.contains("invalid cluster token"), "{err}");

    // The marker finds the job's shell among the host's processes, to tell "adopted" (the same
    // process) from "started again" (a new one, whose counter starts over at 0).
    let marker = format!("adoptee-marker-{}", std::process::id());
    let script = format!(
        "trap 'exit 9' USR1; i=0; while true; do echo alive $i; i=$((i+1)); sleep 0.1; done #{marker}"
    );
    let (code, _, err) = slipway(
        &[
            "host", "run-job", "--detach", "--id", "adoptee", "--grace", "1", "--", "sh", "-c",
            &script,
        ],
        &d.url,
    );
    assert_eq!(code, Some(0), "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = pids_with(&marker);
        if !pids.is_empty() || std::time::Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !pids.is_empty(),
        "the job's shell (and its init) among the host's processes"
    );
    std::thread::sleep(Duration::from_millis(300));

    let dir = d.kill9();
    drop(d);
    let mut d = Daemon::start(dir, n);
    let (_, ps, _) = slipway(&["host", "ps"], &d.url);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("adoptee") && l.contains("running")),
        "{ps}"
    );
    assert_eq!(
        pids_with(&marker),
        pids,
        "the adopted job is the process that ran before the kill -9, not a new one"
    );
    let (code, _, err) = slipway(&["host", "signal", "adoptee", "USR1"], &d.url);
    assert_eq!(code, Some(0), "{err}");
    // `wait` returns once the job has finished and is cleaned up, with its exit code.
    let (code, _, err) = slipway(&["host", "wait", "adoptee"], &d.url);
    assert_eq!(code, Some(9), "the adopted job's exit code: {err}");
    assert!(err.contains("exit 9"), "{err}");
    let (_, ps, _) = slipway(&["host", "ps"], &d.url);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("adoptee") && l.contains("exit 9")),
        "{ps}"
    );
    let (_, logs, _) = slipway(&["host", "log", "adoptee"], &d.url);
    let counts: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.rsplit_once(" alive ")?.1.trim().parse().ok())
        .collect();
    assert!(counts.len() >= 3, "{logs}");
    assert!(
        counts.iter().enumerate().all(|(i, c)| *c == i as u64),
        "the job's counter went on across the agent's kill -9, never starting over: {counts:?}"
    );
    let _ = d.kill9();
}

/// Host pids whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect();
    pids.sort();
    pids
}
