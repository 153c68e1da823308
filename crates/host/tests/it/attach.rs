//! Attached jobs on real runc: stdin in, stdout/stderr apart, exit codes, signals, a pty, and
//! the same over the HTTP API (an upgraded connection).

use crate::harness::*;
use slipway_host::attach::{self, AttachConfig, AttachStream};
use slipway_host::{HostApi, HostJob};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Output and exit code of an attached session.
#[derive(Default, Debug)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
}

async fn collect(s: &mut AttachStream) -> Session {
    let mut out = Session::default();
    let read = async {
        while let Some((kind, p)) = attach::read_frame(s).await.unwrap() {
            match kind {
                attach::STDOUT => out.stdout.extend(p),
                attach::STDERR => out.stderr.extend(p),
                attach::EXIT => {
                    let st: slipway_host::ExitStatus = serde_json::from_slice(&p).unwrap();
                    out.exit = Some(st.code);
                }
                other => panic!("unexpected frame {other}: {}", String::from_utf8_lossy(&p)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the attached job ended within 20 s");
    out
}

fn attached(prefix: &str, args: &[&str], tty: bool) -> HostJob {
    let mut j = job(prefix, args);
    j.process_type = "run".into();
    j.config.attach = Some(AttachConfig {
        tty,
        cols: 100,
        rows: 30,
    });
    j
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_jobs_get_stdin_keep_stderr_apart_and_return_their_exit_code() {
    if skip_unless_root("attached_jobs_get_stdin_keep_stderr_apart_and_return_their_exit_code") {
        return;
    }
    let h = TestHost::start().await;
    // stdin → cat → stdout; output written before the client attached is not lost.
    let cat = attached(
        "cat",
        &["sh", "-c", "echo before; cat; echo done >&2; exit 42"],
        false,
    );
    h.agent.add_job(cat.clone()).await.unwrap();
    // Attach only once `before` is written (the job's log has it): the client must get what was
    // written before it came, not merely be early enough to see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_lines(&h.agent, &cat.id)
        .await
        .iter()
        .any(|l| l.msg == "before")
    {
        assert!(Instant::now() < deadline, "the job never wrote `before`");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = h.agent.attach(&cat.id).await.unwrap();
    s.write_all(&attach::frame(attach::STDIN, b"hello\nworld\n"))
        .await
        .unwrap();
    s.write_all(&attach::frame(attach::STDIN, b""))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "before\nhello\nworld\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "done\n");
    assert_eq!(out.exit, Some(42));
    let info = h.agent.wait_job(&cat.id).await.unwrap();
    assert_eq!(info.exit.unwrap().code, 42);

    // A job that was not started attached says so.
    let plain = job("plain", &["sleep", "5"]);
    h.agent.add_job(plain.clone()).await.unwrap();
    let err = h.agent.attach(&plain.id).await.err().unwrap();
    assert!(err.to_string().contains("not started attached"), "{err}");
    h.agent.stop_job(&plain.id).await.unwrap();

    // A big stdin is streamed through without deadlocking against the output.
    let big = attached("big", &["sh", "-c", "cat | wc -c"], false);
    h.agent.add_job(big.clone()).await.unwrap();
    let mut s = h.agent.attach(&big.id).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        s.write_all(&attach::frame(attach::STDIN, &chunk))
            .await
            .unwrap();
    }
    s.write_all(&attach::frame(attach::STDIN, b""))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (64 * 64 * 1024).to_string()
    );
    assert_eq!(out.exit, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_frame_ends_an_attached_job_and_a_pty_job_sees_a_terminal() {
    if skip_unless_root("a_signal_frame_ends_an_attached_job_and_a_pty_job_sees_a_terminal") {
        return;
    }
    let h = TestHost::start().await;
    // Ctrl-C of a piped session: SIGINT to the init, which forwards it to sleep.
    let sleeper = attached("sleeper", &["sleep", "100"], false);
    h.agent.add_job(sleeper.clone()).await.unwrap();
    let mut s = h.agent.attach(&sleeper.id).await.unwrap();
    let t0 = Instant::now();
    s.write_all(&attach::signal_frame(libc::SIGINT))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    assert_eq!(out.exit, Some(130), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // A pty: `tty` names it, the window size is the one asked for, stdout carries everything.
    let term = attached(
        "tty",
        &[
            "sh",
            "-c",
            "tty; stty size; echo oops >&2; read l; echo got $l",
        ],
        true,
    );
    h.agent.add_job(term.clone()).await.unwrap();
    let mut s = h.agent.attach(&term.id).await.unwrap();
    s.write_all(&attach::frame(attach::STDIN, b"typed\r"))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
    assert!(text.contains("oops"), "{text:?}");
    assert!(text.contains("got typed"), "{text:?}");
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit, Some(0));

    // A RESIZE frame changes the pty's window size under the running job.
    let resized = attached("resize", &["sh", "-c", "read l; stty size"], true);
    h.agent.add_job(resized.clone()).await.unwrap();
    let mut s = h.agent.attach(&resized.id).await.unwrap();
    s.write_all(&attach::resize_frame(120, 40)).await.unwrap();
    s.write_all(&attach::frame(attach::STDIN, b"go\r"))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("40 120"), "{text:?}");

    // ^C typed into the pty interrupts the foreground job.
    let cat = attached("ctrlc", &["sleep", "100"], true);
    h.agent.add_job(cat.clone()).await.unwrap();
    let mut s = h.agent.attach(&cat.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    s.write_all(&attach::frame(attach::STDIN, b"\x03"))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    assert_eq!(out.exit, Some(130), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_works_over_the_http_host_api() {
    if skip_unless_root("attach_works_over_the_http_host_api") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h = TestHost::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api: std::sync::Arc<dyn HostApi> = std::sync::Arc::new(h.agent.clone());
    tokio::spawn(async move { slipway_host::http::serve(api, listener, "tok").await });
    let client = slipway_host::client::HttpHost::new(&format!("http://{addr}"), "tok");
    let j = attached(
        "http",
        &["sh", "-c", "read a; echo $a$a; echo e >&2; exit 3"],
        false,
    );
    client.add_job(j.clone()).await.unwrap();
    let mut s = client.attach(&j.id).await.unwrap();
    s.write_all(&attach::frame(attach::STDIN, b"ab\n"))
        .await
        .unwrap();
    let out = collect(&mut s).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "abab\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");
    assert_eq!(out.exit, Some(3));
    // Attaching to a job that does not exist is a clear 404.
    let err = client.attach("nope").await.err().unwrap();
    assert!(err.to_string().contains("nope"), "{err}");
}
