//! Slow real-world tests, run when `SLIPWAY_SLOW_TESTS=1` (CI sets it): the bookworm stack
//! (debootstrap, cached across runs by recipe hash), pip from PyPI and npm from the npm registry
//! over HTTPS from a job's own netns.

use crate::harness::*;
use slipway_host::{HostApi, JobStatus};
use std::time::Duration;

/// True when the slow tests are asked for (`SLIPWAY_SLOW_TESTS=1`); otherwise a counted skip.
fn slow_tests_enabled(test: &str) -> bool {
    !slipway_testkit::skip_unless_slow(test)
}

#[tokio::test(flavor = "multi_thread")]
async fn build_job_reaches_pypi_over_https_on_the_bookworm_stack() {
    let name = "build_job_reaches_pypi_over_https_on_the_bookworm_stack";
    if !slow_tests_enabled(name) || skip_unless_root(name) {
        return;
    }
    let stacks = stacks_dir();
    tokio::task::spawn_blocking(move || slipway_host::stack::build(&stacks, "bookworm", true))
        .await
        .unwrap()
        .expect("building the bookworm stack");
    let h = TestHost::start().await;
    let mut j = job(
        "pip",
        &[
            "sh",
            "-c",
            "python3 -m venv /tmp/venv && /tmp/venv/bin/pip install --no-cache-dir --progress-bar off six \
             && /tmp/venv/bin/python -c 'import six; print(\"imported six\", six.__version__)' \
             && node -e 'console.log(\"node\", process.version)' \
             && cd /tmp && npm install --no-audit --no-fund --loglevel=error is-number \
             && node -e 'console.log(\"is-number\", require(\"/tmp/node_modules/is-number\")(5))'",
        ],
    );
    j.config.stack = "bookworm".into();
    j.process_type = "build".into();
    h.agent.add_job(j.clone()).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(300), h.agent.wait_job(&j.id))
        .await
        .expect("pip did not finish within 5 minutes")
        .unwrap();
    let logs: Vec<String> = log_lines(&h.agent, &j.id)
        .await
        .into_iter()
        .map(|l| l.msg)
        .collect();
    assert_eq!(
        done.status,
        JobStatus::Done,
        "{done:?}\n{}",
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|l| l.starts_with("imported six ")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l.starts_with("node v")), "{logs:?}");
    assert!(
        logs.iter().any(|l| l == "is-number true"),
        "npm over HTTPS: {logs:?}"
    );
}
