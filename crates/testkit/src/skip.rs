//! The one way a test skips: every missing precondition (root, PostgreSQL, a tool such as
//! skopeo, the slow tests not asked for) goes through [`skip`], so a skip is never silent.
//!
//! - When the run must be complete (`CI` set, or `SLIPWAY_REQUIRE_ALL=1`; `.ci/run` sets both), a
//!   missing precondition panics with what is missing: the test fails instead of reporting `ok`
//!   without having run. Slow tests not asked for are the one deliberate skip (they never panic);
//!   `.ci/run` asks for them.
//! - Otherwise the test says so on stderr (which nextest hides for passing tests) and appends a
//!   line `TEST<TAB>REASON` to the file named by `SLIPWAY_SKIP_LOG`; `scripts/test` sets it,
//!   counts the lines and prints the count and the reasons in its closing lines.

use std::io::Write;

/// True when no test may skip: `CI` is set (to anything but "", "0" or "false") or
/// `SLIPWAY_REQUIRE_ALL=1`.
pub fn require_all() -> bool {
    let on = |var: &str| {
        std::env::var(var)
            .map(|v| !matches!(v.trim(), "" | "0" | "false"))
            .unwrap_or(false)
    };
    on("CI") || on("SLIPWAY_REQUIRE_ALL")
}

/// The running test's name: libtest names the thread a test runs on after it. Used where the
/// caller does not know it (a shared `postgres()` helper).
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string()
}

/// Records that `test` does not run because `missing` is missing, and returns true (so callers
/// write `if skip(..) { return; }`). Under [`require_all`] it panics instead, naming what is
/// missing: a run that promises to be complete cannot report `ok` for a test that did not run.
pub fn skip(test: &str, missing: &str) -> bool {
    if require_all() {
        panic!(
            "{test} cannot run: it needs {missing}. Skipping is not allowed here (CI or \
             SLIPWAY_REQUIRE_ALL=1 is set): provide it, or unset both to let the test skip"
        );
    }
    record(test, missing);
    true
}

/// A deliberate skip that never panics: the test was not asked for (the slow tests without
/// `SLIPWAY_SLOW_TESTS=1`). Still counted.
pub fn skip_deliberately(test: &str, reason: &str) -> bool {
    record(test, reason);
    true
}

fn record(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    let Some(path) = std::env::var_os("SLIPWAY_SKIP_LOG").filter(|p| !p.is_empty()) else {
        return;
    };
    // One write of one short line with O_APPEND: lines from parallel test processes do not mix.
    // The package (cargo and nextest set CARGO_PKG_NAME when they run a test) tells apart tests
    // of the same name in two crates.
    let test = match std::env::var("CARGO_PKG_NAME") {
        Ok(pkg) if !pkg.is_empty() => format!("{pkg}: {test}"),
        _ => test.to_string(),
    };
    let line = format!("{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!(
            "{test} skipped ({reason}) but cannot record it in SLIPWAY_SKIP_LOG={}: {e}",
            path.to_string_lossy()
        );
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True (after [`skip`]) when not root: runc, mounts and network namespaces need it.
pub fn skip_unless_root(test: &str) -> bool {
    !is_root()
        && skip(
            test,
            "root (runc, mounts, network namespaces); run it as root",
        )
}

/// True (after a counted, deliberate skip) unless `SLIPWAY_SLOW_TESTS=1` asks for the slow
/// real-world tests (`.ci/run` sets it).
pub fn skip_unless_slow(test: &str) -> bool {
    std::env::var("SLIPWAY_SLOW_TESTS").as_deref() != Ok("1")
        && skip_deliberately(
            test,
            "a slow real-world test not asked for; set SLIPWAY_SLOW_TESTS=1 (CI does)",
        )
}

/// True (after [`skip`]) when `program` cannot be run (`program --version` fails); `install`
/// says how to get it.
pub fn skip_unless_program(test: &str, program: &str, install: &str) -> bool {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    !ok && skip(test, &format!("{program} ({install})"))
}
