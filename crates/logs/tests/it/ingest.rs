//! Ingest from a host agent through `HostApi` (the agent on the fake runtime, whose jobs write
//! one line `started: ARGS`): which jobs are logged, platform lines from job events, and no
//! duplicate after the aggregator restarts. Lines of real runc jobs: `crates/cli/tests/it/logs.rs`.

use crate::open;
use slipway_host::attach::AttachConfig;
use slipway_host::fake::FakeRuntime;
use slipway_host::{Agent, AgentConfig, HostApi, HostJob, JobConfig};
use slipway_logs::{Aggregator, Query};
use slipway_types::{LOG_METADATA_KEY, LogEntry};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP: &str = "0b6f3a44-0000-4000-8000-0000000000aa";

fn job(id: &str, ptype: &str, args: &[&str]) -> HostJob {
    HostJob {
        id: id.into(),
        app_id: APP.into(),
        app_name: "demo".into(),
        release_id: "r1".into(),
        process_type: ptype.into(),
        metadata: Default::default(),
        config: JobConfig::new("busybox", args),
        resources: Default::default(),
    }
}

async fn wait_for(
    agg: &Aggregator,
    what: &str,
    within: Duration,
    ok: impl Fn(&[LogEntry]) -> bool,
) -> Vec<LogEntry> {
    let deadline = Instant::now() + within;
    loop {
        let all = agg.read(APP, &Query::default()).await.unwrap();
        if ok(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}; got {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines_of<'a>(all: &'a [LogEntry], job: &str, stream: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|e| e.job_id == job && e.stream == stream)
        .map(|e| e.msg.as_str())
        .collect()
}

/// Also: what jobs write while the aggregator is down arrives once it is back (it loses
/// nothing), and what it had stored already does not arrive again.
///
/// A `FakeRuntime` job writes one line, at start, so no job here has lines both before and
/// after the restart: resuming a job's log from its saved point (the skipper) is checked by
/// `aggregator::a_job_read_again_after_a_restart_stores_only_what_was_written_while_down` and,
/// on runc, by the CLI's `logs::a_restart_while_a_job_writes_loses_and_repeats_nothing`. This
/// one checks that the restarted follower reads the jobs that started and ended meanwhile.
#[tokio::test]
async fn jobs_lines_and_platform_lines_arrive_and_a_restart_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host_dir = dir.path().join("host");
    let agent = Agent::start(AgentConfig::new(&host_dir), Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    let host: Arc<dyn HostApi> = Arc::new(agent);
    // A job that ran before the aggregator existed is read too.
    host.add_job(job("early", "worker", &["exit", "0"]))
        .await
        .unwrap();
    host.wait_job("early").await.unwrap();

    let logs = dir.path().join("logs");
    let agg = open(&logs, 1000);
    let following = slipway_logs::follow_host(agg.clone(), host.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.add_job(job("web1", "web", &["sleep", "1000"]))
        .await
        .unwrap();
    host.add_job(job("crash", "worker", &["exit", "3"]))
        .await
        .unwrap();
    // One-off jobs: detached ones, and attached ones with the log flag in their metadata.
    let attached = |id: &str| {
        let mut j = job(id, "", &["exit", "0"]);
        j.config.attach = Some(AttachConfig {
            tty: false,
            cols: 0,
            rows: 0,
        });
        j
    };
    host.add_job(attached("attached")).await.unwrap();
    let mut logged = attached("attached-logged");
    logged.metadata.insert(LOG_METADATA_KEY.into(), "1".into());
    host.add_job(logged).await.unwrap();
    host.add_job(job("detached", "", &["exit", "0"]))
        .await
        .unwrap();

    let all = wait_for(
        &agg,
        "every logged job's line",
        Duration::from_secs(10),
        |all| {
            ["early", "web1", "crash", "detached", "attached-logged"]
                .iter()
                .all(|j| lines_of(all, j, "stdout").len() == 1)
                && lines_of(all, "crash", "init")
                    .iter()
                    .any(|m| m.contains("exit 3"))
        },
    )
    .await;
    assert_eq!(lines_of(&all, "web1", "stdout"), ["started: sleep 1000"]);
    let web = all.iter().find(|e| e.job_id == "web1").unwrap();
    assert_eq!(
        (
            web.app.as_str(),
            web.process_type.as_str(),
            web.release_id.as_str()
        ),
        ("demo", "web", "r1")
    );
    assert!(!web.host_id.is_empty());
    assert!(
        lines_of(&all, "web1", "init")
            .iter()
            .any(|m| m.starts_with("Starting process with command `sleep 1000`")),
        "{all:#?}"
    );
    assert_eq!(
        lines_of(&all, "crash", "init").last().copied(),
        Some("Process exited (exit 3)")
    );
    assert!(
        all.iter().all(|e| e.job_id != "attached"),
        "attached run is not logged"
    );
    let before = all.len();

    // Restart: a new aggregator on the same directory, following the same host.
    following.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    agg.flush().unwrap();
    drop(agg);
    // Jobs write while no aggregator runs: one starts and finishes, one starts and keeps running.
    host.add_job(job("down-done", "worker", &["exit", "0"]))
        .await
        .unwrap();
    host.wait_job("down-done").await.unwrap();
    host.add_job(job("down-web", "web", &["sleep", "1000"]))
        .await
        .unwrap();
    let agg = open(&logs, 1000);
    assert_eq!(
        agg.read(APP, &Query::default()).await.unwrap().len(),
        before
    );
    slipway_logs::follow_host(agg.clone(), host.clone());
    host.add_job(job("web2", "web", &["sleep", "1000"]))
        .await
        .unwrap();
    // Within 3 s: the restarted follower reads the host's jobs at once, not at its next
    // 10-second resync (which would also pick up what an event-only follower missed).
    let all = wait_for(
        &agg,
        "the lines written while down and the new job's line",
        Duration::from_secs(3),
        |all| {
            ["down-done", "down-web", "web2"]
                .iter()
                .all(|j| lines_of(all, j, "stdout").len() == 1)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all2 = agg.read(APP, &Query::default()).await.unwrap();
    assert_eq!(all.len(), all2.len(), "nothing arrived twice");
    for j in [
        "early",
        "web1",
        "crash",
        "detached",
        "attached-logged",
        "down-done",
        "down-web",
        "web2",
    ] {
        assert_eq!(lines_of(&all2, j, "stdout").len(), 1, "{j}: {all2:#?}");
    }
    let seqs: Vec<u64> = all2.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}
