//! One proxied HTTP request: route lookup, backend choice, header rewriting, the upstream
//! exchange on a pooled HTTP/1.1 connection, and Upgrade (WebSocket) splicing.

use crate::backends::{Backend, InFlight, Pooled, choose};
use crate::body::{BoxError, Deadline, ReqBody, TimedBody, bad_body, limit_hit};
use crate::{Shared, answers, sticky};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

/// Flynn's figure: a request moves to another backend at most this many times, and only
/// when connecting failed (so it was never sent).
const MAX_ATTEMPTS: usize = 4;

/// Where a request came in, and the router's state: one `Arc` per connection, so a request
/// clones only this (its count is touched by one thread), not the router-wide `Shared`.
pub struct ConnInfo {
    pub sh: Arc<Shared>,
    pub peer: SocketAddr,
    pub https: bool,
    /// `X-Forwarded-For` (the peer's IP) and `X-Forwarded-Port`, built once per connection:
    /// a request clones them (a reference count) instead of formatting and allocating.
    pub(crate) forwarded_for: HeaderValue,
    pub(crate) forwarded_port: HeaderValue,
}

impl ConnInfo {
    pub fn new(sh: Arc<Shared>, peer: SocketAddr, https: bool, port: u16) -> ConnInfo {
        let ip = peer.ip().to_string();
        ConnInfo {
            sh,
            peer,
            https,
            forwarded_for: HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
            forwarded_port: HeaderValue::from(port),
        }
    }
}

/// A response body: the backend's, streamed (holding the backend's in-flight count until it
/// ends), or a short one of our own.
pub enum RespBody {
    Up {
        inner: TimedBody,
        _guard: InFlight,
        /// Back to the backend's pool once the body was read to the end.
        conn: Option<(Arc<Backend>, Pooled)>,
        /// The body gave its last frame. A chunked body never says so through
        /// `is_end_stream` (only a counted length does), and its connection went unpooled.
        ended: bool,
    },
    Own(Option<Bytes>),
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if let RespBody::Up {
            inner, conn, ended, ..
        } = self
            && (*ended || inner.inner.is_end_stream())
            && let Some((b, pooled)) = conn.take()
        {
            b.put_idle(pooled);
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::Up { inner, ended, .. } => {
                let r = inner.poll_frame(cx);
                *ended |= matches!(r, Poll::Ready(None));
                r
            }
            RespBody::Own(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Up { inner, .. } => inner.inner.is_end_stream(),
            RespBody::Own(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Up { inner, .. } => inner.inner.size_hint(),
            RespBody::Own(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A short plain-text answer of the router's own (404, 503, …): says what happened in words.
pub fn text(status: StatusCode, msg: String) -> Response<RespBody> {
    let mut r = Response::new(RespBody::Own(Some(Bytes::from(msg))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub async fn handle(
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let sh = &conn.sh;
    let start = tokio::time::Instant::now();
    let (method, path) = if sh.access_log {
        (req.method().clone(), req.uri().path().to_string())
    } else {
        Default::default()
    };
    let mut route = None;
    let resp = proxy(sh, &conn, req, start, &mut route).await;
    let took = start.elapsed();
    sh.metrics
        .record(route.as_deref(), resp.status().as_u16(), took);
    if sh.access_log {
        tracing::info!(
            target: "slipway_router::access",
            client = %conn.peer.ip(),
            %method,
            host = route.as_ref().map_or("", |r| r.domain.as_str()),
            %path,
            status = resp.status().as_u16(),
            ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    }
    Ok(resp)
}

async fn proxy(
    sh: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    start: tokio::time::Instant,
    matched: &mut Option<Arc<slipway_types::HttpRoute>>,
) -> Response<RespBody> {
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request (h2 has `:authority`).
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return text(StatusCode::BAD_REQUEST, answers::host_count(hosts));
    }
    let route = {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        // Looked up under the read lock (no await here): no clone of the table's `Arc`.
        let found = sh
            .table
            .read()
            .unwrap()
            .lookup(host, req.uri().path())
            .cloned();
        match found {
            Some(r) => &*matched.insert(r),
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    answers::no_route(host, req.uri().path()),
                );
            }
        }
    };
    let svc = sh.backends.get(&route.service).unwrap_or_default();
    let cands = svc.candidates(route.leader);
    if cands.is_empty() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            answers::none_up(&route.service),
        );
    }
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > sh.limits.max_request_body);
    if too_big {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            answers::body_limit(sh.limits.max_request_body),
        );
    }

    // Sticky routes: the backend named by the client's cookie first, if it is still up.
    let sticky_to = if route.sticky {
        sticky::from_request(req.headers()).and_then(|v| sh.cookie_key.open(v))
    } else {
        None
    };
    let upgrade = prepare_request(&mut req, conn);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let limits = &sh.limits;
    let deadline = || Deadline::new(start, limits.request_timeout);
    let mut req = req.map(|b| ReqBody::new(b, limits.max_request_body, deadline()));
    let body_coming = req.body().still_coming();
    // The response head is awaited until the first of the two limits.
    let head_by = (start + limits.response_timeout).min(deadline().at());

    let mut skip: Vec<SocketAddr> = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let Some(b) = choose(cands, sticky_to, &skip) else {
            break;
        };
        // Counted from the pick on, so that a backend removed while we connect to it is not
        // reported drained (and stopped) under this request.
        let guard = InFlight::new(b.clone());
        if b.removed.load(std::sync::atomic::Ordering::SeqCst) {
            // Removed between the pick and the count: it may already be reported drained.
            drop(guard);
            continue;
        }
        let mut sender = match b.take_idle() {
            Some(s) => s,
            None => match connect(b.addr, sh.limits.connect_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(backend = %b.addr, service = %route.service, "router: cannot connect: {e}; trying another backend");
                    skip.push(b.addr);
                    continue;
                }
            },
        };
        let sent = tokio::time::timeout_at(head_by, sender.sender.try_send_request(req));
        let mut resp = match sent.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(mut e)) => match e.take_message() {
                // A pooled connection the backend had closed: the request was not sent.
                Some(r) => {
                    req = r;
                    continue;
                }
                None => {
                    match limit_hit(e.error()) {
                        Some(Ok(too_large)) => {
                            return text(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("413 Payload Too Large: {too_large}\n"),
                            );
                        }
                        Some(Err(timed_out)) => {
                            return text(
                                StatusCode::REQUEST_TIMEOUT,
                                answers::body_still_coming(timed_out.0),
                            );
                        }
                        None => {}
                    }
                    if let Some(bad) = bad_body(e.error()) {
                        return text(StatusCode::BAD_REQUEST, answers::bad_body(bad));
                    }
                    tracing::warn!(backend = %b.addr, "router: backend failed: {}", e.error());
                    return text(
                        StatusCode::BAD_GATEWAY,
                        answers::backend_failed(&route.service),
                    );
                }
            },
            Err(_) => {
                if body_coming.is_some_and(|d| !d.load(Relaxed)) {
                    return text(
                        StatusCode::REQUEST_TIMEOUT,
                        answers::body_still_coming(limits.request_timeout),
                    );
                }
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    answers::backend_too_slow(limits),
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the backend switched protocols unasked\n".into(),
                );
            };
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _guard = guard;
                if let (Ok(up), Ok(down)) = (backend_upgrade.await, client_upgrade.await) {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(up),
                        &mut TokioIo::new(down),
                    )
                    .await;
                }
            });
            return resp.map(|_| RespBody::Own(None));
        }
        strip_hop_by_hop(resp.headers_mut());
        if route.sticky && sticky_to != Some(b.addr) {
            let cookie = format!(
                "{}={}; Path=/; HttpOnly; SameSite=Lax",
                sticky::COOKIE,
                sh.cookie_key.seal(b.addr)
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return resp.map(|inner| RespBody::Up {
            inner: TimedBody {
                inner,
                deadline: deadline(),
            },
            _guard: guard,
            conn: Some((b, sender)),
            ended: false,
        });
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        answers::unreachable(&route.service),
    )
}

