//! The plain HTTP/1.1 path: the common request (HTTP/1.1, origin-form target, no body or a
//! small one with a `Content-Length`, no `Upgrade`/`Expect`) proxied with one parse of each
//! head and the rewritten head written straight into the outgoing buffer, on one task, with
//! one timer per connection. Anything else — chunked uploads, big bodies, WebSocket, HTTP/1.0,
//! h2c, a head `httparse` rejects — hands the connection, with the bytes read so far, to the
//! hyper path ([`crate::proxy`]) for the rest of its life, so every rule of that path (limits,
//! upgrades, error answers) still holds there.
//!
//! Why a second path: with hyper on both sides a request went through two header maps, two
//! encoders, a channel to the upstream connection's task and a body channel back; the router
//! spent 10–25 % more CPU per request than nginx (`docs/benchmarks.md`). Here the user-space
//! part of a request is a parse, a copy of the head with headers skipped or added, and a
//! write; the system calls are nginx's: one read and one write on each side.

use crate::answers;
use crate::backends::{Backend, InFlight, RawConn, choose};
use crate::proxy::ConnInfo;
use crate::sticky;
use body::Body;
use bytes::{Buf, BytesMut};
use heads::{Framing, RespHead, is_hop_by_hop, own_answer, push_decimal, response_head};
use slipway_types::HttpRoute;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use wait::{Timer, Waited, timed, watching, write_out};

mod body;
mod heads;
mod wait;

/// Request bodies up to this size take this path: read whole, then sent with the head in one
/// write. Bigger ones stream through hyper, which sends and receives at once.
const SMALL_BODY: usize = 16 * 1024;
/// Bigger request heads get 431 (nginx allows 32 KiB; hyper's own default is 400 KiB, and the
/// hyper path is given this limit too).
pub const MAX_HEAD: usize = 64 * 1024;
/// Header lines per head, as hyper allows (more: the request goes to hyper, which answers 431).
const MAX_HEADERS: usize = 100;
/// Read sizes: a head and a small body fit the first; a longer body is read in the second.
pub const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;
/// Flynn's figure, as on the hyper path: a request moves to another backend at most this many
/// times, and only when it was not sent.
const MAX_ATTEMPTS: usize = 4;

/// How the fast path left a connection.
pub enum Next {
    /// Done with it (the client closed, asked to, timed out, or an error cut it).
    Close,
    /// The next request is not for this path: hyper takes the connection, reading first
    /// the bytes still in the buffer.
    HandOver,
}

/// Serves requests on `io` until the connection ends or a request needs the hyper path.
pub async fn serve<IO>(conn: &ConnInfo, io: &mut IO, buf: &mut BytesMut) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let sh = &*conn.sh;
    let limits = &sh.limits;
    let mut timer = Timer::default();
    // The request for the backend, and what goes to the client: both reused.
    let mut rq: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // Whether a request was answered on this connection: a draining router closes it when
    // idle after that, but waits for the first request (the client connected to send one).
    let mut served = false;
    loop {
        if served && buf.is_empty() && sh.is_draining() {
            return Next::Close;
        }
        // The request head, within `header_read_timeout` of starting to wait for it.
        let head_by = Instant::now() + limits.header_read_timeout;
        // Bytes before this offset are known not to end the head: a head dripping in a byte
        // at a time is parsed again only when a line ends, not on every byte.
        let mut scanned = 0;
        let prep = loop {
            if buf[scanned..].contains(&b'\n') {
                rq.clear();
                match prepare(conn, buf, &mut rq) {
                    Prep::Partial => {}
                    Prep::HandOver => return Next::HandOver,
                    p => break p,
                }
            } else if buf.len() > MAX_HEAD {
                break too_large();
            }
            scanned = buf.len();
            reserve(buf);
            let idle = served && buf.is_empty();
            let read = tokio::select! {
                biased;
                r = timed(io.read_buf(buf), &mut timer, head_by) => r,
                // An idle keep-alive connection of a draining router: closed.
                _ = crate::flag_set(&sh.draining), if idle => return Next::Close,
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return Next::Close, // closed, failed, or too slow: as hyper, no answer
            }
        };
        let start = Instant::now();
        let deadline = start + limits.request_timeout;
        served = true;
        let mut req = match prep {
            Prep::Go(req) => req,
            Prep::Answer(a) => {
                // Our own answer (404, 503, 413): the body, if any, is skipped when it is all
                // here; otherwise the connection closes after the answer.
                let whole = a.head_len.saturating_add(a.body_len);
                let close = a.close || whole > buf.len() || sh.is_draining();
                if !close {
                    buf.advance(whole);
                }
                sh.metrics
                    .record(a.route.as_deref(), a.status, start.elapsed());
                out.clear();
                own_answer(&mut out, a.status, &a.msg, close, a.head_method);
                let sent = timed(write_out(io, &out), &mut timer, deadline).await;
                if close || !matches!(sent, Some(Ok(()))) {
                    return Next::Close;
                }
                continue;
            }
            Prep::Partial | Prep::HandOver => unreachable!("handled above"),
        };
        // A small body: wait for all of it, then send it with the head.
        let whole = req.head_len + req.body_len;
        while buf.len() < whole {
            reserve(buf);
            match timed(io.read_buf(buf), &mut timer, deadline).await {
                Some(Ok(n)) if n > 0 => {}
                Some(_) => return Next::Close,
                None => {
                    let msg = answers::body_still_coming(limits.request_timeout);
                    record(conn, &req, 408, start);
                    out.clear();
                    own_answer(&mut out, 408, &msg, true, req.head_method);
                    let _ = timed(write_out(io, &out), &mut timer, Instant::now() + SECOND).await;
                    return Next::Close;
                }
            }
        }
        rq.extend_from_slice(&buf[req.head_len..whole]);
        buf.advance(whole);
        // A draining router's response says `Connection: close`, and the connection closes.
        req.close |= sh.is_draining();
        out.clear();
        match exchange(conn, io, buf, &req, &rq, &mut out, &mut timer, start).await {
            Ok(true) if !req.close => {}
            _ => return Next::Close,
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Room for the next read.
pub(super) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8 * 1024);
    }
}

