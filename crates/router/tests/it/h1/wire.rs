//! HTTP/1.1 on raw sockets for the `h1` tests: a buffered connection that reads one message at
//! a time (the head, then the body by its framing, decoded), and scripted backends that answer
//! with exact bytes. Reads are bounded (5 s), so a hang fails with what was read so far instead
//! of stalling the suite; only a backend waiting for its next request waits without limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub const LIMIT: Duration = Duration::from_secs(5);

/// How a message's body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304, a request without a length).
    None,
    Length,
    Chunked,
    Close,
}

/// One message as read off the wire.
#[derive(Clone, Debug)]
pub struct Msg {
    /// The head as received, without the final blank line.
    pub head: String,
    /// The body, decoded if it was chunked.
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Msg {
    pub fn start_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    pub fn status(&self) -> u16 {
        let code = self.start_line().split(' ').nth(1);
        code.and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// The header lines in order: name as sent, value without the surrounding whitespace.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let lines = self.head.split("\r\n").skip(1);
        lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k, v.trim_matches([' ', '\t'])))
            .collect()
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let h = self.headers().into_iter();
        h.filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(2000)]);
    format!("{s:?} ({} bytes)", b.len())
}

/// A buffered raw TCP connection, either side.
pub struct Conn {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::new(TcpStream::connect(addr).await.unwrap())
    }

    pub fn new(s: TcpStream) -> Conn {
        Conn { s, buf: Vec::new() }
    }

    pub async fn send(&mut self, b: impl AsRef<[u8]>) {
        let w = timeout(LIMIT, self.s.write_all(b.as_ref())).await;
        w.expect("a write blocked for 5 s").expect("write failed");
    }

    /// Reads more into the buffer, waiting at most `wait` (`None`: without limit). `Ok(false)`
    /// at the end of the stream (a reset counts as one), `Err` if the wait ran out.
    async fn fill_within(&mut self, wait: Option<Duration>) -> Result<bool, ()> {
        let mut b = vec![0u8; 256 * 1024];
        let read = self.s.read(&mut b);
        let n = match wait {
            Some(d) => timeout(d, read).await.map_err(|_| ())?,
            None => read.await,
        };
        match n {
            Ok(0) | Err(_) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                Ok(true)
            }
        }
    }

    async fn fill(&mut self, what: &str) -> bool {
        match self.fill_within(Some(LIMIT)).await {
            Ok(more) => more,
            Err(()) => panic!(
                "nothing for 5 s while reading {what}; buffered: {}",
                lossy(&self.buf)
            ),
        }
    }

    /// The next head, or `None` if the peer closed cleanly before one began. `patient` waits
    /// for its first byte without limit (a backend's idle keep-alive connection).
    async fn try_head(&mut self, patient: bool) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Some(String::from_utf8_lossy(&head[..i]).into_owned());
            }
            let more = if patient && self.buf.is_empty() {
                self.fill_within(None).await == Ok(true)
            } else {
                self.fill("a head").await
            };
            if !more {
                assert!(
                    self.buf.is_empty(),
                    "closed inside a head: {}",
                    lossy(&self.buf)
                );
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let got = self.buf.len();
            assert!(self.fill("a body").await, "closed after {got} of {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8_lossy(&l[..i]).into_owned();
            }
            assert!(
                self.fill("a chunk line").await,
                "closed inside a chunked body"
            );
        }
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await;
            let hex = size_line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(hex, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                while !self.line().await.is_empty() {} // trailers
                return body;
            }
            body.extend(self.take(size).await);
            assert_eq!(self.take(2).await, b"\r\n", "a chunk ends with CRLF");
        }
    }

    /// Reads the body that follows `head` by its framing.
    async fn body(&mut self, head: &str, bodyless: bool, request: bool) -> (Vec<u8>, Framing) {
        let m = Msg {
            head: head.into(),
            body: Vec::new(),
            framing: Framing::None,
        };
        if bodyless {
            return (Vec::new(), Framing::None);
        }
        let te = m.all("transfer-encoding").join(",").to_ascii_lowercase();
        if te.trim_end().ends_with("chunked") {
            return (self.chunked().await, Framing::Chunked);
        }
        if let Some(n) = m.get("content-length") {
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length in {head:?}"));
            return (self.take(n).await, Framing::Length);
        }
        if request {
            return (Vec::new(), Framing::None);
        }
        while self.fill("a close-delimited body").await {}
        (std::mem::take(&mut self.buf), Framing::Close)
    }

    /// Reads one response (an interim 1xx is one too); `to_head` for the answer to a HEAD.
    pub async fn response(&mut self, to_head: bool) -> Msg {
        let head = self.try_head(false).await;
        let head = head.expect("the router closed the connection instead of answering");
        let mut m = Msg {
            head,
            body: Vec::new(),
            framing: Framing::None,
        };
        let bodyless = to_head || matches!(m.status(), 100..=199 | 204 | 304);
        (m.body, m.framing) = self.body(&m.head.clone(), bodyless, false).await;
        m
    }

    /// Reads one request; `None` if the peer closed between requests.
    pub async fn request(&mut self) -> Option<Msg> {
        let head = self.try_head(true).await?;
        let (body, framing) = self.body(&head, false, true).await;
        Some(Msg {
            head,
            body,
            framing,
        })
    }

    /// Whether the peer closes within `wait`; what it sends meanwhile is returned either way.
    pub async fn close_within(&mut self, wait: Duration) -> (bool, String) {
        let until = tokio::time::Instant::now() + wait;
        let closed = loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.fill_within(Some(left)).await {
                Ok(true) => continue,
                Ok(false) => break true,
                Err(()) => break false,
            }
        };
        let got = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        (closed, got)
    }
}

