//! Discovery over HTTP (cluster mode), in Flynn's discoverd shapes:
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/ping` | `{"status":"ok"}` |
//! | PUT | `/services/:s/instances/:id` | `NewInstance` → `Instance` (register or heartbeat) |
//! | DELETE | `/services/:s/instances/:id` | → `{}`; 404 if not registered |
//! | GET | `/services/:s/instances` | → `[Instance]`; with `Accept: text/event-stream`: watch |
//! | GET | `/services/:s/leader` | → `Instance`; 404 without instances |
//! | GET | `/events` | SSE watch of all services |
//!
//! Errors are `{"code","message"}` like the controller's. [`HttpRegistry`] is the client.
//!
//! Every path but `/ping` needs the API key (`Authorization: Bearer KEY`, 401 without it):
//! a registration decides where the router sends a domain's traffic, and the instance list
//! tells where every job listens. Registrations through this API also may not name an
//! address of this host (loopback, the jobs' bridge gateway, the public address) nor a
//! link-local, multicast or unspecified one (422): the router would otherwise serve the
//! host's own listeners (this API, the controller's, the router's metrics) on port 80. The
//! host agent's registrations go through the in-process registry and are not checked here;
//! an operator who means to route to a host address lists it with [`Access::allow`].
//! Registrations of [`KEY_ONLY_SERVICES`] (the controllers, whose `url` hosts send the API key
//! to) take the API key; the cluster token is refused there (403).

use crate::{Error, Event, Instance, NewInstance, Registry, Result, Watch};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

type Shared = Arc<dyn Registry>;

/// Who may call the API, and which instance addresses it accepts.
///
/// Hosts and routers present the cluster token; the controller's API key is accepted too. The
/// key already commands the whole platform (it creates routes and runs any job, so it can point
/// a router anywhere discovery could), so refusing it here would protect nothing, and routers
/// started with only the key keep working; the token is what a machine that must not hold the
/// users' key is given.
#[derive(Clone, Debug)]
pub struct Access {
    /// The API key, accepted on every request but `/ping` as `Authorization: Bearer KEY`.
    pub key: String,
    /// The cluster token, accepted the same way (constant-time compares for both).
    pub token: Option<String>,
    /// Networks or exact addresses registrations may name even though they are refused by
    /// default (a host address, loopback).
    pub allow: Vec<Allowed>,
}

impl Access {
    pub fn key(key: &str) -> Access {
        Access {
            key: key.to_string(),
            token: None,
            allow: Vec::new(),
        }
    }

    /// Which credential `presented` is, if either (both compared in full, constant time).
    fn admits(&self, presented: &str) -> Option<Credential> {
        let key = slipway_types::secret_eq(presented.as_bytes(), self.key.as_bytes());
        let token = self
            .token
            .as_ref()
            .is_some_and(|t| slipway_types::secret_eq(presented.as_bytes(), t.as_bytes()));
        match (key, token) {
            (true, _) => Some(Credential::Key),
            (false, true) => Some(Credential::Token),
            (false, false) => None,
        }
    }
}

/// The credential a request was admitted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credential {
    Key,
    Token,
}

/// Services whose registrations only the API key may write (register, replace or remove):
/// hosts send the API key to the `url` a `slipway-controller` instance names (they fetch
/// layers from it), so with the cluster token alone a router or a host could name its own
/// address there and collect the key from every host.
pub const KEY_ONLY_SERVICES: &[&str] = &["slipway-controller"];

/// 403 when a token holder writes a service only the key may write.
fn key_only(service: &str, credential: Credential) -> Option<Response> {
    (credential != Credential::Key && KEY_ONLY_SERVICES.contains(&service)).then(|| {
        (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "code": "forbidden",
                "message": format!(
                    "registrations of {service} take the API key, not the cluster token: \
                     hosts send the API key to the address they name"
                ),
            })),
        )
            .into_response()
    })
}

/// The HTTP API over any registry (normally a [`crate::LocalRegistry`]).
pub fn router(registry: Shared, access: Access) -> Router {
    let access = Arc::new(access);
    let checked = access.clone();
    Router::new()
        .route(
            "/ping",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/services/{service}/instances/{id}",
            put(register).delete(deregister),
        )
        .route("/services/{service}/instances", get(instances))
        .route("/services/{service}/leader", get(leader))
        .route("/events", get(watch_all))
        .layer(axum::Extension(access))
        .layer(axum::middleware::from_fn(move |req, next| {
            require_key(checked.clone(), req, next)
        }))
        .with_state(registry)
}

/// 401 unless the request carries the key (`/ping` excepted: health checks).
async fn require_key(
    access: Arc<Access>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/ping" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    match presented.and_then(|k| access.admits(k)) {
        Some(credential) => {
            let mut req = req;
            req.extensions_mut().insert(credential);
            next.run(req).await
        }
        None => {
            let message = if presented.is_some() {
                "invalid API key or cluster token"
            } else {
                "missing credential: discovery's API takes the cluster token (file cluster-token in the controller's data directory) or the API key as `Authorization: Bearer TOKEN`"
            };
            (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"code": "unauthorized", "message": message})),
            )
                .into_response()
        }
    }
}

/// Why an instance address is refused for a registration through the API, if it is.
pub fn refused_addr(addr: &str, allow: &[Allowed]) -> Option<String> {
    let Ok(sa) = addr.parse::<SocketAddr>() else {
        return Some(format!(
            "invalid address {addr:?}: expected IP:PORT (e.g. 10.0.0.5:8080)"
        ));
    };
    let ip = match sa.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if sa.port() == 0 {
        return Some(format!("invalid address {addr}: port 0"));
    }
    if allow.iter().any(|a| match *a {
        Allowed::Network(net, len) => in_network(ip, net, len),
        Allowed::Addr(exact) => {
            let exact_ip = match exact.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            exact_ip == ip && exact.port() == sa.port()
        }
    }) {
        return None;
    }
    let why = match ip {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "the unspecified address",
        _ if ip.is_multicast() => "a multicast address",
        IpAddr::V4(v4) if v4.is_link_local() => "a link-local address",
        IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "a link-local address",
        // An address this host has on one of its interfaces (its public one, the jobs' bridge
        // gateway): binding it succeeds only then.
        _ if std::net::UdpSocket::bind((ip, 0)).is_ok() => "an address of this host",
        _ => return None,
    };
    Some(format!(
        "refused address {addr}: it is {why}, and instances registered through discovery's API may not point the router at the host's own listeners (name the job's address, or start the server with --discovery-allow to permit it)"
    ))
}

/// Whether `ip` is inside `net`/`len` (same family only).
pub fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A `--discovery-allow` entry: a network (every port of its addresses), or one address and
/// port (what `slipway supervise` allows for its router child's admin endpoint on loopback, so
/// that nothing else on loopback is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    Network(IpAddr, u8),
    Addr(SocketAddr),
}

/// `10.0.0.0/8`, `127.0.0.1` (one address, every port), `127.0.0.1:1112`, `[::1]:1112`.
pub fn parse_allowed(s: &str) -> std::result::Result<Allowed, NetworkError> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Ok(Allowed::Addr(a)),
        Err(_) => parse_network(s).map(|(ip, len)| Allowed::Network(ip, len)),
    }
}

/// A `--discovery-allow` network that does not parse, in words that show the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network {0:?}: expected e.g. 10.1.0.0/16, 127.0.0.1 or 127.0.0.1:1112")]
    Address(String),
    #[error("invalid prefix length in {network:?}: 0 to {max}")]
    PrefixLength { network: String, max: u8 },
}

/// `10.0.0.0/8`, `127.0.0.1` (one address), `fd00::/8`.
pub fn parse_network(s: &str) -> std::result::Result<(IpAddr, u8), NetworkError> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| NetworkError::Address(s.to_string()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| NetworkError::PrefixLength {
                network: s.to_string(),
                max,
            })?
    };
    Ok((ip, len))
}

fn error(e: Error) -> Response {
    let (status, code) = match &e {
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Error::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let message = match e {
        Error::NotFound(m) | Error::Invalid(m) | Error::Unavailable(m) => m,
    };
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn register(
    State(r): State<Shared>,
    axum::Extension(access): axum::Extension<Arc<Access>>,
    axum::Extension(credential): axum::Extension<Credential>,
    Path((service, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = key_only(&service, credential) {
        return refused;
    }
    let new: NewInstance = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return error(Error::Invalid(format!("bad instance JSON: {e}"))),
    };
    if let Some(why) = refused_addr(&new.addr, &access.allow) {
        return error(Error::Invalid(why));
    }
    match r.register(&service, &id, &new).await {
        Ok(i) => Json(i).into_response(),
        Err(e) => error(e),
    }
}

async fn deregister(
    State(r): State<Shared>,
    axum::Extension(credential): axum::Extension<Credential>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = key_only(&service, credential) {
        return refused;
    }
    match r.deregister(&service, &id).await {
        Ok(()) => Json(serde_json::json!({})).into_response(),
        Err(e) => error(e),
    }
}

async fn instances(
    State(r): State<Shared>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    let sse = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if sse {
        return sse_watch(r, Some(service)).await;
    }
    match r.instances(&service).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

async fn leader(State(r): State<Shared>, Path(service): Path<String>) -> Response {
    match r.leader(&service).await {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => error(Error::NotFound(format!(
            "service {service:?} has no instances, so no leader"
        ))),
        Err(e) => error(e),
    }
}

async fn watch_all(State(r): State<Shared>) -> Response {
    sse_watch(r, None).await
}

async fn sse_watch(r: Shared, service: Option<String>) -> Response {
    let rx = match r.watch(service.as_deref()).await {
        Ok(rx) => rx,
        Err(e) => return error(e),
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|ev| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .json_data(&ev)
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable")),
        )
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Client of the HTTP API; implements [`Registry`], so roles don't care where discovery runs.
#[derive(Clone)]
pub struct HttpRegistry {
    base: String,
    http: reqwest::Client,
    /// A watch silent this long (not even the server's keep-alive comments) is ended, so
    /// the watcher opens it again: see [`WATCH_IDLE`].
    watch_idle: std::time::Duration,
}

/// The server sends a keep-alive comment every 15 s; a watch that gets nothing for this long
/// is on a dead connection (the server's machine gone without a FIN) and is ended, instead of
/// keeping its follower (a router's backends) on stale instances forever.
pub const WATCH_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The most of a reply body read into memory (a service's instances); more is refused.
pub const MAX_BODY: usize = 16 << 20;
/// The most of an error body read (only its message is shown).
const MAX_ERROR_BODY: usize = 64 << 10;
/// The most one watch event (one line, or one event's data) may hold; a bigger one ends the
/// watch (the watcher opens it again) rather than growing the buffer without end.
pub const MAX_EVENT: usize = 1 << 20;
/// Registrations and lookups get this long (a watch has no overall limit): a server that
/// accepted the connection but never answers must not hold a host agent's registration.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl HttpRegistry {
    /// `base` like `http://10.0.0.1:1111`; `key`: the cluster token or the API key (sent as
    /// `Authorization: Bearer` on every request). Needs a rustls crypto provider installed.
    pub fn new(base: &str, key: &str) -> HttpRegistry {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        HttpRegistry {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .default_headers(headers)
                .build()
                .expect("reqwest client"),
            watch_idle: WATCH_IDLE,
        }
    }

    /// Whether the server refuses this client's credential: `Some(its message)` when it
    /// answers 401, `None` when it takes it (or cannot be reached: that is retried later, a
    /// refusal is not). A process checks this once at start to fail with a clear message.
    pub async fn refused(&self) -> Option<String> {
        let resp = self
            .http
            .get(format!(
                "{}/services/slipway-credential-check/instances",
                self.base
            ))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .ok()?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return None;
        }
        Some(self.check(resp).await.err()?.to_string())
    }

    /// Another limit than [`WATCH_IDLE`] for a silent watch (tests).
    pub fn with_watch_idle(mut self, idle: std::time::Duration) -> Self {
        self.watch_idle = idle;
        self
    }

    fn unavailable(&self, e: reqwest::Error) -> Error {
        Error::Unavailable(format!("{}: {e}", self.base))
    }

    /// Reads at most `max` bytes of body, refusing a bigger one once past the limit.
    async fn read_limited(&self, mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>> {
        let too_large = || {
            Error::Unavailable(format!(
                "{}: the reply is over the {max} byte limit",
                self.base
            ))
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unavailable(e))? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T> {
        let body = self.read_limited(resp, MAX_BODY).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Unavailable(format!("{}: bad reply: {e}", self.base)))
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: serde_json::Value = self
            .read_limited(resp, MAX_ERROR_BODY)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let msg = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(match status.as_u16() {
            404 => Error::NotFound(msg),
            401 => Error::Unavailable(format!(
                "discovery at {} refused the API key or cluster token: {msg}; give this process the cluster token (SLIPWAY_CLUSTER_TOKEN or --cluster-token-file: the controller's <data dir>/cluster-token)",
                self.base
            )),
            400 | 403 | 422 => Error::Invalid(msg),
            _ => Error::Unavailable(msg),
        })
    }
}

