//! The cap on open connections (nginx's `worker_connections`): a counter shared by every
//! listener of a router, taken at accept and given back when the connection's task ends.
//! Past the cap a connection is refused at once — closed, a plain HTTP one after a one-write
//! 503 — so that idle connections cannot take the file descriptors the process shares with
//! the API and the host agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub struct ConnLimit {
    open: Arc<AtomicUsize>,
    max: usize,
    refused: AtomicU64,
    /// When the last "refused" warning was logged (seconds since the Unix epoch): one a
    /// second at most, however many are refused.
    warned: AtomicU64,
}

/// One open connection; dropping it gives the slot back.
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnLimit {
    pub fn new(max: usize) -> ConnLimit {
        ConnLimit {
            open: Arc::default(),
            max: max.max(1),
            refused: AtomicU64::new(0),
            warned: AtomicU64::new(0),
        }
    }

    /// A slot, or `None` when `max` connections are open.
    pub fn try_open(&self) -> Option<Permit> {
        let mut n = self.open.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Permit(self.open.clone())),
                Err(now) => n = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a refused connection and says so in the log (once a second at most).
    pub fn refused(&self, peer: SocketAddr) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.warned.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                %peer,
                refused_total = total,
                "router: {} connections are open, the limit: new ones are refused (raise it with --router-max-connections)",
                self.max
            );
        }
    }
}

/// A 503 in one non-blocking write (a client that does not read it just sees the close), then
/// the connection is dropped by the caller.
pub fn refuse_http(stream: &tokio::net::TcpStream, what: &str) {
    let body =
        format!("503 Service Unavailable: {what} has too many open connections; try again later\n");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
}
