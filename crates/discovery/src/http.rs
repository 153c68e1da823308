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

use crate::{Error, Event, Instance, NewInstance, Registry, Result, Watch};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::convert::Infallible;
use std::sync::Arc;

type Shared = Arc<dyn Registry>;

/// The HTTP API over any registry (normally a [`crate::LocalRegistry`]).
pub fn router(registry: Shared) -> Router {
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
        .with_state(registry)
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
    Path((service, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let new: NewInstance = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return error(Error::Invalid(format!("bad instance JSON: {e}"))),
    };
    match r.register(&service, &id, &new).await {
        Ok(i) => Json(i).into_response(),
        Err(e) => error(e),
    }
}

async fn deregister(
    State(r): State<Shared>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
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
}

impl HttpRegistry {
    /// `base` like `http://10.0.0.1:1111`. Needs a rustls crypto provider installed.
    pub fn new(base: &str) -> HttpRegistry {
        HttpRegistry {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("reqwest client"),
        }
    }

    fn unavailable(&self, e: reqwest::Error) -> Error {
        Error::Unavailable(format!("{}: {e}", self.base))
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(match status.as_u16() {
            404 => Error::NotFound(msg),
            400 | 422 => Error::Invalid(msg),
            _ => Error::Unavailable(msg),
        })
    }
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
            .json(new)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| self.unavailable(e))
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
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| self.unavailable(e))
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
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut data = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
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
            }
        });
        Ok(rx)
    }
}
