//! Attached `slipway run` through the real binary, the server's scheduler, the host agent and
//! runc: stdin in, stdout/stderr apart, the exit code out, Ctrl-C, `-d`, and a pty. Root only.

use crate::support::{BIN, HostServer, TestServer, skip_unless_root};
use slipway_types::NewRelease;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn app(s: &TestServer, name: &str) {
    s.create_app(name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = s.client();
        let r = c
            .create_release(name, &NewRelease::default())
            .await
            .unwrap();
        c.set_app_release(name, r.id).await.unwrap();
    });
}

/// `slipway -a APP run ARGS…` as a child with piped stdio.
fn spawn_run(s: &TestServer, app: &str, args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(s.dir.path())
        .env("SLIPWAY_CONFIG", &s.config)
        .env("HOME", s.dir.path())
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .args(["-a", app, "run"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Waits for the child with a deadline; returns (exit code, stdout, stderr, time taken).
fn finish(mut child: std::process::Child, within: Duration) -> (Option<i32>, String, String) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code(), out, err);
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            panic!("slipway run did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_forwards_stdin_keeps_stderr_apart_returns_the_exit_code_and_stops_on_ctrl_c() {
    if skip_unless_root(
        "run_forwards_stdin_keeps_stderr_apart_returns_the_exit_code_and_stops_on_ctrl_c",
    ) {
        return;
    }
    let hs = HostServer::start(2200 + std::process::id() % 100, &[]);
    let s = &hs.s;
    app(s, "runner");

    // echo hi | slipway run -- cat
    let mut child = spawn_run(s, "runner", &["--", "cat"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi\nthere\n")
        .unwrap(); // dropped: EOF
    let (code, out, err) = finish(child, Duration::from_secs(30));
    assert_eq!((code, out.as_str()), (Some(0), "hi\nthere\n"), "{err}");

    // The exit code is ours; stderr stays on stderr.
    let child = spawn_run(
        s,
        "runner",
        &["--", "sh", "-c", "echo out; echo err >&2; exit 42"],
    );
    let (code, out, err) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(42));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");

    // -e sets the job's env; interactive input goes in while the job runs.
    let mut child = spawn_run(
        s,
        "runner",
        &[
            "-e",
            "WHO=you",
            "--",
            "sh",
            "-c",
            "read a; echo $WHO said $a",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"hello\n").unwrap();
    let (code, out, _) = finish(child, Duration::from_secs(30));
    drop(stdin);
    assert_eq!((code, out.as_str()), (Some(0), "you said hello\n"));

    // Ctrl-C (SIGINT to the CLI) ends a long job within a few seconds: 130 = 128 + SIGINT.
    let mut child = spawn_run(s, "runner", &["--", "sh", "-c", "echo started; sleep 100"]);
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"started\n");
    let t0 = Instant::now();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, _, err) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(130), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // -d prints the job id and returns; the exit shows in ps -a.
    let id = s
        .ok(&["-a", "runner", "run", "-d", "--", "sh", "-c", "exit 7"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = s.json(&["-a", "runner", "ps", "-a", "--json"]);
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id.as_str())
            .cloned();
        if let Some(j) = job.filter(|j| j["state"] == "crashed") {
            assert_eq!(j["exit_status"], 7);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run -d job {id} never finished: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // --enable-log marks the job for the log aggregator (metadata log=1); others are not.
    let child = spawn_run(s, "runner", &["--enable-log", "--", "echo", "kept"]);
    let (code, out, _) = finish(child, Duration::from_secs(30));
    assert_eq!((code, out.as_str()), (Some(0), "kept\n"));
    let jobs = s.json(&["-a", "runner", "ps", "-a", "--json"]);
    let logged: Vec<_> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["meta"]["log"] == "1")
        .map(|j| j["args"].clone())
        .collect();
    assert_eq!(logged, [serde_json::json!(["echo", "kept"])], "{jobs}");

    // A command that does not exist: a clear error, not a hang.
    let child = spawn_run(s, "runner", &["--", "nosuchcommand"]);
    let (code, _, err) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(r#"exec: "nosuchcommand": executable file not found in $PATH"#),
        "{err}"
    );
}

#[test]
fn run_on_a_terminal_gives_the_job_a_pty() {
    if skip_unless_root("run_on_a_terminal_gives_the_job_a_pty") {
        return;
    }
    let hs = HostServer::start(2300 + std::process::id() % 100, &[]);
    let s = &hs.s;
    app(s, "tty");
    // `script` runs the CLI with a pty as its stdin and stdout, as a terminal would.
    let inner = format!("stty cols 91 rows 33; {BIN} -a tty run -- sh -c 'tty; stty size; exit 3'");
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(s.dir.path())
        .env("SLIPWAY_CONFIG", &s.config)
        .env("HOME", s.dir.path())
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("33 91"),
        "the job's pty has our window size: {text:?}"
    );
    assert_eq!(out.status.code(), Some(3), "{text:?}");
}
