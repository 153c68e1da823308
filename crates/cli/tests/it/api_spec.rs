//! The controller API against its own description (`GET /openapi.json`, OpenAPI 3.1):
//! `openapi-spec-validator` accepts the description, and `schemathesis` (pinned, installed by
//! scripts/install-deps into a venv) fuzzes every operation of a live `slipway server` with a
//! fixed seed and example budget, stateful links included (it infers them: an app created, then
//! its releases, formations, routes…), and must find nothing: no 5xx, no response off the
//! description's schemas, statuses or content types, no bad input accepted, and no panic or
//! error in the server's log.
//!
//! Two checks are left out, on purpose (docs/api.md): `positive_data_acceptance` (input the
//! schemas admit must be accepted; the API's rules go past what JSON Schema says — app and
//! service names, the TCP route range a flag sets, certificates that must parse, `1.0` for an
//! integer), and `ensure_resource_availability` (a 404 after a create, which it also reports
//! when the 404 is about another object in the body, e.g. a deploy of a release that is not
//! there). The server has no host agent: nothing the fuzzer does starts a container or a build.

use crate::support::TestServer;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Examples per operation and phase, and the seed: the run takes ~30-60 s on 2 cores.
const EXAMPLES: &str = "25";
const SEED: &str = "20261206";

/// The whole run's bound: past it schemathesis is killed and the test fails with what it said
/// so far (a request that hangs has `--request-timeout`; this catches a run that does not end,
/// e.g. a stateful phase that keeps finding new links).
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn venv() -> PathBuf {
    std::env::var_os("SLIPWAY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/slipway-test-venv"))
}

/// The venv's `tool`, or None after a counted skip (a failure under CI).
fn tool(test: &str, tool: &str) -> Option<PathBuf> {
    let path = venv().join("bin").join(tool);
    let ok = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok
        && slipway_testkit::skip(
            test,
            &format!(
                "{} (scripts/install-deps --test installs it)",
                path.display()
            ),
        )
    {
        return None;
    }
    Some(path)
}

/// The server's log, with every line that says it failed: a panic, or an error (a 5xx logs one).
fn failures_in_log(s: &TestServer) -> Vec<String> {
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_description_is_valid_openapi_and_public() {
    let Some(validator) = tool(
        "api_spec::the_description_is_valid_openapi_and_public",
        "openapi-spec-validator",
    ) else {
        return;
    };
    let s = TestServer::start();
    // No key: the description is public, like /ping.
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET /openapi.json HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(" 200 "),
        "GET /openapi.json without a key: {head}"
    );
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, body).unwrap();
    let v = Command::new(validator).arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && said.contains("OK"), "{said}");
}

#[test]
fn schemathesis_finds_nothing_in_the_api() {
    let Some(st) = tool(
        "api_spec::schemathesis_finds_nothing_in_the_api",
        "schemathesis",
    ) else {
        return;
    };
    let s = TestServer::start();
    let key = s.key_from_data_dir();
    let started = Instant::now();
    let said_file = s.dir.path().join("schemathesis.out");
    let said_to = std::fs::File::create(&said_file).unwrap();
    let mut child = Command::new(st)
        .args(["run", &format!("{}/openapi.json", s.url)])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "all"])
        .args([
            "--exclude-checks",
            "positive_data_acceptance,ensure_resource_availability",
        ])
        .args(["--max-examples", EXAMPLES, "--seed", SEED])
        // One worker: hypothesis's lambda descriptions are not thread-safe on Python 3.11
        // ("AST constructor recursion depth mismatch"), and 2 cores gain little from more.
        .args([
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .args(["--request-timeout", "10"])
        .current_dir(s.dir.path())
        .env("NO_COLOR", "1")
        .stdout(said_to.try_clone().unwrap())
        .stderr(said_to)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&std::fs::read(&said_file).unwrap()).into_owned();
    let Some(status) = status else {
        panic!("schemathesis still ran after {RUN_LIMIT:?}: killed. It said:\n{said}");
    };
    // The summary, for the record of how much ran (`cargo test -- --nocapture` shows it).
    let summary: Vec<&str> = said
        .lines()
        .filter(|l| {
            ["generated", "Tested:", "API Links:", "Scenarios:"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    eprintln!("schemathesis: {summary:?} in {took:?}");
    assert!(status.success(), "schemathesis found something:\n{said}");
    assert!(
        said.contains("Tested: 41"),
        "not every operation was tested:\n{said}"
    );
    let failures = failures_in_log(&s);
    assert!(
        failures.is_empty(),
        "the server logged failures:\n{}",
        failures.join("\n")
    );
}