/// What a scripted backend writes for one request.
pub struct Reply {
    parts: Vec<Vec<u8>>,
    gap: Duration,
    close_after: Option<Duration>,
}

impl Reply {
    /// Exactly these bytes, then the next request on the same connection.
    pub fn raw(b: impl Into<Vec<u8>>) -> Reply {
        Reply::parts([b], Duration::ZERO)
    }

    /// Each part in its own `write`, `gap` apart.
    pub fn parts<B: Into<Vec<u8>>>(parts: impl IntoIterator<Item = B>, gap: Duration) -> Reply {
        Reply {
            parts: parts.into_iter().map(Into::into).collect(),
            gap,
            close_after: None,
        }
    }

    /// Closes the connection once written.
    pub fn close(self) -> Reply {
        self.close_after(Duration::ZERO)
    }

    /// Closes the connection this long after writing (while it sits idle in the router's pool).
    pub fn close_after(mut self, d: Duration) -> Reply {
        self.close_after = Some(d);
        self
    }
}

/// `200 OK` with `body` and a Content-Length, keep-alive.
pub fn ok(body: impl AsRef<[u8]>) -> Reply {
    let body = body.as_ref();
    let mut b = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    b.extend_from_slice(body);
    Reply::raw(b)
}

/// A backend answering each request with the bytes its script gives; it counts the
/// connections it accepts and keeps every request it read.
pub struct Scripted {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Msg>>>,
}

impl Scripted {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Msg> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn scripted(script: impl Fn(&Msg) -> Reply + Send + Sync + 'static) -> Scripted {
    scripted_by_connection(move |req, _, _| script(req)).await
}

/// [`scripted`], with the script told which connection (0, 1, … in accept order) a request
/// came on and how many came before it on that connection.
pub async fn scripted_by_connection(
    script: impl Fn(&Msg, usize, usize) -> Reply + Send + Sync + 'static,
) -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (count, log) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            // Each part of a reply in its own segment, as scripted (Nagle would merge them).
            let _ = s.set_nodelay(true);
            let conn = count.fetch_add(1, Ordering::SeqCst);
            let (script, log) = (script.clone(), log.clone());
            tokio::spawn(async move {
                let mut c = Conn::new(s);
                let mut nth = 0;
                while let Some(req) = c.request().await {
                    log.lock().unwrap().push(req.clone());
                    let r = script(&req, conn, nth);
                    nth += 1;
                    for (i, p) in r.parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(r.gap).await;
                        }
                        if c.s.write_all(p).await.is_err() {
                            return;
                        }
                    }
                    if let Some(d) = r.close_after {
                        tokio::time::sleep(d).await;
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        addr,
        accepted,
        seen,
    }
}

/// `n` bytes of a pattern that does not repeat every power of two (a shifted or dropped
/// block shows).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
