//! The host CLI (`slipway-host-agent` = `slipway host`): run-job streams output and returns the
//! job's exit code; ps, signal, stop and log talk to the daemon.

use crate::harness::*;
use crate::restart::{Cleanup, spawn_daemon};
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn run_job_ps_and_stop_through_the_cli() {
    if skip_unless_root("run_job_ps_and_stop_through_the_cli") {
        return;
    }
    busybox();
    let dir = tempfile::Builder::new()
        .prefix("slipway-cli")
        .tempdir()
        .unwrap();
    let names = Names::new();
    let (child, api) = spawn_daemon(&names, dir.path());
    let guard = Cleanup(names.clone(), dir.path().to_path_buf(), Some(child));
    let url = api.base_url().to_string();
    let token_file = dir.path().join("cluster-token");
    let cli = move |args: &[&str]| {
        let out = Command::new(agent_exe())
            .args(args)
            .env("SLIPWAY_HOST_URL", &url)
            .env("SLIPWAY_CLUSTER_TOKEN_FILE", &token_file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || {
            cli(&[
                "run-job",
                "--memory",
                "64MB",
                "-e",
                "WHO=cli",
                "--",
                "sh",
                "-c",
                "echo hello $WHO; exit 3",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert!(out.contains("hello cli"), "{out}");
    assert!(err.contains("exit 3"), "{err}");

    let (code, id, err) = cli(&[
        "run-job",
        "--detach",
        "--id",
        "cli-sleeper",
        "--grace",
        "1",
        "--",
        "sleep",
        "100",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(id.trim(), "cli-sleeper");
    let (_, ps, _) = cli(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("cli-sleeper") && l.contains("running")),
        "{ps}"
    );
    let (code, _, err) = cli(&["stop", "cli-sleeper"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(&["inspect", "nope"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no job nope"), "{err}");
    drop(guard);
}

/// Runs without root too (no skip): not root, the test runs the daemon as itself.
#[test]
fn the_daemon_says_it_needs_root() {
    if !slipway_testkit::is_root() {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(agent_exe())
            .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("must run as root"), "{err}");
        return;
    }
    // The binary is copied where `nobody` can execute it: the build's own directory may not be
    // reachable for it (a clone under /root), and that must not turn this test into a skip.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("slipway-host-agent");
    std::fs::copy(agent_exe(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let status = Command::new("chown")
        .arg("nobody")
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success(), "chown nobody {}", data.display());
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&exe)
        .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("must run as root"), "{err}");
}
