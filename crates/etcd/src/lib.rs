//! A lean etcd v3 client: etcd 3.4 serves its v3 API as JSON over HTTP (the grpc-gateway), so
//! this crate speaks it with reqwest and serde — no gRPC stack, no protoc in the build.
//!
//! What it keeps for its callers:
//! - **several members** (`--etcd URL[,URL…]`): a read or keep-alive (safe to send twice) that
//!   cannot connect, times out, or that a member answers with a 5xx goes to the next member;
//!   the member that answered last is tried first next time. A write moves on only when the
//!   member cannot have taken it on (the connection was never made, or it refused the write
//!   for want of a leader, for load, or as not capable): a write that timed out, whose answer
//!   broke off, or that a member failed otherwise may have been applied, so it is reported
//!   ([`Error::Timeout`], [`Error::Uncertain`]) and never sent twice.
//!   Requests ask etcd to require a leader, so a member cut off from its cluster refuses at
//!   once (and the next is tried) instead of holding the request until its own timeout.
//! - **bounded**: every call has a timeout, every response body and every watch line a size
//!   limit, so a hostile or broken endpoint cannot make a caller wait or buffer without end.
//! - **errors that name the endpoint** and say what to do.
//!
//! [`election`] builds leader election with fencing on it. Not covered: etcd's own auth and
//! TLS client certificates (the cluster's etcd is expected on a private network for now).

#![forbid(unsafe_code)]

pub mod election;
mod proto;
mod watch;