/// A request on its way: what the exchange needs after the head was parsed and rewritten.
struct Ready {
    head_len: usize,
    body_len: usize,
    head_method: bool,
    /// Idempotent (RFC 9110 §9.2.2): may be sent again when a reused upstream connection
    /// closes before answering.
    idempotent: bool,
    /// The client asked to close after this response.
    close: bool,
    route: Arc<HttpRoute>,
    sticky_to: Option<SocketAddr>,
    /// For the access log only.
    method: String,
    path: String,
}

struct OwnAnswer {
    head_len: usize,
    body_len: usize,
    close: bool,
    /// An answer to HEAD has no body (RFC 9110 §9.3.2).
    head_method: bool,
    route: Option<Arc<HttpRoute>>,
    status: u16,
    msg: String,
}

enum Prep {
    /// The upstream request head is in `out`.
    Go(Ready),
    Answer(OwnAnswer),
    Partial,
    HandOver,
}

/// Parses the request head at the start of `buf` and, if it is for this path, writes the
/// rewritten head for the backend into `out`.
fn prepare(conn: &ConnInfo, buf: &[u8], out: &mut Vec<u8>) -> Prep {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return too_large(),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Partial) => return Prep::Partial,
        Err(_) => return Prep::HandOver, // hyper gives the error its answer
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Prep::HandOver;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Prep::HandOver;
    }

    // First pass: what decides the path, the route and the framing.
    let mut host = "";
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut close = false;
    let mut conn_tokens: Vec<&[u8]> = Vec::new();
    let mut cookie_backend: Option<&str> = None;
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        match n.len() {
            4 if n.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host = std::str::from_utf8(h.value).unwrap_or("");
            }
            6 if cookie_backend.is_none() && n.eq_ignore_ascii_case(b"cookie") => {
                cookie_backend = std::str::from_utf8(h.value).ok().and_then(|v| {
                    v.split(';')
                        .find_map(|c| c.trim().strip_prefix(sticky::COOKIE)?.strip_prefix('='))
                });
            }
            6 if n.eq_ignore_ascii_case(b"expect") => return Prep::HandOver,
            7 if n.eq_ignore_ascii_case(b"upgrade") => return Prep::HandOver,
            10 if n.eq_ignore_ascii_case(b"connection") => {
                for t in h.value.split(|&c| c == b',') {
                    let t = t.trim_ascii();
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.is_empty() && !names_framing(t) {
                        conn_tokens.push(t);
                    }
                }
            }
            14 if n.eq_ignore_ascii_case(b"content-length") => {
                // A repeated or odd length: hyper decides what it means (RFC 9112 §6.3).
                match (length, content_length(h.value)) {
                    (None, Some(len)) => length = Some(len),
                    _ => return Prep::HandOver,
                }
            }
            17 if n.eq_ignore_ascii_case(b"transfer-encoding") => return Prep::HandOver,
            _ => {}
        }
    }
    let own = |status, msg, route, body_len, close| {
        Prep::Answer(OwnAnswer {
            head_len,
            body_len,
            close,
            head_method: method == "HEAD",
            route,
            status,
            msg,
        })
    };
    let body = length.unwrap_or(0);
    let body_len = usize::try_from(body).unwrap_or(usize::MAX);
    if hosts != 1 {
        // RFC 9112 §3.2: exactly one Host; routing by one while the app reads another is
        // host confusion.
        return own(400, answers::host_count(hosts), None, body_len, true);
    }
    // A fragment is no part of a request target (RFC 9112 §3.2); hyper's path drops it too.
    let target = target.split('#').next().unwrap_or(target);
    let path = target.split('?').next().unwrap_or(target);
    let sh = &conn.sh;
    let found = sh.table.read().unwrap().lookup(host, path).cloned();
    let Some(route) = found else {
        return own(404, answers::no_route(host, path), None, body_len, close);
    };
    let max = sh.limits.max_request_body;
    if body > max {
        return own(413, answers::body_limit(max), Some(route), usize::MAX, true);
    }
    if body_len > SMALL_BODY {
        return Prep::HandOver;
    }
    let sticky_to = if route.sticky {
        cookie_backend.and_then(|v| sh.cookie_key.open(v))
    } else {
        None
    };

    // Second pass: the head for the backend, the client's bytes as they came, minus what is
    // for one hop only, plus the forwarding headers.
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut prior_xff: Vec<&[u8]> = Vec::new();
    let mut has_id = false;
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        if is_hop_by_hop(n) || conn_tokens.iter().any(|t| t.eq_ignore_ascii_case(n)) {
            continue;
        }
        match n.len() {
            15 if n.eq_ignore_ascii_case(b"x-forwarded-for") => {
                // Several lines are one list (RFC 9110 §5.3); ours goes at its end.
                prior_xff.push(h.value);
                continue;
            }
            16 if n.eq_ignore_ascii_case(b"x-forwarded-port") => continue,
            15 if n.eq_ignore_ascii_case(b"x-request-start") => continue,
            17 if n.eq_ignore_ascii_case(b"x-forwarded-proto") => continue,
            12 if n.eq_ignore_ascii_case(b"x-request-id") => has_id = true,
            // One value, even if the client listed it twice (a backend may not take lists).
            14 if n.eq_ignore_ascii_case(b"content-length") => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, body);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for p in prior_xff {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(conn.forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(if conn.https { b"https" } else { b"http" });
    out.extend_from_slice(b"\r\nx-forwarded-port: ");
    out.extend_from_slice(conn.forwarded_port.as_bytes());
    out.extend_from_slice(b"\r\nx-request-start: ");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    push_decimal(out, now_ms);
    if !has_id {
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(crate::backends::request_id().as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    let (m, p) = if sh.access_log {
        (method.to_string(), path.to_string())
    } else {
        Default::default()
    };
    Prep::Go(Ready {
        head_len,
        body_len,
        head_method: method == "HEAD",
        // RFC 9110 §9.2.2; a method not known to be idempotent is not.
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        close,
        route,
        sticky_to,
        method: m,
        path: p,
    })
}

fn too_large() -> Prep {
    Prep::Answer(OwnAnswer {
        head_len: 0,
        body_len: usize::MAX,
        close: true,
        head_method: false,
        route: None,
        status: 431,
        msg: format!("431 Request Header Fields Too Large: the limit is {MAX_HEAD} bytes\n"),
    })
}

/// A `Connection` option naming a header that frames or routes the message is not obeyed:
/// dropping `Content-Length` would leave the body to be read as the next request.
pub fn names_framing(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"content-length") || token.eq_ignore_ascii_case(b"host")
}

/// A `Content-Length` value: digits, or a list of the same digits (RFC 9110 §8.6).
pub fn content_length(v: &[u8]) -> Option<u64> {
    let mut out = None;
    for part in v.split(|&c| c == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// Why an exchange with a backend did not produce a response head.
enum Failed {
    /// Connecting failed: the request was not sent; another backend may take it.
    Connect(std::io::Error),
    /// A reused connection turned out closed before answering; sending again is safe.
    Stale,
    /// Anything else, with the words for the 502.
    Bad(String),
    TimedOut,
    /// The client closed its connection while the backend had not answered yet (nginx's 499).
    ClientGone,
}

/// One request to a backend (`rq`: its head and body) and its response to the client (its
/// head is put together in `out`). `Ok(true)`: the client connection can take the next
/// request. Bytes the client sends meanwhile (pipelined requests) are kept in `buf`.
#[allow(clippy::too_many_arguments)]
async fn exchange<IO>(
    conn: &ConnInfo,
    io: &mut IO,
    buf: &mut BytesMut,
    req: &Ready,
    rq: &[u8],
    out: &mut Vec<u8>,
    timer: &mut Timer,
    start: Instant,
) -> std::io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let sh = &*conn.sh;
    let limits = &sh.limits;
    let deadline = start + limits.request_timeout;
    let head_by = (start + limits.response_timeout).min(deadline);
    let route = &req.route;
    let svc = sh.backends.get(&route.service).unwrap_or_default();
    let cands = svc.candidates(route.leader);
    let mut skip: Vec<SocketAddr> = Vec::new();
    let mut failure = None;
    // After a pooled connection turned out closed, the next attempt connects afresh: the
    // others in the pool may have been closed at the same moment (a backend restarting).
    let mut pooled = true;
    for _ in 0..MAX_ATTEMPTS {
        if cands.is_empty() {
            break;
        }
        let Some(b) = choose(cands, req.sticky_to, &skip) else {
            break;
        };
        // Counted from the pick on, as on the hyper path (see there).
        let guard = InFlight::new(b.clone());
        if b.removed.load(Ordering::SeqCst) {
            drop(guard);
            continue;
        }
        let to = (&*b, limits.connect_timeout, pooled);
        match send(to, req, rq, io, buf, out, timer, head_by).await {
            Ok((up, head)) => {
                let r = respond(conn, io, req, up, head, &b, out, timer, start).await;
                drop(guard);
                return r;
            }
            Err(Failed::Connect(e)) => {
                tracing::warn!(backend = %b.addr, service = %route.service, "router: cannot connect: {e}; trying another backend");
                skip.push(b.addr);
            }
            Err(Failed::Stale) => pooled = false,
            Err(Failed::ClientGone) => {
                // Nobody to answer: the backend's connection is dropped, the request counted.
                record(conn, req, 499, start);
                return Ok(false);
            }
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
    }
    let (status, msg) = match failure {
        None if cands.is_empty() => (503, answers::none_up(&route.service)),
        None | Some(Failed::Connect(_) | Failed::Stale | Failed::ClientGone) => {
            (503, answers::unreachable(&route.service))
        }
        Some(Failed::TimedOut) => (504, answers::backend_too_slow(limits)),
        Some(Failed::Bad(why)) => {
            tracing::warn!(service = %route.service, "router: backend failed: {why}");
            (502, answers::backend_failed(&route.service))
        }
    };
    record(conn, req, status, start);
    out.clear();
    own_answer(out, status, &msg, req.close, req.head_method);
    match timed(write_out(io, out), timer, deadline).await {
        Some(r) => r.map(|()| true),
        None => Ok(false),
    }
}

fn record(conn: &ConnInfo, req: &Ready, status: u16, start: Instant) {
    let sh = &conn.sh;
    let took = start.elapsed();
    sh.metrics.record(Some(req.route.as_ref()), status, took);
    if sh.access_log {
        tracing::info!(
            target: "slipway_router::access",
            client = %conn.peer.ip(),
            method = %req.method,
            host = req.route.domain.as_str(),
            path = %req.path,
            status,
            ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// Sends the request `rq` to backend `b` on a pooled connection (if `pooled`) or a new one
/// (within `connect_timeout`) and reads the response head, watching the client meanwhile (see
/// [`watching`]). On success the client's response head is in `out`.
#[allow(clippy::too_many_arguments)]
async fn send<IO: AsyncRead + Unpin>(
    (b, connect_timeout, pooled): (&Backend, Duration, bool),
    req: &Ready,
    rq: &[u8],
    io: &mut IO,
    cbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    timer: &mut Timer,
    head_by: Instant,
) -> Result<(RawConn, RespHead), Failed> {
    let (mut up, reused) = match pooled.then(|| b.take_raw()).flatten() {
        Some(c) => (c, true),
        None => {
            let io =
                match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(b.addr))
                    .await
                {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => return Err(Failed::Connect(e)),
                    Err(_) => {
                        return Err(Failed::Connect(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        )));
                    }
                };
            let _ = io.set_nodelay(true);
            (RawConn::new(io), false)
        }
    };
    up.buf.clear();
    match timed(up.io.write_all(rq), timer, head_by).await {
        Some(Ok(())) => {}
        Some(Err(_)) if reused => return Err(Failed::Stale),
        Some(Err(e)) => return Err(Failed::Bad(format!("sending the request: {e}"))),
        None => return Err(Failed::TimedOut),
    }
    loop {
        reserve(&mut up.buf);
        match watching(up.io.read_buf(&mut up.buf), io, cbuf, timer, head_by).await {
            Waited::Done(Ok(n)) if n > 0 => {}
            Waited::Done(r) => {
                if reused && up.buf.is_empty() && req.idempotent {
                    return Err(Failed::Stale);
                }
                let why = match r {
                    Err(e) => format!("reading the response: {e}"),
                    Ok(_) => "it closed the connection before a complete response head".into(),
                };
                return Err(Failed::Bad(why));
            }
            Waited::TimedOut => return Err(Failed::TimedOut),
            Waited::ClientGone => return Err(Failed::ClientGone),
        }
        out.clear();
        match response_head(&up.buf, req, out) {
            Ok(Some(head)) => return Ok((up, head)),
            Ok(None) if up.buf.len() > MAX_HEAD => {
                return Err(Failed::Bad("its response head is too large".into()));
            }
            Ok(None) => {}
            Err(why) => return Err(Failed::Bad(why)),
        }
    }
}

/// Writes the response to the client: the head in `out` (finished here) with the first part
/// of the body, then the rest as it comes. `Ok(true)`: the client connection can go on.
#[allow(clippy::too_many_arguments)]
async fn respond<IO>(
    conn: &ConnInfo,
    io: &mut IO,
    req: &Ready,
    mut up: RawConn,
    head: RespHead,
    b: &Arc<Backend>,
    out: &mut Vec<u8>,
    timer: &mut Timer,
    start: Instant,
) -> std::io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let sh = &*conn.sh;
    let deadline = start + sh.limits.request_timeout;
    if req.route.sticky && req.sticky_to != Some(b.addr) {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(sticky::COOKIE.as_bytes());
        out.push(b'=');
        out.extend_from_slice(sh.cookie_key.seal(b.addr).as_bytes());
        out.extend_from_slice(b"; Path=/; HttpOnly; SameSite=Lax\r\n");
    }
    // A router that began draining while the backend answered closes after this response.
    let close = req.close || head.framing == Framing::Close || sh.is_draining();
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    up.buf.advance(head.len);

    // The body: what came with the head goes out with it; then the rest, as it comes,
    // straight from the read buffer.
    let mut body = Body::new(head.framing);
    let take = match body.take(&up.buf) {
        Ok(n) => n,
        Err(why) => {
            // Nothing went to the client yet: it gets a 502 rather than a silent close.
            tracing::warn!(backend = %b.addr, service = %req.route.service, "router: backend failed: {why}");
            record(conn, req, 502, start);
            let msg = answers::backend_failed(&req.route.service);
            out.clear();
            own_answer(out, 502, &msg, true, req.head_method);
            let _ = timed(write_out(io, out), timer, deadline).await;
            return Ok(false);
        }
    };
    record(conn, req, head.status, start);
    out.extend_from_slice(&up.buf[..take]);
    up.buf.advance(take);
    match timed(write_out(io, out), timer, deadline).await {
        Some(r) => r?,
        None => return Ok(false),
    }
    if !body.done() {
        // Bigger reads for a body still coming (the first part took all that was read): a
        // 64 KiB response took 8 reads and 8 writes with 8 KiB, 5 % more CPU than nginx.
        if up.buf.capacity() < BODY_READ {
            up.buf = BytesMut::with_capacity(BODY_READ);
        }
        loop {
            // Cleared and reserved: the space already passed on is read into again.
            up.buf.clear();
            up.buf.reserve(BODY_READ);
            match timed(up.io.read_buf(&mut up.buf), timer, deadline).await {
                Some(Ok(0)) if head.framing == Framing::Close => break,
                Some(Ok(n)) if n > 0 => {}
                // The backend stopped mid-body or time ran out: the client sees the
                // connection close before the body's end, as on the hyper path.
                _ => return Ok(false),
            }
            let take = body.take(&up.buf).map_err(std::io::Error::other)?;
            match timed(write_out(io, &up.buf[..take]), timer, deadline).await {
                Some(r) => r?,
                None => return Ok(false),
            }
            up.buf.advance(take);
            if body.done() {
                break;
            }
        }
        // An idle pooled connection keeps a small buffer.
        if up.buf.is_empty() {
            up.buf = BytesMut::with_capacity(HEAD_READ);
        }
    }
    if head.reusable && up.buf.is_empty() {
        b.put_raw(up);
    }
    Ok(!close)
}