/// A watch's unfinished line or gathered data is over [`MAX_EVENT`] (checked after each chunk's
/// lines are taken, so a peer streaming a line without end is cut off).
fn too_large(buf: &[u8], data: &str) -> bool {
    buf.len() > MAX_EVENT || data.len() > MAX_EVENT
}

fn seg(s: &str) -> Result<&str> {
    crate::validate_name("name", s)?;
    Ok(s)
}

#[async_trait::async_trait]
impl Registry for HttpRegistry {
    async fn register(&self, service: &str, id: &str, new: &NewInstance) -> Result<Instance> {
        let url = format!(
            "{}/services/{}/instances/{}",
            self.base,
            seg(service)?,
            seg(id)?
        );
        let resp = self
            .http
            .put(url)
            .timeout(REQUEST_TIMEOUT)
            .json(new)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let resp = self.check(resp).await?;
        self.read_json(resp).await
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        let url = format!(
            "{}/services/{}/instances/{}",
            self.base,
            seg(service)?,
            seg(id)?
        );
        let resp = self
            .http
            .delete(url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        self.check(resp).await.map(drop)
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>> {
        let url = format!("{}/services/{}/instances", self.base, seg(service)?);
        let resp = self
            .http
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let resp = self.check(resp).await?;
        self.read_json(resp).await
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watch> {
        let url = match service {
            Some(s) => format!("{}/services/{}/instances", self.base, seg(s)?),
            None => format!("{}/events", self.base),
        };
        let resp = self
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let resp = self.check(resp).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let idle = self.watch_idle;
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut data = String::new();
            loop {
                let chunk = match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(chunk))) => chunk,
                    Ok(_) => return,
                    Err(_) => {
                        tracing::warn!("discovery watch: nothing for {idle:?}; reopening it");
                        return;
                    }
                };
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                        if data.len() > MAX_EVENT {
                            tracing::warn!(
                                "discovery watch: an event over {MAX_EVENT} bytes; dropped"
                            );
                            return;
                        }
                    } else if line.is_empty() && !data.is_empty() {
                        match serde_json::from_str::<Event>(&data) {
                            Ok(ev) => {
                                if tx.send(ev).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!("discovery watch: bad event {data:?}: {e}"),
                        }
                        data.clear();
                    }
                }
                if too_large(&buf, &data) {
                    tracing::warn!("discovery watch: an event over {MAX_EVENT} bytes; dropped");
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_network_says_which_part_is_wrong() {
        assert_eq!(
            parse_network("10.0.0.0/8"),
            Ok(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(parse_network("::1"), Ok(("::1".parse().unwrap(), 128)));
        assert_eq!(
            parse_network("nope/8"),
            Err(NetworkError::Address("nope/8".into()))
        );
        let e = parse_network("10.0.0.0/33").unwrap_err();
        assert_eq!(
            e,
            NetworkError::PrefixLength {
                network: "10.0.0.0/33".into(),
                max: 32
            }
        );
        assert_eq!(
            e.to_string(),
            "invalid prefix length in \"10.0.0.0/33\": 0 to 32"
        );
    }
}
