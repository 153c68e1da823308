//! The shim's side of attaching (see [`crate::attach`] for the frames): a listening unix socket
//! in the container dir, at most one client at a time, the job's stdin (a pipe, or the pty
//! master) fed from `STDIN` frames without ever blocking the output pump, and the job's output
//! sent as frames (kept in a bounded backlog until a client attaches). Plain `poll`, no threads:
//! the shim stays a few hundred KiB.

use crate::attach::{self, AttachConfig, Decoder};
use crate::types::ExitStatus;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a finished attached job waits for its first client (its output and exit code are
/// for someone: `POST /jobs` and the attach call race).
const FIRST_ATTACH_WAIT: Duration = Duration::from_secs(30);

/// A path for `name` in `dir` that fits a `sockaddr_un` (108 bytes): long data dirs and job ids
/// go through `/proc/self/fd/N/` of an `O_PATH` fd of the dir, which the caller keeps open.
pub fn socket_path(
    dir: &Path,
    name: &str,
) -> std::io::Result<(std::path::PathBuf, Option<OwnedFd>)> {
    let full = dir.join(name);
    if full.as_os_str().len() < 100 {
        return Ok((full, None));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: valid C string; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((
        format!("/proc/{}/fd/{}/{name}", std::process::id(), fd.as_raw_fd()).into(),
        Some(fd),
    ))
}

pub fn set_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a valid fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        libc::fcntl(fd, libc::F_SETFL, fl);
    }
}

