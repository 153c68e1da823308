//! `slipway log` against `slipway server` with its local host agent (real runc): lines written by
//! jobs arrive with their type, job and stream; filters; `-f`; splitting; retention; a server
//! restart keeps the history. Root only.

use crate::support::{HostServer, TestServer, skip_unless_root};
use slipway_types::{LogEntry, NewRelease, ProcessType, Timestamp};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Creates `app` with a release of the given process types (name, shell script) and scales
/// each to one job.
fn app_with(s: &TestServer, app: &str, types: &[(&str, &str)]) {
    s.create_app(app);
    let mut r = NewRelease::default();
    for (name, script) in types {
        r.processes.insert(
            name.to_string(),
            ProcessType {
                args: vec!["sh".into(), "-c".into(), script.to_string()],
                ..Default::default()
            },
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = s.client();
        let r = c.create_release(app, &r).await.unwrap();
        c.set_app_release(app, r.id).await.unwrap();
    });
    let mut args = vec!["-a".to_string(), app.to_string(), "scale".to_string()];
    args.extend(types.iter().map(|(name, _)| format!("{name}=1")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.ok(&args);
}

fn entries(s: &TestServer, app: &str, extra: &[&str]) -> Vec<LogEntry> {
    let mut args = vec!["-a", app, "log", "--json"];
    args.extend_from_slice(extra);
    s.ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls `slipway log --json` until `ok` holds (20 s at most).
fn wait_for(
    s: &TestServer,
    app: &str,
    what: &str,
    ok: impl Fn(&[LogEntry]) -> bool,
) -> Vec<LogEntry> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = entries(s, app, &[]);
        if ok(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}; the log: {all:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn msgs(all: &[LogEntry]) -> Vec<&str> {
    all.iter().map(|e| e.msg.as_str()).collect()
}

#[test]
fn job_lines_arrive_with_type_job_and_stream_and_the_filters_work() {
    if skip_unless_root("job_lines_arrive_with_type_job_and_stream_and_the_filters_work") {
        return;
    }
    let hs = HostServer::start(1300 + std::process::id() % 100, &[]);
    let s = &hs.s;
    app_with(
        s,
        "logs1",
        &[
            (
                "worker",
                "echo out-1; sleep 1; echo err-1 >&2; sleep 1; head -c 10050 /dev/zero | tr '\\000' y; echo; echo out-2; exec sleep 1000",
            ),
            ("clock", "echo tick; exec sleep 1000"),
        ],
    );
    let all = wait_for(s, "logs1", "the jobs' lines", |all| {
        let m = msgs(all);
        m.contains(&"out-2") && m.contains(&"tick")
    });
    let worker: Vec<&LogEntry> = all
        .iter()
        .filter(|e| e.process_type == "worker" && !e.platform)
        .collect();
    let job = worker[0].job_id.clone();
    assert!(worker.iter().all(|e| e.job_id == job && e.app == "logs1"));
    let ps = s.ok(&["-a", "logs1", "ps"]);
    assert!(ps.contains(&job), "{job} not in ps:\n{ps}");
    let streams: Vec<(&str, usize)> = worker
        .iter()
        .map(|e| (e.stream.as_str(), e.msg.len()))
        .collect();
    // The 10,050-byte line arrives as 10,000 + 50 bytes.
    assert_eq!(
        streams,
        [
            ("stdout", 5),
            ("stderr", 5),
            ("stdout", 10_000),
            ("stdout", 50),
            ("stdout", 5)
        ],
        "{worker:#?}"
    );
    assert!(worker[2].msg.bytes().all(|b| b == b'y'));
    // The platform says when a job started.
    assert!(
        all.iter().any(|e| e.platform
            && e.job_id == job
            && e.stream == "init"
            && e.msg.starts_with("Starting process with command `sh -c")),
        "{all:#?}"
    );

    // Flynn's line format by default.
    let clock = s.ok(&["-a", "logs1", "log", "-t", "clock"]);
    let line = clock.lines().last().unwrap();
    let (ts, rest) = line.split_once(' ').unwrap();
    Timestamp::parse(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    assert_eq!(ts.len(), "2026-11-22T15:04:05.123456Z".len(), "{line}");
    let clock_job = all
        .iter()
        .find(|e| e.process_type == "clock")
        .unwrap()
        .job_id
        .clone();
    assert_eq!(
        rest,
        format!("logs1[clock.{}]: tick", &clock_job[clock_job.len() - 6..])
    );
    assert!(
        !clock.contains("out-1"),
        "-t clock shows worker lines:\n{clock}"
    );
    // -j, -n, -r.
    let by_job = entries(s, "logs1", &["-j", &clock_job]);
    assert!(by_job.iter().all(|e| e.job_id == clock_job) && !by_job.is_empty());
    assert_eq!(
        s.ok(&["-a", "logs1", "log", "-t", "clock", "-n", "1", "-r"]),
        "tick\n"
    );
    // -s: the jobs' stderr goes to stderr.
    let out = s
        .cmd()
        .args(["-a", "logs1", "log", "-t", "worker", "-r", "-s"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    let out_lines: Vec<&str> = stdout.lines().collect();
    assert!(out_lines.contains(&"out-1"), "{out_lines:?}");
    assert!(!out_lines.contains(&"err-1"), "{out_lines:?}");
    assert_eq!(stderr, "err-1\n");
    // One-off jobs: `run -d` and `run --enable-log` are logged, a plain attached `run` is not.
    s.ok(&["-a", "logs1", "run", "-d", "--", "echo", "detached-hello"]);
    assert_eq!(
        s.ok(&["-a", "logs1", "run", "--", "echo", "attached-hello"]),
        "attached-hello\n"
    );
    s.ok(&[
        "-a",
        "logs1",
        "run",
        "--enable-log",
        "--",
        "echo",
        "attached-logged",
    ]);
    let all = wait_for(s, "logs1", "the logged one-off jobs' lines", |all| {
        let m = msgs(all);
        m.contains(&"detached-hello") && m.contains(&"attached-logged")
    });
    let detached = all.iter().find(|e| e.msg == "detached-hello").unwrap();
    assert_eq!(detached.process_type, "");
    assert!(detached.to_string().contains(" logs1[run."), "{detached}");
    assert!(
        !all.iter().any(|e| !e.platform && e.msg == "attached-hello"),
        "a plain attached run was logged: {all:#?}"
    );

    // Bad input: a clear error.
    let err = s.fails(&["-a", "nope", "log"]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn log_f_receives_lines_written_one_per_second_each_within_a_second() {
    if skip_unless_root("log_f_receives_lines_written_one_per_second_each_within_a_second") {
        return;
    }
    let hs = HostServer::start(1400 + std::process::id() % 100, &[]);
    let s = &hs.s;
    app_with(
        s,
        "logs2",
        &[(
            "ticker",
            "sleep 3; for i in 1 2 3 4 5; do echo tick-$i; sleep 1; done; exec sleep 1000",
        )],
    );
    let mut child = std::process::Command::new(crate::support::BIN)
        .args(["-a", "logs2", "log", "-f", "--json", "-t", "ticker"])
        .env("SLIPWAY_CONFIG", &s.config)
        .env("HOME", s.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let now = Timestamp::now().inner();
            if tx.send((now, line)).is_err() {
                break;
            }
        }
    });
    let mut ticks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ticks.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((arrived, line)) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("only {} ticks arrived: {ticks:?}", ticks.len());
        };
        let e: LogEntry = serde_json::from_str(&line).unwrap();
        if e.msg.starts_with("tick-") {
            let delay = arrived - e.ts.inner();
            ticks.push((e.msg, delay));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let names: Vec<&str> = ticks.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["tick-1", "tick-2", "tick-3", "tick-4", "tick-5"]);
    for (m, delay) in &ticks {
        assert!(
            delay.whole_milliseconds() < 1000,
            "{m} arrived {delay} after it was written"
        );
    }
    eprintln!("follow delays: {ticks:?}");
}

#[test]
fn history_is_bounded_and_survives_a_server_restart() {
    if skip_unless_root("history_is_bounded_and_survives_a_server_restart") {
        return;
    }
    let mut hs = HostServer::start(
        1500 + std::process::id() % 100,
        &["--log-lines".into(), "1000".into()],
    );
    app_with(&hs.s, "logs3", &[("writer", "seq 1 5000; exec sleep 1000")]);
    let all = wait_for(
        &hs.s,
        "logs3",
        "all 5000 lines written",
        |all: &[LogEntry]| all.last().is_some_and(|e| e.msg == "5000"),
    );
    // With a limit of 1,000 lines, exactly the last 1,000 are kept.
    let expected: Vec<String> = (4001..=5000).map(|i| i.to_string()).collect();
    assert_eq!(msgs(&all), expected);
    let last100 = hs.s.ok(&["-a", "logs3", "log", "-n", "100", "-r"]);
    let want100: String = (4901..=5000).map(|i| format!("{i}\n")).collect();
    assert_eq!(last100, want100);

    hs.s.restart();
    assert_eq!(hs.s.ok(&["-a", "logs3", "log", "-n", "100", "-r"]), want100);
    // The new aggregator reads the still-running job again and stores none of it twice.
    std::thread::sleep(Duration::from_secs(3));
    let after = entries(&hs.s, "logs3", &[]);
    assert_eq!(msgs(&after), expected);
    assert_eq!(after.last().unwrap().seq, all.last().unwrap().seq);
}

#[test]
fn a_crashing_job_gets_exit_and_restart_lines() {
    if skip_unless_root("a_crashing_job_gets_exit_and_restart_lines") {
        return;
    }
    let hs = HostServer::start(1600 + std::process::id() % 100, &[]);
    let s = &hs.s;
    // Exits 3 after a moment; the scheduler restarts it at once (restarts 1–5 have no backoff).
    app_with(s, "logs4", &[("crasher", "echo up; sleep 1; exit 3")]);
    let all = wait_for(s, "logs4", "an exit and a restart", |all| {
        let platform: Vec<&str> = all
            .iter()
            .filter(|e| e.platform)
            .map(|e| e.msg.as_str())
            .collect();
        platform.contains(&"Process exited (exit 3)")
            && platform
                .iter()
                .any(|m| m.starts_with("Restarted (restart 1): starting process"))
    });
    // The exit line belongs to the first job, the restart line to its replacement.
    let exit = all
        .iter()
        .find(|e| e.msg == "Process exited (exit 3)")
        .unwrap();
    let restart = all
        .iter()
        .find(|e| e.msg.starts_with("Restarted (restart 1)"))
        .unwrap();
    assert_ne!(exit.job_id, restart.job_id);
    assert_eq!(
        (exit.stream.as_str(), exit.process_type.as_str()),
        ("init", "crasher")
    );
    assert!(exit.seq < restart.seq);
    s.ok(&["-a", "logs4", "scale", "crasher=0"]);
}

/// The server restarts while a job is writing: every line arrives exactly once, in order.
#[test]
fn a_restart_while_a_job_writes_loses_and_repeats_nothing() {
    if skip_unless_root("a_restart_while_a_job_writes_loses_and_repeats_nothing") {
        return;
    }
    let mut hs = HostServer::start(1700 + std::process::id() % 100, &[]);
    app_with(
        &hs.s,
        "logs5",
        &[(
            "counter",
            "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo n-$i; usleep 2000; done; exec sleep 1000",
        )],
    );
    wait_for(&hs.s, "logs5", "the first lines", |all| {
        all.iter().any(|e| e.msg == "n-100")
    });
    hs.s.restart();
    // Still writing: the restart happened in the middle.
    let now = entries(&hs.s, "logs5", &[]);
    assert!(
        !now.iter().any(|e| e.msg == "n-2000"),
        "the job finished before the restart"
    );
    let all = wait_for(&hs.s, "logs5", "every line", |all| {
        all.iter().any(|e| e.msg == "n-2000")
    });
    let counted: Vec<&str> = all
        .iter()
        .filter(|e| !e.platform && e.msg.starts_with("n-"))
        .map(|e| e.msg.as_str())
        .collect();
    let expected: Vec<String> = (1..=2000).map(|i| format!("n-{i}")).collect();
    assert_eq!(counted, expected);
}