/// Rewrites the client's request for the backend; returns whether it asks for an Upgrade.
fn prepare_request(req: &mut Request<Incoming>, conn: &ConnInfo) -> bool {
    let upgrade_to = req.headers().get(header::UPGRADE).cloned();
    let upgrade = upgrade_to.is_some()
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    // The authority the route was chosen by becomes Host: HTTP/2 has no Host header (the
    // backend speaks HTTP/1.1 and needs one), and an absolute-form target's authority
    // overrides Host (RFC 9112 §3.2.2).
    if let Some(a) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, a);
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
    *req.version_mut() = Version::HTTP_11;

    let h = req.headers_mut();
    strip_hop_by_hop(h);
    if upgrade && let Some(u) = upgrade_to {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
    // Room for the headers added below at once, rather than growing the map step by step.
    h.reserve(5);
    // Several lines are one list (RFC 9110 §5.3); ours goes at its end.
    let xff = if h.contains_key(&X_FORWARDED_FOR) {
        let mut v = Vec::new();
        for prev in h.get_all(&X_FORWARDED_FOR) {
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(conn.forwarded_for.as_bytes());
        HeaderValue::from_bytes(&v).ok()
    } else {
        Some(conn.forwarded_for.clone())
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.https { "https" } else { "http" }),
    );
    h.insert(X_FORWARDED_PORT, conn.forwarded_port.clone());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    h.insert(X_REQUEST_START, HeaderValue::from(now_ms));
    if !h.contains_key(&X_REQUEST_ID) {
        h.insert(X_REQUEST_ID, crate::backends::request_id());
    }
    upgrade
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1), as names built at compile time: no parsing per
/// request.
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers meant for one hop only (RFC 9110 §7.6.1), and those the Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !crate::h1::names_framing(t.as_bytes()))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Pooled> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(Pooled::new(sender))
}
