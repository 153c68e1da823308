//! The skip helper under each environment: it panics (the test fails, naming what is missing)
//! when `CI` or `SLIPWAY_REQUIRE_ALL=1` forbids skipping, and otherwise records the skip in
//! `SLIPWAY_SKIP_LOG`. Each case runs this binary again as a child (`child` argument) with a
//! clean environment, so no case depends on the environment the suite itself runs in.

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let how = args.get(2).map(String::as_str).unwrap_or("");
        let skipped = match how {
            "skip" => slipway_testkit::skip("a_test", "a thing it needs"),
            "deliberately" => slipway_testkit::skip_deliberately("a_test", "not asked for"),
            other => panic!("unknown child case {other:?}"),
        };
        assert!(skipped, "skip returns true when it returns");
        return;
    }
    // Enough of libtest's interface for cargo test and nextest: `--list` names the one test
    // (none when the ignored ones are asked for); filters and other flags are ignored.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("skip_helper_fails_under_ci_and_records_otherwise: test");
        }
        return;
    }
    cases();
    println!("test skip_helper_fails_under_ci_and_records_otherwise ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}

/// Runs the child with only `env` set (plus PATH); returns (exit code, stderr, the skip log).
fn child(how: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child", how])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SLIPWAY_SKIP_LOG", &log)
        .env("CARGO_PKG_NAME", "some-crate")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

fn cases() {
    // A run that must be complete: the skip is a failure that says what is missing.
    for env in [
        &[("CI", "true")][..],
        &[("CI", "1")],
        &[("SLIPWAY_REQUIRE_ALL", "1")],
        &[("CI", "0"), ("SLIPWAY_REQUIRE_ALL", "1")],
    ] {
        let (code, err, log) = child("skip", env);
        assert_eq!(
            code,
            Some(101),
            "{env:?}: the child must panic; stderr: {err}"
        );
        assert!(
            err.contains("a_test cannot run: it needs a thing it needs"),
            "{env:?}: {err}"
        );
        assert_eq!(log, "", "{env:?}: a failure is not also a recorded skip");
    }
    // Otherwise a recorded skip, named by crate and test, and said on stderr.
    for env in [&[][..], &[("CI", "")], &[("CI", "0")], &[("CI", "false")]] {
        let (code, err, log) = child("skip", env);
        assert_eq!(code, Some(0), "{env:?}: {err}");
        assert_eq!(log, "some-crate: a_test\ta thing it needs\n", "{env:?}");
        assert!(
            err.contains("SKIPPED a_test: a thing it needs"),
            "{env:?}: {err}"
        );
    }
    // A deliberate skip (slow tests not asked for) never fails, and is counted all the same.
    let (code, err, log) = child("deliberately", &[("CI", "true")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(log, "some-crate: a_test\tnot asked for\n");
}