pub use election::{Election, Leadership};
pub use proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, EventType,
    Header, KeyValue, Lease, Member, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, SortOrder, SortTarget, Status, TxnRequest, TxnResponse, WatchEvent,
    WatchRequest, WatchResponse, prefix_end,
};
pub use watch::WatchStream;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long one unary call may take on one member (etcd's own request timeout is 5 s + election
/// time; a member without quorum answers with an error before this).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long connecting to one member may take (loopback or LAN: a missing member is refused or
/// times out fast, and the next one is tried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest unary response accepted (a range over many keys; Slipway's keys are small).
pub const MAX_RESPONSE: usize = 16 << 20;
/// The largest single watch response (one line of the stream) accepted.
pub const MAX_WATCH_LINE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No member could be reached (or every one answered 5xx).
    #[error(
        "etcd is unreachable at {endpoints}: {detail}. Check that etcd runs there and that \
         --etcd (SLIPWAY_ETCD) lists its client URLs"
    )]
    Unavailable { endpoints: String, detail: String },
    /// A member refused the request (a gRPC status from the gateway).
    #[error("etcd at {endpoint} refused {call}: {message} (gRPC code {code})")]
    Refused {
        endpoint: String,
        call: &'static str,
        code: i64,
        message: String,
    },
    /// A write timed out: it may or may not have been applied.
    #[error(
        "etcd at {endpoint} did not answer {call} within {timeout:?}: it may or may not have \
         been applied; check the member's health (etcdctl endpoint health)"
    )]
    Timeout {
        endpoint: String,
        call: &'static str,
        timeout: Duration,
    },
    /// A write's member failed after it may have applied it (the answer broke off, the member
    /// hung up, or it answered with an error such as its own request timeout): not sent to
    /// another member, as that could apply it twice.
    #[error(
        "etcd at {endpoint} failed during {call}: {detail}. It may or may not have been \
         applied, so it was not sent to another member: read the current state before retrying"
    )]
    Uncertain {
        endpoint: String,
        call: &'static str,
        detail: String,
    },
    /// A response this client cannot use (too large, not etcd's JSON).
    #[error("etcd at {endpoint} answered {call} with something unusable: {detail}")]
    Protocol {
        endpoint: String,
        call: &'static str,
        detail: String,
    },
    /// A watch asked for history etcd already compacted: re-read and watch again.
    #[error(
        "etcd at {endpoint} compacted the history a watch asked for (compacted up to revision \
         {compact_revision}): read the current state and watch from there"
    )]
    Compacted {
        endpoint: String,
        compact_revision: i64,
    },
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    /// This process no longer leads `name` (its lease expired or its key is gone).
    #[error(
        "this process lost the leadership of {name} (epoch {epoch}): another process may lead \
         now, so this one must not act; it campaigns again to lead"
    )]
    NotLeader { name: String, epoch: i64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An etcd client over one or more members' client URLs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The member that answered last: tried first.
    preferred: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

impl Client {
    /// A client over `URL[,URL…]` (`http://host:2379`). Checks the URLs only: see
    /// [`Client::connect`] to also check that etcd answers.
    pub fn new(endpoints: &str) -> Result<Client> {
        Client::with_timeout(endpoints, CALL_TIMEOUT)
    }

    /// As [`Client::new`], with another per-call timeout.
    pub fn with_timeout(endpoints: &str, timeout: Duration) -> Result<Client> {
        let mut list = Vec::new();
        for e in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let url = reqwest::Url::parse(e).map_err(|err| {
                Error::Config(format!(
                    "{e:?} is not a URL ({err}): give etcd client URLs as http://HOST:PORT"
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || url.path() != "/"
                || url.query().is_some()
                || !url.username().is_empty()
            {
                return Err(Error::Config(format!(
                    "{e:?} is not an etcd client URL: expected http://HOST:PORT (no path, no \
                     credentials)"
                )));
            }
            list.push(e.trim_end_matches('/').to_string());
        }
        if list.is_empty() {
            return Err(Error::Config(
                "no etcd endpoint given: expected URL[,URL…] such as http://127.0.0.1:2379".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A watch is a response that never ends: a peer that vanished without a FIN is
            // found by TCP keep-alive (about 10 s + 3 × 5 s) instead of never.
            .tcp_keepalive(Duration::from_secs(10))
            .tcp_keepalive_interval(Duration::from_secs(5))
            .tcp_keepalive_retries(3u32)
            .no_proxy()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints: list,
                preferred: AtomicUsize::new(0),
                timeout,
            }),
        })
    }

    /// [`Client::new`], then a status call that must succeed on at least one member: a
    /// process started with a wrong `--etcd` fails at start, naming the URLs.
    pub async fn connect(endpoints: &str) -> Result<Client> {
        let c = Client::new(endpoints)?;
        c.status_any().await?;
        Ok(c)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Sends `body` to `path` on the preferred member, moving on to the next one on a
    /// connect error, a 5xx, or (when `idempotent`) a timeout.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        body: &Req,
        idempotent: bool,
    ) -> Result<Resp> {
        let n = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.inner.endpoints[i];
            let mut req = self
                .inner
                .http
                .post(format!("{endpoint}{path}"))
                .timeout(self.inner.timeout);
            if !matches!(call, "status" | "member list") {
                // etcd's "require leader": a member cut off from its cluster's leader answers
                // 503 at once instead of after its request timeout, and the next member is
                // tried. Status and member list are the member's own view: asked anyway.
                req = req.header("Grpc-Metadata-hasleader", "true");
            }
            let sent = req.json(body).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if e.is_timeout() && !idempotent => {
                    return Err(Error::Timeout {
                        endpoint: endpoint.clone(),
                        call,
                        timeout: self.inner.timeout,
                    });
                }
                // Not connected: the member never saw it, whatever it is.
                Err(e) if idempotent || e.is_connect() => {
                    failures.push(format!("{endpoint}: {}", error_chain(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(Error::Uncertain {
                        endpoint: endpoint.clone(),
                        call,
                        detail: error_chain(&e),
                    });
                }
            };
            let status = resp.status();
            let body = match read_bounded(resp, MAX_RESPONSE).await {
                Ok(b) => b,
                Err(BodyError::TooLarge) => {
                    return Err(Error::Protocol {
                        endpoint: endpoint.clone(),
                        call,
                        detail: format!("response over {MAX_RESPONSE} bytes"),
                    });
                }
                Err(BodyError::Http(e)) if e.is_timeout() && !idempotent => {
                    return Err(Error::Timeout {
                        endpoint: endpoint.clone(),
                        call,
                        timeout: self.inner.timeout,
                    });
                }
                Err(BodyError::Http(e)) if idempotent => {
                    failures.push(format!("{endpoint}: {}", error_chain(&e)));
                    continue;
                }
                // The member answered, so it had the request: the answer broke off.
                Err(BodyError::Http(e)) => {
                    return Err(Error::Uncertain {
                        endpoint: endpoint.clone(),
                        call,
                        detail: format!("its answer ({status}) broke off: {}", error_chain(&e)),
                    });
                }
            };
            if status.is_server_error() {
                let message = gateway_error(&body).map_or_else(
                    || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                    |(_, m)| m,
                );
                if !idempotent && !refused_before_applying(&message) {
                    return Err(Error::Uncertain {
                        endpoint: endpoint.clone(),
                        call,
                        detail: format!("{status} {message}"),
                    });
                }
                failures.push(format!("{endpoint}: {status} {message}"));
                continue;
            }
            if !status.is_success() {
                let (code, message) = gateway_error(&body).unwrap_or_else(|| {
                    (
                        -1,
                        format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        ),
                    )
                });
                return Err(Error::Refused {
                    endpoint: endpoint.clone(),
                    call,
                    code,
                    message,
                });
            }
            self.inner.preferred.store(i, Ordering::Relaxed);
            return serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                endpoint: endpoint.clone(),
                call,
                detail: format!("not the expected JSON: {e}"),
            });
        }
        Err(Error::Unavailable {
            endpoints: self.inner.endpoints.join(","),
            detail: failures.join("; "),
        })
    }

    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.call("range", "/v3/kv/range", req, true).await
    }

    /// The key's current value, if it exists.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        Ok(self
            .range(&RangeRequest::key(key))
            .await?
            .kvs
            .into_iter()
            .next())
    }

    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse> {
        self.call("put", "/v3/kv/put", req, false).await
    }

    pub async fn delete_range(&self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.call("delete", "/v3/kv/deleterange", req, false).await
    }

    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        self.call("txn", "/v3/kv/txn", req, false).await
    }

    /// A new lease of `ttl` seconds (etcd raises a TTL below its minimum: see [`Lease::ttl`]).
    pub async fn lease_grant(&self, ttl: i64) -> Result<Lease> {
        #[derive(Serialize)]
        struct Req {
            #[serde(rename = "TTL", with = "proto::int")]
            ttl: i64,
        }
        // Safe to repeat: a lease granted by an attempt that timed out expires on its own.
        let r: proto::LeaseResponse = self
            .call("lease grant", "/v3/lease/grant", &Req { ttl }, true)
            .await?;
        if !r.error.is_empty() || r.id == 0 {
            return Err(Error::Refused {
                endpoint: self.inner.endpoints.join(","),
                call: "lease grant",
                code: -1,
                message: if r.error.is_empty() {
                    "no lease id in the answer".into()
                } else {
                    r.error
                },
            });
        }
        Ok(Lease {
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Renews the lease for its full TTL: `Some(ttl)`, or `None` when it already expired
    /// (or was revoked) — its keys are gone.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>> {
        let r: WrappedLease = self
            .call(
                "lease keep-alive",
                "/v3/lease/keepalive",
                &LeaseId { id },
                true,
            )
            .await?;
        if let Some(e) = r.error {
            return Err(Error::Refused {
                endpoint: self.inner.endpoints.join(","),
                call: "lease keep-alive",
                code: -1,
                message: e.to_string(),
            });
        }
        let ttl = r.result.map(|r| r.ttl).unwrap_or(0);
        Ok((ttl > 0).then_some(ttl))
    }

    /// Revokes the lease: its keys are deleted now. Revoking an expired lease is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        match self
            .call::<_, serde_json::Value>("lease revoke", "/v3/lease/revoke", &LeaseId { id }, true)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Refused { code: 5, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The lease's remaining seconds, or `None` when it expired.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<i64>> {
        let r: proto::LeaseResponse = self
            .call(
                "lease time-to-live",
                "/v3/lease/timetolive",
                &LeaseId { id },
                true,
            )
            .await?;
        Ok((r.ttl > 0).then_some(r.ttl))
    }

    /// Starts a watch on the first member that accepts it. The stream ends (an error or
    /// `None`) when the connection breaks: callers re-read and watch again.
    pub async fn watch(&self, req: &WatchRequest) -> Result<WatchStream> {
        watch::start(self, req).await
    }

    /// The status of one member (its URL as given).
    pub async fn status_of(&self, endpoint: &str) -> Result<Status> {
        let one = Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                endpoints: vec![endpoint.to_string()],
                preferred: AtomicUsize::new(0),
                timeout: self.inner.timeout,
            }),
        };
        one.call("status", "/v3/maintenance/status", &Empty {}, true)
            .await
    }

    /// The status of the first member that answers.
    pub async fn status_any(&self) -> Result<Status> {
        self.call("status", "/v3/maintenance/status", &Empty {}, true)
            .await
    }

    pub async fn member_list(&self) -> Result<Vec<Member>> {
        let r: proto::MemberListResponse = self
            .call("member list", "/v3/cluster/member/list", &Empty {}, true)
            .await?;
        Ok(r.members)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn rotation(&self) -> impl Iterator<Item = (usize, &str)> {
        let n = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, self.inner.endpoints[i].as_str())
        })
    }

    pub(crate) fn prefer(&self, i: usize) {
        self.inner.preferred.store(i, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct LeaseId {
    #[serde(rename = "ID", with = "proto::int")]
    id: i64,
}

/// Keep-alive is a stream in gRPC: the gateway wraps each answer as `{"result": …}`.
#[derive(serde::Deserialize)]
struct WrappedLease {
    result: Option<proto::LeaseResponse>,
    error: Option<serde_json::Value>,
}

pub(crate) enum BodyError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads a whole response body, refusing one over `limit` bytes.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether a member's 5xx message says it refused a request before taking it on, so that
/// sending it to another member cannot apply it twice: etcd checks for a leader (the
/// "require leader" header), its request rate and its capabilities before proposing anything.
/// Any other failure (its own request timeout, "leader changed", stopping, a proxy's 502) may
/// come after the write was proposed.
fn refused_before_applying(message: &str) -> bool {
    [
        "etcdserver: no leader",
        "etcdserver: too many requests",
        "etcdserver: not capable",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The gateway's error body: `{"error": …, "message": …, "code": N}`.
pub(crate) fn gateway_error(body: &[u8]) -> Option<(i64, String)> {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: i64,
        #[serde(default)]
        message: String,
        #[serde(default)]
        error: String,
    }
    let e: E = serde_json::from_slice(body).ok()?;
    let m = if e.message.is_empty() {
        e.error
    } else {
        e.message
    };
    (!m.is_empty()).then_some((e.code, m))
}

/// A reqwest error with its causes ("error sending request: connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