/// Receives the pty master runc sends on `--console-socket` (SCM_RIGHTS).
pub fn receive_console(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 10_000) } <= 0 {
        return Err(std::io::Error::other(
            "runc did not send the job's pty within 10 s",
        ));
    }
    let (conn, _) = listener.accept()?;
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; we fill the pointers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers for the duration of the call.
    if unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: msg was filled by recvmsg; CMSG_* walk its control buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(std::io::Error::other("runc's console message had no fd"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub fn set_window_size(fd: RawFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// The most client input held for a job that does not read its stdin: past it the client is
/// not read (it waits, as on a full pipe) until the job takes some, rather than the shim
/// buffering whatever the client sends.
pub const MAX_STDIN_PENDING: usize = 1 << 20;

/// The attach state the shim's pump loop drives.
pub struct Attach {
    cfg: AttachConfig,
    pid: i32,
    listener: UnixListener,
    client: Option<UnixStream>,
    ever_attached: bool,
    decoder: Decoder,
    backlog: Vec<u8>,
    /// Where `STDIN` frames go (non-blocking); `None` once closed.
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    stdin_eof: bool,
    /// The pty master, for resizes.
    pty: Option<RawFd>,
}

impl Attach {
    pub fn new(
        cfg: AttachConfig,
        pid: i32,
        listener: UnixListener,
        stdin: OwnedFd,
        pty: Option<RawFd>,
    ) -> Self {
        let _ = listener.set_nonblocking(true);
        set_nonblocking(stdin.as_raw_fd(), true);
        Attach {
            cfg,
            pid,
            listener,
            client: None,
            ever_attached: false,
            decoder: Decoder::default(),
            backlog: Vec::new(),
            stdin: Some(stdin),
            stdin_pending: Vec::new(),
            stdin_eof: false,
            pty,
        }
    }

    /// The fds to poll besides the output: listener, client, and stdin when it has data queued.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut v = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(c) = &self.client
            && self.stdin_pending.len() < MAX_STDIN_PENDING
        {
            v.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(s) = &self.stdin
            && (!self.stdin_pending.is_empty() || self.stdin_eof)
        {
            v.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        v
    }

    /// Output from the job: to the client, or into the backlog.
    pub fn output(&mut self, kind: u8, bytes: &[u8]) {
        let f = attach::frame(kind, bytes);
        if let Some(c) = &mut self.client {
            if c.write_all(&f).is_ok() {
                return;
            }
            self.disconnected();
        }
        if !self.ever_attached {
            self.backlog.extend_from_slice(&f);
            if self.backlog.len() > attach::BACKLOG_BYTES {
                // Drop whole frames from the front.
                let mut cut = 0;
                while self.backlog.len() - cut > attach::BACKLOG_BYTES {
                    let len = u32::from_be_bytes(
                        self.backlog[cut + 1..cut + 5].try_into().expect("4 bytes"),
                    ) as usize;
                    cut += 5 + len;
                }
                self.backlog.drain(..cut);
            }
        }
    }

    fn disconnected(&mut self) {
        self.client = None;
        // The one who typed is gone: end the input, and hang up a terminal as a closed
        // terminal window would.
        self.stdin_pending.clear();
        self.stdin_eof = true;
        if self.cfg.tty {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(self.pid, libc::SIGHUP) };
        }
        self.flush_stdin();
    }

    /// Handles whatever poll reported: new clients, frames from the client, stdin room.
    pub fn service(&mut self) {
        if let Ok((mut conn, _)) = self.listener.accept() {
            let _ = conn.set_nonblocking(false);
            if self.client.is_some() {
                let _ = conn.write_all(&attach::frame(
                    attach::ERROR,
                    b"the job is already attached to another client",
                ));
            } else {
                let backlog = std::mem::take(&mut self.backlog);
                if conn.write_all(&backlog).is_ok() {
                    self.client = Some(conn);
                    self.ever_attached = true;
                }
            }
        }
        self.read_client();
        self.flush_stdin();
    }

    fn read_client(&mut self) {
        let Some(c) = &mut self.client else { return };
        if self.stdin_pending.len() >= MAX_STDIN_PENDING {
            return; // the job is behind on its stdin: the client waits
        }
        let mut pfd = libc::pollfd {
            fd: c.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return self.disconnected(),
            Ok(n) => self.decoder.feed(&buf[..n]),
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some((kind, p))) => self.frame(kind, p),
                Ok(None) => break,
                Err(_) => return self.disconnected(),
            }
        }
    }

    fn frame(&mut self, kind: u8, p: Vec<u8>) {
        match kind {
            attach::STDIN if p.is_empty() => {
                if self.cfg.tty {
                    self.stdin_pending.push(4); // ^D: EOF for the terminal's reader
                } else {
                    self.stdin_eof = true;
                }
            }
            attach::STDIN => self.stdin_pending.extend_from_slice(&p),
            attach::SIGNAL if p.len() == 4 => {
                let sig = i32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
                // A signal right after start would be dropped by the init before its child
                // has its process group (`child_has_own_group`): wait for it, briefly.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                while !crate::runc::pidfd::child_has_own_group(self.pid as u32)
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                // SAFETY: kill has no memory preconditions; init (tini) forwards it.
                unsafe { libc::kill(self.pid, sig) };
            }
            attach::RESIZE if p.len() == 4 => {
                if let Some(fd) = self.pty {
                    let cols = u16::from_be_bytes([p[0], p[1]]);
                    let rows = u16::from_be_bytes([p[2], p[3]]);
                    set_window_size(fd, cols, rows);
                }
            }
            _ => {} // unknown frames are ignored (newer clients)
        }
    }

    fn flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.stdin_pending.is_empty() {
            // SAFETY: writing from a live buffer to an fd we own.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    self.stdin_pending.as_ptr().cast(),
                    self.stdin_pending.len(),
                )
            };
            if n > 0 {
                self.stdin_pending.drain(..n as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
                return;
            }
            // EPIPE and friends: nobody reads stdin any more.
            self.stdin_pending.clear();
            self.stdin = None;
            return;
        }
        if self.stdin_eof && !self.cfg.tty {
            self.stdin = None; // closing the pipe is the EOF
        }
    }

    /// After the job ended and its output was sent: the exit frame, to a client that is
    /// attached, or to the first one within [`FIRST_ATTACH_WAIT`].
    pub fn finish(mut self, status: &ExitStatus) {
        self.stdin = None;
        if self.client.is_none() && !self.ever_attached {
            let deadline = Instant::now() + FIRST_ATTACH_WAIT;
            while self.client.is_none() && Instant::now() < deadline {
                let mut pfd = libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 200) };
                self.service();
            }
        }
        if let Some(mut c) = self.client.take() {
            let _ = c.write_all(&attach::exit_frame(status));
            let _ = c.shutdown(std::net::Shutdown::Write);
            // Let the client read everything before the socket goes away.
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 1024];
            while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_go_through_proc_fd() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x".repeat(120));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, fd) = socket_path(&dir, "attach.sock").unwrap();
        assert!(fd.is_some() && path.starts_with("/proc/"), "{path:?}");
        assert!(path.as_os_str().len() < 100);
        let listener = UnixListener::bind(&path).unwrap();
        assert!(dir.join("attach.sock").exists(), "bound in the long dir");
        let (connect_path, _fd2) = socket_path(&dir, "attach.sock").unwrap();
        let mut c = UnixStream::connect(connect_path).unwrap();
        c.write_all(b"hi").unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let short = tmp.path().join("s");
        std::fs::create_dir_all(&short).unwrap();
        let (p, fd) = socket_path(&short, "attach.sock").unwrap();
        assert_eq!((p, fd.is_none()), (short.join("attach.sock"), true));
    }

    /// A client streaming stdin to a job that does not read it is held back (not read) once
    /// [`MAX_STDIN_PENDING`] is queued, instead of the shim queueing all it sends.
    #[test]
    fn stdin_for_a_job_that_does_not_read_it_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe fills two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both fds are fresh and ours; the read end is kept open and never read.
        let (_unread, stdin) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let cfg = AttachConfig {
            tty: false,
            cols: 0,
            rows: 0,
        };
        let mut a = Attach::new(cfg, i32::MAX, listener, stdin, None);
        let mut c = UnixStream::connect(&path).unwrap();
        a.service();
        c.set_nonblocking(true).unwrap();
        let f = attach::frame(attach::STDIN, &[b'x'; 16 * 1024]);
        let mut sent = 0;
        for _ in 0..2000 {
            // Whatever fits in the socket now (a partial frame is finished next time).
            let mut off = sent % f.len();
            while let Ok(n) = c.write(&f[off..]) {
                sent += n;
                off = sent % f.len();
                if n == 0 || sent > 8 << 20 {
                    break;
                }
            }
            a.service();
            if sent > 8 << 20 {
                break;
            }
        }
        assert!(
            a.stdin_pending.len() <= MAX_STDIN_PENDING + 64 * 1024,
            "{} bytes queued for a stdin nobody reads",
            a.stdin_pending.len()
        );
    }
}
