//! The attached half of `slipway run`: the job's stdin, output and exit code over one upgraded
//! connection (`POST /apps/:app/jobs/:job/attach`, frames in `slipway_client::attach`).
//!
//! With a terminal on stdin the job gets a pty of the same size (resized on SIGWINCH) and our
//! terminal goes raw, so Ctrl-C is the `^C` byte the job's terminal turns into SIGINT. Without
//! one, stdin is copied as it comes (EOF included), stdout and stderr stay apart, and a SIGINT
//! we receive (Ctrl-C) is sent to the job. Either way the job's exit code becomes ours.

use anyhow::{Result, anyhow};
use slipway_client::Client;
use slipway_client::attach;
use slipway_types::TermSize;
use std::io::{Read, Write};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Whether the job should get a pty: stdin is a terminal (as `flynn run` and `heroku run`).
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty has no memory preconditions.
    unsafe { libc::isatty(0) == 1 }
}

/// The terminal's size, if stdin (or stdout) is one.
pub fn terminal_size() -> Option<TermSize> {
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes a winsize into our zeroed struct.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes at most one winsize through the pointer, which is to `ws`.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some(TermSize {
                cols: ws.ws_col,
                rows: ws.ws_row,
            });
        }
    }
    None
}

/// Puts stdin's terminal in raw mode until dropped (the session drops it before the CLI
/// exits, so the user's terminal is always restored).
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enable() -> RawMode {
        // SAFETY: tcgetattr/cfmakeraw/tcsetattr on fd 0 with a valid termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            // SAFETY: restoring the attributes read in `enable`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Attaches to `job` and runs the session; returns the job's exit code.
pub async fn session(client: &Client, app: &str, job: &str, tty: bool) -> Result<i32> {
    let conn = client.attach_job(app, job).await?;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    // One writer owns the connection's write half; everyone else sends it frames.
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        // Keep the write half open (a shutdown would read as "the user went away").
        std::future::pending::<()>().await;
    });
    let raw = tty.then(RawMode::enable);

    // stdin: a thread, since reads from a terminal or pipe block.
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.blocking_send(attach::frame(attach::STDIN, b""));
                    return;
                }
                Ok(n) => {
                    if stdin_tx
                        .blocking_send(attach::frame(attach::STDIN, &buf[..n]))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });

    // Signals: SIGINT goes to the job; a resized window resizes the job's pty.
    let sig_tx = tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut winch)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::window_change()),
        ) else {
            return;
        };
        loop {
            let frame = tokio::select! {
                _ = int.recv() => attach::signal_frame(libc::SIGINT),
                _ = winch.recv() => match terminal_size() {
                    Some(s) if tty => attach::resize_frame(s.cols, s.rows),
                    _ => continue,
                },
            };
            if sig_tx.send(frame).await.is_err() {
                return;
            }
        }
    });

    let mut code = None;
    let result: Result<()> = async {
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        while let Some((kind, p)) = attach::read_frame(&mut rd).await? {
            match kind {
                attach::STDOUT => {
                    out.write_all(&p)?;
                    out.flush()?;
                }
                attach::STDERR => {
                    err.write_all(&p)?;
                    err.flush()?;
                }
                attach::EXIT => {
                    let st: slipway_host::ExitStatus = serde_json::from_slice(&p)
                        .map_err(|e| anyhow!("cannot read the job's exit status: {e}"))?;
                    if st.oom_killed {
                        note(&format!("job {job}: {st}"));
                    }
                    code = Some(st.code);
                    break;
                }
                attach::ERROR => {
                    return Err(anyhow!("{}", String::from_utf8_lossy(&p)));
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    writer.abort();
    drop(raw);
    result?;
    code.ok_or_else(|| {
        anyhow!(
            "the connection to job {job} ended before it exited; see `slipway ps -a` for its \
             exit status"
        )
    })
}

/// A line of our own on stderr, readable whether or not the terminal is in raw mode.
fn note(msg: &str) {
    eprint!("\r\n{msg}\r\n");
}
