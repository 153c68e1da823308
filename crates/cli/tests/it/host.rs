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

fn slipway(args: &[&str], url: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SLIPWAY_HOST_URL", url)
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

    let (code, _, err) = slipway(
        &[
            "host",
            "run-job",
            "--detach",
            "--id",
            "adoptee",
            "--grace",
            "1",
            "--",
            "sh",
            "-c",
            "trap 'exit 9' USR1; while true; do echo alive; sleep 0.1; done",
        ],
        &d.url,
    );
    assert_eq!(code, Some(0), "{err}");
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
    assert!(
        logs.lines().filter(|l| l.ends_with(" alive")).count() >= 3,
        "{logs}"
    );
    let _ = d.kill9();
}
