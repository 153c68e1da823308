//! The per-job shim: a small process (no async runtime, a few hundred KiB of private memory) that
//! owns one container for its whole life, so jobs outlive agent restarts and `kill -9`.
//!
//! Why a shim and not just log files: the container's init must have a parent that waits for it,
//! or its exit code is lost (DESIGN.md §5). The shim is a child subreaper in its own session; it
//! runs `runc run -d` (or `runc create`, setup commands, `runc start`), then copies the container's
//! stdout/stderr line by line into the job's log files, waits for init, and writes `exit.json`
//! (exit code, signal, OOM kill) before exiting. The agent watches the shim through a pidfd, so
//! a restarted agent simply reopens the pidfd and keeps going.

use crate::attach_shim;
use crate::logs::{LineSplitter, LogWriter};
use crate::types::ExitStatus;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Everything the shim needs, written by the agent to the shim's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    /// The job's memory cgroup directory, read after exit to detect OOM kills.
    pub memory_cgroup: Option<PathBuf>,
    pub memory_limit: u64,
    /// Commands run between `runc create` and `runc start`; `{pid}` is the container init's pid.
    pub setup: Vec<Vec<String>>,
    /// Serve the job's stdin (or pty) and output on `attach.sock` (see [`crate::attach`]).
    #[serde(default)]
    pub attach: Option<crate::attach::AttachConfig>,
}

/// What the shim writes to its stdout once the container runs (or failed to start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handshake {
    pub pid: Option<u32>,
    pub error: Option<String>,
}

/// `exit.json`: the job's end, written atomically by the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub status: Option<ExitStatus>,
    /// Set when the container never started.
    pub start_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: time::OffsetDateTime,
}

pub fn exit_path(dir: &Path) -> PathBuf {
    dir.join("exit.json")
}

/// For a binary's `main`, before it builds an async runtime: if the process was started as
/// `<exe> host shim DIR` (how the agent starts shims by default), runs the shim and never
/// returns. Keeps each shim free of runtime threads (about 0.5 MiB PSS per job).
pub fn run_if_shim_invocation() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new("host"))
        && args.next().as_deref() == Some(std::ffi::OsStr::new("shim"))
        && let Some(dir) = args.next()
    {
        main(Path::new(&dir));
    }
}

