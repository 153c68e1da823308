//! The cases. Each gets a fresh runtime; a backend's `Drop` removes what a failed case left.

use super::{Backend, Prog};
use futures_util::StreamExt;
use slipway_host::runtime::{Recovered, Runtime};
use slipway_host::{ExitStatus, HostJob, LogLine};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

async fn start(b: &Backend, j: &HostJob) -> slipway_host::runtime::Started {
    b.rt.start(j)
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e:#}", j.id))
}

async fn wait(rt: &dyn Runtime, id: &str) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), rt.wait(id))
        .await
        .unwrap_or_else(|_| panic!("{id} did not exit within 60 s"))
        .unwrap()
}

/// True if the job is still running after `ms`.
async fn still_running(rt: &dyn Runtime, id: &str, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), rt.wait(id))
        .await
        .is_err()
}

async fn logs(rt: &dyn Runtime, id: &str) -> Vec<LogLine> {
    rt.logs(id, false).collect().await
}

fn stream<'a>(lines: &'a [LogLine], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.stream == name)
        .map(|l| l.msg.as_str())
        .collect()
}

/// Waits until the job has printed `ready` (its signal handling is set up).
async fn ready(rt: &dyn Runtime, id: &str) {
    let t0 = Instant::now();
    while !logs(rt, id).await.iter().any(|l| l.msg == "ready") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{id} never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cleanup(rt: &dyn Runtime, id: &str) {
    rt.cleanup(id).await.unwrap();
}

pub async fn exit_codes_are_reported(b: &Backend) {
    let mut jobs = Vec::new();
    for code in [0, 1, 3, 255] {
        let j = b.job("exit", Prog::Exit { code, ms: 0 });
        start(b, &j).await;
        jobs.push((code, j));
    }
    for (code, j) in jobs {
        let st = wait(&*b.rt, &j.id).await;
        assert_eq!(
            (st.code, st.signal, st.oom_killed),
            (code, None, false),
            "{st:?}"
        );
        cleanup(&*b.rt, &j.id).await;
    }
}

pub async fn sigterm_ends_a_plain_job_with_143(b: &Backend) {
    let j = b.job("term", Prog::Serve);
    start(b, &j).await;
    ready(&*b.rt, &j.id).await;
    assert!(still_running(&*b.rt, &j.id, 200).await);
    b.rt.signal(&j.id, libc::SIGTERM).await.unwrap();
    let st = wait(&*b.rt, &j.id).await;
    // The init forwards the signal and exits 128 + signal itself: no signal ended the init.
    assert_eq!((st.code, st.signal), (143, None), "{st:?}");
    assert_eq!(st.to_string(), "exit 143");
    cleanup(&*b.rt, &j.id).await;
}

/// A stop can come at once (a deploy that fails fast, `scale` up then down): the init must
/// not drop a signal that arrives before its child is ready for it (tini forwards to the
/// child's process group, which the child makes just after the fork).
pub async fn sigterm_right_after_start_is_not_lost(b: &Backend) {
    for i in 0..8 {
        let j = b.job(&format!("early{i}"), Prog::Serve);
        start(b, &j).await;
        b.rt.signal(&j.id, libc::SIGTERM).await.unwrap();
        let st = tokio::time::timeout(Duration::from_secs(10), b.rt.wait(&j.id))
            .await
            .unwrap_or_else(|_| panic!("SIGTERM sent right after start was lost (try {i})"))
            .unwrap();
        assert_eq!((st.code, st.signal), (143, None), "try {i}: {st:?}");
        cleanup(&*b.rt, &j.id).await;
    }
}

pub async fn sigkill_is_reported_as_the_signal(b: &Backend) {
    let j = b.job("kill", Prog::Serve);
    start(b, &j).await;
    b.rt.signal(&j.id, libc::SIGKILL).await.unwrap();
    let st = wait(&*b.rt, &j.id).await;
    assert_eq!(
        (st.code, st.signal, st.oom_killed),
        (137, Some(9), false),
        "{st:?}"
    );
    cleanup(&*b.rt, &j.id).await;
}

pub async fn other_signals_take_their_default_action(b: &Backend) {
    // Ignored by default: the job keeps running.
    let j = b.job("winch", Prog::Serve);
    start(b, &j).await;
    ready(&*b.rt, &j.id).await;
    for sig in [libc::SIGWINCH, libc::SIGCHLD, libc::SIGURG] {
        b.rt.signal(&j.id, sig).await.unwrap();
    }
    assert!(
        still_running(&*b.rt, &j.id, 300).await,
        "ignored signals ended the job"
    );
    b.rt.signal(&j.id, libc::SIGKILL).await.unwrap();
    wait(&*b.rt, &j.id).await;
    cleanup(&*b.rt, &j.id).await;
    // Fatal by default: the job ends, the init exits 128 + signal.
    let fatal = [
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
    ];
    let mut jobs = Vec::new();
    for sig in fatal {
        let j = b.job("fatal", Prog::Serve);
        start(b, &j).await;
        jobs.push((sig, j));
    }
    let mut got = Vec::new();
    for (sig, j) in &jobs {
        ready(&*b.rt, &j.id).await;
        b.rt.signal(&j.id, *sig).await.unwrap();
        let st = tokio::time::timeout(Duration::from_secs(5), b.rt.wait(&j.id)).await;
        got.push((
            *sig,
            st.ok().map(|s| s.unwrap()).map(|s| (s.code, s.signal)),
        ));
    }
    for (_, j) in &jobs {
        let _ = b.rt.signal(&j.id, libc::SIGKILL).await;
        wait(&*b.rt, &j.id).await;
        cleanup(&*b.rt, &j.id).await;
    }
    let want: Vec<_> = fatal.iter().map(|&s| (s, Some((128 + s, None)))).collect();
    assert_eq!(
        got, want,
        "(signal, (code, signal)) or None if it did not end the job"
    );
}

pub async fn an_ignored_sigterm_leaves_the_job_running_until_sigkill(b: &Backend) {
    let j = b.job("ignore", Prog::IgnoreTerm);
    start(b, &j).await;
    ready(&*b.rt, &j.id).await;
    b.rt.signal(&j.id, libc::SIGTERM).await.unwrap();
    assert!(
        still_running(&*b.rt, &j.id, 500).await,
        "SIGTERM was not ignored"
    );
    b.rt.signal(&j.id, libc::SIGKILL).await.unwrap();
    let st = wait(&*b.rt, &j.id).await;
    assert_eq!((st.code, st.signal), (137, Some(9)), "{st:?}");
    cleanup(&*b.rt, &j.id).await;
}

pub async fn a_trapped_sigterm_exits_with_the_traps_code(b: &Backend) {
    let j = b.job("trap", Prog::TrapTerm(3));
    start(b, &j).await;
    ready(&*b.rt, &j.id).await;
    b.rt.signal(&j.id, libc::SIGTERM).await.unwrap();
    let st = wait(&*b.rt, &j.id).await;
    assert_eq!((st.code, st.signal), (3, None), "{st:?}");
    cleanup(&*b.rt, &j.id).await;
}

pub async fn stdout_and_stderr_are_captured_apart(b: &Backend) {
    let prog = Prog::Print {
        out: &["one", "two words", ""],
        err: &["oops"],
        ms: 0,
        code: 0,
    };
    let j = b.job("print", prog);
    start(b, &j).await;
    wait(&*b.rt, &j.id).await;
    let lines = logs(&*b.rt, &j.id).await;
    assert_eq!(
        stream(&lines, "stdout"),
        ["one", "two words", ""],
        "{lines:?}"
    );
    assert_eq!(stream(&lines, "stderr"), ["oops"], "{lines:?}");
    assert!(stream(&lines, "init").is_empty(), "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0].ts <= w[1].ts));
    // Logs outlive the job's cleanup, until the agent forgets them.
    cleanup(&*b.rt, &j.id).await;
    assert_eq!(logs(&*b.rt, &j.id).await.len(), lines.len());
    b.rt.forget(&j.id);
    assert!(logs(&*b.rt, &j.id).await.is_empty());
}

pub async fn long_lines_are_split(b: &Backend) {
    let long = "x".repeat(25_000);
    let prog = Prog::Print {
        out: &[&long, "after"],
        err: &[],
        ms: 0,
        code: 0,
    };
    let j = b.job("long", prog);
    start(b, &j).await;
    wait(&*b.rt, &j.id).await;
    let lines = logs(&*b.rt, &j.id).await;
    let lens: Vec<usize> = stream(&lines, "stdout").iter().map(|m| m.len()).collect();
    assert_eq!(lens, [10_000, 10_000, 5_000, 5]);
    cleanup(&*b.rt, &j.id).await;
}

pub async fn follow_ends_only_when_the_job_exits(b: &Backend) {
    let prog = Prog::Print {
        out: &["first"],
        err: &["second"],
        ms: 800,
        code: 4,
    };
    let j = b.job("follow", prog);
    start(b, &j).await;
    let t0 = Instant::now();
    let lines: Vec<LogLine> = tokio::time::timeout(
        Duration::from_secs(30),
        b.rt.logs(&j.id, true).collect::<Vec<_>>(),
    )
    .await
    .expect("follow ends when the job exits");
    let followed = t0.elapsed();
    assert_eq!(stream(&lines, "stdout"), ["first"], "{lines:?}");
    assert_eq!(stream(&lines, "stderr"), ["second"], "{lines:?}");
    assert!(
        followed >= Duration::from_millis(600),
        "follow ended after {followed:?}, before the job's 800 ms were up"
    );
    let st = tokio::time::timeout(Duration::from_secs(2), b.rt.wait(&j.id))
        .await
        .expect("the job had exited when follow ended")
        .unwrap();
    assert_eq!(st.code, 4);
    // Following a finished job gives its lines and ends at once.
    let again: Vec<LogLine> = tokio::time::timeout(
        Duration::from_secs(5),
        b.rt.logs(&j.id, true).collect::<Vec<_>>(),
    )
    .await
    .expect("follow of a finished job ends");
    assert_eq!(again.len(), lines.len());
    cleanup(&*b.rt, &j.id).await;
}

pub async fn the_job_sees_its_env(b: &Backend) {
    let mut j = b.job("env", Prog::Env);
    j.config.env.insert("GREETING".into(), "hello world".into());
    start(b, &j).await;
    assert_eq!(wait(&*b.rt, &j.id).await.code, 0);
    let lines = logs(&*b.rt, &j.id).await;
    let out = stream(&lines, "stdout");
    for want in [
        "GREETING=hello world",
        "PORT=8080",
        "SLIPWAY_APP_NAME=testapp",
        "SLIPWAY_APP_ID=app-1",
        "SLIPWAY_RELEASE_ID=rel-1",
        "SLIPWAY_PROCESS_TYPE=web",
        &format!("SLIPWAY_JOB_ID={}", j.id),
    ] {
        assert!(out.contains(&want), "{want:?} not in {out:?}");
    }
    cleanup(&*b.rt, &j.id).await;
}

pub async fn a_job_past_its_memory_limit_is_oom_killed(b: &Backend) {
    let mut j = b.job("oom", Prog::Oom);
    j.resources.memory_bytes = Some(32 << 20);
    start(b, &j).await;
    let st = wait(&*b.rt, &j.id).await;
    assert!(st.oom_killed, "{st:?}");
    assert_eq!((st.code, st.memory_limit), (137, Some(32 << 20)), "{st:?}");
    assert_eq!(
        st.to_string(),
        "exit 137: killed, out of memory (limit 32 MiB)"
    );
    let lines = logs(&*b.rt, &j.id).await;
    assert!(
        stream(&lines, "init")
            .iter()
            .any(|m| m.contains("out of memory")),
        "{lines:?}"
    );
    cleanup(&*b.rt, &j.id).await;
}

pub async fn every_exit_reports_the_memory_limit(b: &Backend) {
    let j = b.job("default-mem", Prog::Exit { code: 0, ms: 0 });
    start(b, &j).await;
    assert_eq!(
        wait(&*b.rt, &j.id).await.memory_limit,
        Some(GIB),
        "the default 1 GiB"
    );
    let mut j2 = b.job("mem", Prog::Serve);
    j2.resources.memory_bytes = Some(300 << 20);
    start(b, &j2).await;
    ready(&*b.rt, &j2.id).await;
    b.rt.signal(&j2.id, libc::SIGTERM).await.unwrap();
    let st = wait(&*b.rt, &j2.id).await;
    assert_eq!(
        (st.memory_limit, st.oom_killed),
        (Some(300 << 20), false),
        "{st:?}"
    );
    cleanup(&*b.rt, &j.id).await;
    cleanup(&*b.rt, &j2.id).await;
}

pub async fn max_fd_above_the_host_limit_is_clamped_with_a_warning(b: &Backend) {
    let mut j = b.job("nofile", Prog::Exit { code: 0, ms: 0 });
    j.resources.max_fd = Some(u32::MAX as u64);
    let started = start(b, &j).await;
    assert!(
        started.warnings.len() == 1 && started.warnings[0].contains("above the host's hard limit"),
        "{:?}",
        started.warnings
    );
    wait(&*b.rt, &j.id).await;
    let lines = logs(&*b.rt, &j.id).await;
    let init = stream(&lines, "init");
    assert!(
        init.iter().any(|m| m.starts_with("warning: max_fd")),
        "{lines:?}"
    );
    // Within the limit: no warning.
    let mut ok = b.job("nofile-ok", Prog::Exit { code: 0, ms: 0 });
    ok.resources.max_fd = Some(1024);
    assert!(start(b, &ok).await.warnings.is_empty());
    wait(&*b.rt, &ok.id).await;
    assert!(stream(&logs(&*b.rt, &ok.id).await, "init").is_empty());
    cleanup(&*b.rt, &j.id).await;
    cleanup(&*b.rt, &ok.id).await;
}

pub async fn signalling_a_finished_job_is_an_error(b: &Backend) {
    let j = b.job("done", Prog::Exit { code: 0, ms: 0 });
    start(b, &j).await;
    wait(&*b.rt, &j.id).await;
    let err = b.rt.signal(&j.id, libc::SIGTERM).await;
    assert!(err.is_err(), "signalled a finished job: {err:?}");
    cleanup(&*b.rt, &j.id).await;
    assert!(b.rt.signal(&j.id, libc::SIGTERM).await.is_err());
    assert!(b.rt.wait(&j.id).await.is_err(), "wait after cleanup");
    // Cleanup is idempotent.
    cleanup(&*b.rt, &j.id).await;
}

pub async fn wait_reports_the_same_exit_every_time(b: &Backend) {
    let j = b.job("twice", Prog::Exit { code: 7, ms: 300 });
    start(b, &j).await;
    let (a, c) = tokio::join!(wait(&*b.rt, &j.id), wait(&*b.rt, &j.id));
    let later = wait(&*b.rt, &j.id).await;
    assert_eq!(a.code, 7);
    assert_eq!((&a, &c), (&later, &later));
    cleanup(&*b.rt, &j.id).await;
}

pub async fn bad_ids_are_refused_and_leave_nothing(b: &Backend) {
    for id in [
        "",
        "../escape",
        "a/b",
        ".hidden",
        "..",
        "sp ace",
        &"x".repeat(129),
    ] {
        let mut j = b.job("bad", Prog::Serve);
        j.id = id.to_string();
        let err = match b.rt.start(&j).await {
            Ok(_) => panic!("started a job with id {id:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("job id"), "{id:?}: {err}");
    }
    assert!(
        b.rt.recover().await.unwrap().is_empty(),
        "a bad id left a job"
    );
    if let Some(dir) = b.data_dir() {
        assert!(
            !dir.join("escape").exists(),
            "`../escape` made a dir outside containers/"
        );
        assert!(!dir.join("containers/a").exists());
        assert_eq!(
            std::fs::read_dir(dir.join("containers")).unwrap().count(),
            0
        );
    }
}

pub async fn a_second_job_with_the_same_id_is_refused(b: &Backend) {
    let j = b.job("dup", Prog::Serve);
    start(b, &j).await;
    let err = b.rt.start(&j).await.map(|_| ()).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    assert!(
        still_running(&*b.rt, &j.id, 100).await,
        "the first job was disturbed"
    );
    b.rt.signal(&j.id, libc::SIGKILL).await.unwrap();
    wait(&*b.rt, &j.id).await;
    cleanup(&*b.rt, &j.id).await;
}

pub async fn a_failed_start_holds_nothing_and_frees_the_id(b: &Backend) {
    let j = b.job("missing", Prog::Missing);
    assert!(b.rt.start(&j).await.is_err(), "a missing command started");
    assert!(
        b.rt.recover().await.unwrap().is_empty(),
        "a failed start left a job"
    );
    assert!(b.rt.wait(&j.id).await.is_err());
    assert!(b.rt.signal(&j.id, libc::SIGTERM).await.is_err());
    let mut again = b.job("unused", Prog::Exit { code: 0, ms: 0 });
    again.id = j.id.clone();
    start(b, &again).await;
    assert_eq!(wait(&*b.rt, &j.id).await.code, 0);
    cleanup(&*b.rt, &j.id).await;
}

pub async fn jobs_get_their_own_ips_unless_on_the_host_network(b: &Backend) {
    let j1 = b.job("ip1", Prog::Serve);
    let j2 = b.job("ip2", Prog::Serve);
    let mut host = b.job("hostnet", Prog::Exit { code: 0, ms: 0 });
    host.config.host_network = true;
    let ip1 = start(b, &j1).await.ip.expect("a job has its own IP");
    let ip2 = start(b, &j2).await.ip.expect("a job has its own IP");
    assert_ne!(ip1, ip2);
    assert_eq!(
        start(b, &host).await.ip,
        None,
        "host network jobs get no IP"
    );
    for j in [&j1, &j2] {
        b.rt.signal(&j.id, libc::SIGKILL).await.unwrap();
    }
    for j in [&j1, &j2, &host] {
        wait(&*b.rt, &j.id).await;
        cleanup(&*b.rt, &j.id).await;
    }
}

pub async fn a_restarted_runtime_recovers_running_and_exited_jobs(b: &Backend) {
    let running = b.job("running", Prog::Serve);
    let exited = b.job("exited", Prog::Exit { code: 3, ms: 0 });
    let gone = b.job("gone", Prog::Exit { code: 0, ms: 0 });
    let ip = start(b, &running).await.ip;
    start(b, &exited).await;
    start(b, &gone).await;
    wait(&*b.rt, &exited.id).await;
    wait(&*b.rt, &gone.id).await;
    cleanup(&*b.rt, &gone.id).await;
    ready(&*b.rt, &running.id).await;

    let rt = b.reopen().await;
    let mut found = rt.recover().await.unwrap();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found.len(), 2, "{found:?}");
    for (id, rec) in &found {
        match rec {
            Recovered::Running { ip: got } if *id == running.id => assert_eq!(*got, ip),
            Recovered::Exited(st) if *id == exited.id => {
                assert_eq!((st.code, st.memory_limit), (3, Some(GIB)), "{st:?}")
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    // The recovered job is the same job: signals and waits reach it.
    rt.signal(&running.id, libc::SIGTERM).await.unwrap();
    assert_eq!(wait(&*rt, &running.id).await.code, 143);
    cleanup(&*rt, &running.id).await;
    cleanup(&*rt, &exited.id).await;
    assert!(rt.recover().await.unwrap().is_empty());
}

pub async fn unknown_jobs_are_errors(b: &Backend) {
    assert!(b.rt.wait("never-started").await.is_err());
    assert!(b.rt.signal("never-started", libc::SIGTERM).await.is_err());
    assert!(logs(&*b.rt, "never-started").await.is_empty());
    let followed = tokio::time::timeout(
        Duration::from_secs(5),
        b.rt.logs("never-started", true).collect::<Vec<_>>(),
    )
    .await
    .expect("following an unknown job ends");
    assert!(followed.is_empty());
    cleanup(&*b.rt, "never-started").await;
}
