//! History, retention, restarts, splitting and follow, on the aggregator itself.

use crate::{open, src};
use futures_util::StreamExt;
use slipway_logs::{Aggregator, Config, Query, Retention};
use slipway_types::Timestamp;
use std::time::Duration;

const APP: &str = "0b6f3a44-0000-4000-8000-000000000001";

fn append(agg: &Aggregator, job: &str, stream: &str, msg: &str) {
    agg.append(&src(APP, "web", job), Timestamp::now(), stream, msg)
        .unwrap();
}

#[tokio::test]
async fn with_a_limit_of_1000_writing_5000_keeps_exactly_the_last_1000() {
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), 1000);
    for i in 0..5000 {
        append(&agg, "j1", "stdout", &format!("line {i}"));
    }
    let all = agg.read(APP, &Query::default()).await.unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(all[0].msg, "line 4000");
    assert_eq!(all[999].msg, "line 4999");
    // Disk stays bounded: at most one segment (an eighth) more than the limit.
    agg.flush().unwrap();
    let files = std::fs::read_dir(dir.path().join(APP)).unwrap().count();
    assert!(files <= 9, "{files} segment files");
    let lines: usize = std::fs::read_dir(dir.path().join(APP))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert!((1000..=1125).contains(&lines), "{lines} lines on disk");
    // The last N.
    let q = Query {
        lines: Some(3),
        ..Default::default()
    };
    let last: Vec<String> = agg
        .read(APP, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.msg)
        .collect();
    assert_eq!(last, ["line 4997", "line 4998", "line 4999"]);
}

#[tokio::test]
async fn history_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let agg = open(dir.path(), 100);
        for i in 0..150 {
            append(&agg, "j1", "stdout", &format!("before {i}"));
        }
        agg.flush().unwrap();
    }
    // A torn last line (a crash mid-write) is dropped, not fatal.
    let seg = std::fs::read_dir(dir.path().join(APP))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(b"{\"seq\":9999,\"ts\":")
        .unwrap();
    let agg = open(dir.path(), 100);
    append(&agg, "j1", "stdout", "after");
    let all = agg.read(APP, &Query::default()).await.unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[0].msg, "before 51");
    assert_eq!(all[98].msg, "before 149");
    assert_eq!(all[99].msg, "after");
    assert_eq!(all[99].seq, all[98].seq + 1, "sequence numbers go on");
}

#[tokio::test]
async fn a_10050_byte_line_is_split_10000_and_50() {
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), 100);
    append(&agg, "j1", "stdout", &"x".repeat(10_050));
    let all = agg.read(APP, &Query::default()).await.unwrap();
    let lens: Vec<usize> = all.iter().map(|e| e.msg.len()).collect();
    assert_eq!(lens, [10_000, 50]);
}