/// Entry point of `slipway-host-agent shim DIR` / `slipway host shim DIR`. Never returns.
pub fn main(dir: &Path) -> ! {
    let code = match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slipway shim: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned two fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn command_output_error(what: &str, out: &std::process::Output) -> String {
    format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn run(dir: &Path) -> anyhow::Result<()> {
    // The config comes on stdin once the agent has prepared the job; EOF without one means the
    // preparation failed and there is nothing to run.
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Ok(());
    }
    let cfg: ShimConfig = serde_json::from_slice(&raw)?;
    // SAFETY: plain libc calls without pointers we do not own.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let mut handshake = std::io::stdout();
    let report = |h: &mut std::io::Stdout, hs: Handshake| {
        let _ = writeln!(h, "{}", serde_json::to_string(&hs).unwrap_or_default());
        let _ = h.flush();
    };
    let mut log = LogWriter::open(&cfg.log_dir, cfg.log_max_bytes)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Attached jobs: the socket clients attach to, and the job's stdin (a pipe, or the pty
    // master that runc hands over on the console socket).
    let mut _dir_fds = Vec::new();
    let mut attach_listener = None;
    let mut console = None;
    let mut stdin_pipe = None;
    if let Some(a) = &cfg.attach {
        let (path, fd) = attach_shim::socket_path(dir, crate::attach::SOCKET)?;
        _dir_fds.extend(fd);
        let _ = std::fs::remove_file(dir.join(crate::attach::SOCKET));
        attach_listener = Some(std::os::unix::net::UnixListener::bind(&path)?);
        if a.tty {
            let (path, fd) = attach_shim::socket_path(dir, "console.sock")?;
            _dir_fds.extend(fd);
            console = Some((std::os::unix::net::UnixListener::bind(&path)?, path));
        } else {
            stdin_pipe = Some(pipe()?);
        }
    }
    let pid_file = dir.join("init.pid");
    let runc = |args: &[&str]| {
        let mut c = Command::new(&cfg.runc);
        c.arg("--root").arg(&cfg.runc_root).args(args);
        c
    };
    let fail = |log: &mut LogWriter, h: &mut std::io::Stdout, msg: String| -> anyhow::Result<()> {
        let _ = log.write("init", msg.as_bytes());
        let _ = runc(&["delete", "--force", &cfg.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        write_exit(
            dir,
            &ExitRecord {
                status: None,
                start_error: Some(msg.clone()),
                finished_at: time::OffsetDateTime::now_utc(),
            },
        )?;
        report(
            h,
            Handshake {
                pid: None,
                error: Some(msg),
            },
        );
        Ok(())
    };

    // Without setup commands between create and start, one `runc run -d` does both: ~25 ms
    // faster than `runc create` + `runc start` here.
    let verb: &[&str] = if cfg.setup.is_empty() {
        &["run", "-d"]
    } else {
        &["create"]
    };
    let mut cmd = runc(verb);
    if let Some((_, path)) = &console {
        cmd.arg("--console-socket").arg(path);
    }
    let (stdin_r, stdin_w) = match stdin_pipe {
        Some((r, w)) => (Stdio::from(r), Some(w)),
        None => (Stdio::null(), None),
    };
    let created = cmd
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&cfg.id)
        .stdin(stdin_r)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()?;
    // The Command holds our copies of the pipes' write ends: closed now, the container's
    // processes are their only writers, so the pipes reach EOF the moment the last of them is
    // gone and `pump` returns at once, instead of after its 50 ms drain timeout (which every
    // job's exit paid: a build's end and an old release's stop, each on a push's path).
    drop(cmd);
    if !created.success() {
        // runc wrote its error to what would have been the container's stderr.
        let mut msg = String::new();
        set_nonblocking(&err_r);
        let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
        return fail(
            &mut log,
            &mut handshake,
            format!("runc {} failed: {}", verb[0], msg.trim()),
        );
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let pty = match &console {
        Some((l, _)) => match attach_shim::receive_console(l) {
            Ok(fd) => Some(fd),
            Err(e) => {
                return fail(
                    &mut log,
                    &mut handshake,
                    format!("cannot get the job's terminal from runc: {e}"),
                );
            }
        },
        None => None,
    };
    drop(console);
    for cmd in &cfg.setup {
        let args: Vec<String> = cmd
            .iter()
            .map(|a| a.replace("{pid}", &pid.to_string()))
            .collect();
        let out = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return fail(
                    &mut log,
                    &mut handshake,
                    command_output_error(&args.join(" "), &o),
                );
            }
            Err(e) => return fail(&mut log, &mut handshake, format!("{}: {e}", args[0])),
        }
    }
    if !cfg.setup.is_empty() {
        let started = runc(&["start", &cfg.id]).stdin(Stdio::null()).output()?;
        if !started.status.success() {
            return fail(
                &mut log,
                &mut handshake,
                command_output_error("runc start", &started),
            );
        }
    }
    report(
        &mut handshake,
        Handshake {
            pid: Some(pid as u32),
            error: None,
        },
    );
    // The agent may die at any time from here on: never write to its pipe again.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout with a valid fd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }

    let mut sources = vec![(out_r, "stdout"), (err_r, "stderr")];
    let mut attach = None;
    if let (Some(a), Some(listener)) = (cfg.attach, attach_listener) {
        let input = match &pty {
            Some(m) => {
                if a.cols > 0 && a.rows > 0 {
                    attach_shim::set_window_size(m.as_raw_fd(), a.cols, a.rows);
                }
                sources.push((m.try_clone()?, "stdout"));
                m.try_clone()?
            }
            None => stdin_w.context("stdin pipe")?,
        };
        attach = Some(attach_shim::Attach::new(
            a,
            pid,
            listener,
            input,
            pty.as_ref().map(|m| m.as_raw_fd()),
        ));
    }
    let status = pump(pid, sources, &mut log, attach.as_mut());
    let oom = cfg
        .memory_cgroup
        .as_ref()
        .map(|cg| oom_killed(cg))
        .unwrap_or(false);
    let status = ExitStatus {
        oom_killed: oom,
        memory_limit: Some(cfg.memory_limit),
        ..status
    };
    if oom {
        let _ = log.write(
            "init",
            format!("FATAL: the job was {status}: it used all the memory it may use").as_bytes(),
        );
    }
    write_exit(
        dir,
        &ExitRecord {
            status: Some(status.clone()),
            start_error: None,
            finished_at: time::OffsetDateTime::now_utc(),
        },
    )?;
    if let Some(a) = attach {
        a.finish(&status);
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Copies the output streams into the log (and to an attached client) until the container's
/// init has exited and the streams are drained; returns init's exit status.
fn pump(
    pid: i32,
    sources: Vec<(OwnedFd, &'static str)>,
    log: &mut LogWriter,
    mut attach: Option<&mut attach_shim::Attach>,
) -> ExitStatus {
    let mut files: Vec<_> = sources
        .into_iter()
        .map(|(fd, name)| {
            set_nonblocking(&fd);
            Some((std::fs::File::from(fd), LineSplitter::default(), name))
        })
        .collect();
    let mut status: Option<ExitStatus> = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Init's exit wakes the poll at once (its pidfd turns readable), instead of after the 1 s
    // timeout when something still holds the output pipes: job exits — a build's end, an old
    // release's jobs stopping in a deploy — are seen in milliseconds.
    // SAFETY: plain syscall; a returned fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh pidfd we own.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as i32) });
    loop {
        let mut pfds: Vec<libc::pollfd> = files
            .iter()
            .flatten()
            .map(|(f, _, _)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if pfds.is_empty() {
            break;
        }
        if let Some(a) = &attach {
            pfds.extend(a.pollfds());
        }
        if let Some(fd) = pidfd.as_ref().filter(|_| status.is_none()) {
            pfds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // After init exited only drain what is already buffered.
        let timeout = if status.is_some() { 50 } else { 1000 };
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n == 0 && status.is_some() {
            break;
        }
        for slot in files.iter_mut() {
            let Some((f, split, name)) = slot else {
                continue;
            };
            let mut closed = false;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => {
                        if let Some(a) = attach.as_deref_mut() {
                            let kind = if *name == "stderr" {
                                crate::attach::STDERR
                            } else {
                                crate::attach::STDOUT
                            };
                            a.output(kind, &buf[..k]);
                        }
                        split.feed(&buf[..k], &mut |l| {
                            let _ = log.write(name, l);
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // EIO: a pty whose other side is closed.
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                split.finish(&mut |l| {
                    let _ = log.write(name, l);
                });
                *slot = None;
            }
        }
        if let Some(a) = attach.as_deref_mut() {
            a.service();
        }
        if status.is_none() {
            status = reap(pid, false);
        }
    }
    for (_, split, name) in files.iter_mut().flatten() {
        split.finish(&mut |l| {
            let _ = log.write(name, l);
        });
    }
    status.or_else(|| reap(pid, true)).unwrap_or(ExitStatus {
        code: 255,
        ..ExitStatus::code(255)
    })
}

/// Reaps children (we are a subreaper); returns init's status once it has exited.
fn reap(pid: i32, block: bool) -> Option<ExitStatus> {
    loop {
        let mut st = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, flags) };
        if r <= 0 {
            return None; // no child changed state (or none left)
        }
        if r == pid {
            return Some(if libc::WIFSIGNALED(st) {
                let sig = libc::WTERMSIG(st);
                ExitStatus {
                    code: 128 + sig,
                    signal: Some(sig),
                    ..ExitStatus::code(0)
                }
            } else {
                ExitStatus::code(libc::WEXITSTATUS(st))
            });
        }
    }
}

/// cgroup v1 `memory.oom_control` has `oom_kill N` (kernel ≥ 4.13); v2 has `memory.events`.
fn oom_killed(cg: &Path) -> bool {
    let count = |file: &str| {
        std::fs::read_to_string(cg.join(file))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| {
                        l.strip_prefix("oom_kill ")
                            .map(|n| n.trim().parse::<u64>().ok())
                    })
                    .flatten()
            })
            .unwrap_or(0)
    };
    count("memory.oom_control") > 0 || count("memory.events") > 0
}

pub fn write_exit(dir: &Path, rec: &ExitRecord) -> std::io::Result<()> {
    let tmp = dir.join("exit.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(rec).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, exit_path(dir))
}

pub fn read_exit(dir: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&std::fs::read(exit_path(dir)).ok()?).ok()
}