#[tokio::test]
async fn filters_by_type_job_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), 100);
    append(&agg, "j1", "stdout", "web out");
    append(&agg, "j1", "stderr", "web err");
    agg.append(
        &src(APP, "worker", "j2"),
        Timestamp::now(),
        "stdout",
        "worker out",
    )
    .unwrap();
    let msgs = |q: Query| {
        let agg = agg.clone();
        async move {
            agg.read(APP, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.msg)
                .collect::<Vec<_>>()
        }
    };
    let q = |t: Option<&str>, j: Option<&str>, s: Option<&str>| Query {
        process_type: t.map(str::to_string),
        job_id: j.map(str::to_string),
        stream: s.map(str::to_string),
        lines: None,
    };
    assert_eq!(msgs(q(Some("worker"), None, None)).await, ["worker out"]);
    assert_eq!(
        msgs(q(None, Some("j1"), None)).await,
        ["web out", "web err"]
    );
    assert_eq!(msgs(q(None, None, Some("stderr"))).await, ["web err"]);
    assert_eq!(
        msgs(q(Some("web"), None, Some("stdout"))).await,
        ["web out"]
    );
    // An app with no lines has an empty history, not an error.
    let other = "0b6f3a44-0000-4000-8000-000000000002";
    assert!(agg.read(other, &Query::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn lines_older_than_the_max_age_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::open(Config {
        dir: dir.path().to_path_buf(),
        retention: Retention {
            max_lines: 1000,
            max_age: Some(Duration::from_secs(3600)),
        },
    })
    .unwrap();
    let old = Timestamp::from_datetime(time::OffsetDateTime::now_utc() - Duration::from_secs(7200));
    let s = src(APP, "web", "j1");
    agg.append(&s, old, "stdout", "old").unwrap();
    agg.append(&s, Timestamp::now(), "stdout", "new").unwrap();
    let msgs: Vec<String> = agg
        .read(APP, &Query::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.msg)
        .collect();
    assert_eq!(msgs, ["new"]);
}

/// A writer appends all the time while followers start: each follower's lines (history, then
/// live) are consecutive sequence numbers — no gap, no duplicate at the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_has_no_gap_and_no_duplicate_at_the_seam() {
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), 100_000);
    let writer = {
        let agg = agg.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..20_000 {
                append(&agg, "j1", "stdout", &format!("line {i}"));
            }
        })
    };
    let mut followers = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let agg = agg.clone();
        followers.push(tokio::spawn(async move {
            let mut s = agg.follow(APP, &Query::default()).await.unwrap();
            let mut seqs = Vec::new();
            while let Some(e) = s.next().await {
                seqs.push(e.seq);
                if e.seq == 20_000 {
                    break;
                }
            }
            seqs
        }));
    }
    writer.await.unwrap();
    for f in followers {
        let seqs = tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("a follower got every line")
            .unwrap();
        assert_eq!(seqs.first(), Some(&1));
        assert_eq!(seqs.len(), 20_000, "every line exactly once");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gap"
        );
    }
}

/// A follower that does not read for a while falls behind the live buffer; it catches up from
/// disk without losing a line.
#[tokio::test]
async fn a_slow_follower_catches_up_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), 100_000);
    let q = Query {
        lines: Some(0),
        ..Default::default()
    };
    append(&agg, "j1", "stdout", "history");
    let mut s = agg.follow(APP, &q).await.unwrap();
    for i in 0..10_000 {
        append(&agg, "j1", "stdout", &format!("live {i}"));
    }
    let mut got = Vec::new();
    while got.len() < 10_000 {
        let e = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("a line")
            .unwrap();
        got.push(e.msg);
    }
    assert_eq!(got[0], "live 0");
    assert_eq!(got[9_999], "live 9999");
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, m)| *m == format!("live {i}"))
    );
}

/// A restart reads each job's log again from its first line (that is all a host offers) and
/// must store exactly what it did not have: here two lines stored before the restart, then,
/// written while it was down, one more in the same microsecond as the last stored one (the
/// resume point counts lines per timestamp, not just the newest timestamp) and one later.
#[tokio::test]
async fn a_job_read_again_after_a_restart_stores_only_what_was_written_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let t = |s: &str| Timestamp::parse(s).unwrap();
    let (t1, t2) = (
        t("2026-01-01T00:00:00.000001Z"),
        t("2026-01-01T00:00:00.000002Z"),
    );
    let job = src(APP, "web", "j1");
    // The job's whole log as its host hands it out after the restart.
    let log = [
        (t1, "a1"),
        (t1, "a2"),
        (t1, "written while down, same microsecond"),
        (t2, "written while down, later"),
    ];
    {
        let agg = open(dir.path(), 100);
        let mut skip = agg.skipper("j1");
        for (ts, msg) in &log[..2] {
            assert!(agg.ingest(&job, &mut skip, *ts, "stdout", msg).unwrap());
        }
        agg.flush().unwrap();
    }
    let agg = open(dir.path(), 100);
    let mut skip = agg.skipper("j1");
    let stored: Vec<bool> = log
        .iter()
        .map(|(ts, msg)| agg.ingest(&job, &mut skip, *ts, "stdout", msg).unwrap())
        .collect();
    assert_eq!(
        stored,
        [false, false, true, true],
        "what the restart stored"
    );
    let msgs: Vec<String> = agg
        .read(APP, &Query::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.msg)
        .collect();
    assert_eq!(
        msgs,
        log.map(|(_, m)| m.to_string()),
        "each line once, in order"
    );
}
