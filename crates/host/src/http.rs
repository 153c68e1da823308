//! The host API over HTTP (Flynn's paths): JSON, SSE for events, NDJSON for logs.
//!
//! | Method | Path | |
//! |---|---|---|
//! | GET | `/host/status` | [`HostStatus`](crate::types::HostStatus) |
//! | GET | `/host/jobs` | list; with `Accept: text/event-stream`, the job event stream |
//! | GET | `/host/events` | the job event stream (SSE) |
//! | PUT | `/host/jobs/{id}` | add (start) a job; body: [`HostJob`] |
//! | GET | `/host/jobs/{id}` | get a job |
//! | DELETE | `/host/jobs/{id}` | stop a job |
//! | PUT | `/host/jobs/{id}/signal/{sig}` | signal a job |
//! | GET | `/host/jobs/{id}/wait` | wait until the job has finished |
//! | GET | `/host/jobs/{id}/logs?follow=true` | log lines, one JSON object per line |
//! | POST | `/host/jobs/{id}/attach` | `Upgrade: slipway-attach`: the job's [`crate::attach`] frames |
//! | PUT | `/host/epoch/{n}` | leader fencing: a new scheduler's epoch ([`HostApi::fence`]) |
//!
//! A `Slipway-Epoch: N` header on a start (PUT) or stop (DELETE) makes it fenced: 409
//! `fenced: …` once the host has seen a newer epoch.
//!
//! Every request needs the cluster token (`Authorization: Bearer TOKEN`, compared in constant
//! time; 401 without it or with another): this API starts any container as root.

use crate::api::{HostApi, HostError};
use crate::types::{HostJob, parse_signal};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::sync::Arc;

type Api = Arc<dyn HostApi>;

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let code = match &self {
            HostError::NotFound(_) => StatusCode::NOT_FOUND,
            HostError::Conflict(_) => StatusCode::CONFLICT,
            HostError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HostError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(self)).into_response()
    }
}

type R<T> = Result<T, HostError>;

/// The file in a data dir that holds the cluster token (the controller's, or a host daemon's
/// own when it was given none).
pub const CLUSTER_TOKEN_FILE: &str = "cluster-token";

/// The API over `api`, refusing every request that does not carry `token`.
pub fn router(api: Api, token: &str) -> Router {
    let token: Arc<str> = Arc::from(token);
    Router::new()
        .route("/host/status", get(status))
        .route("/host/jobs", get(list))
        .route("/host/events", get(events))
        .route("/host/jobs/{id}", put(add).get(get_job).delete(stop))
        .route("/host/jobs/{id}/signal/{sig}", put(signal))
        .route("/host/jobs/{id}/wait", get(wait))
        .route("/host/jobs/{id}/logs", get(logs))
        .route("/host/jobs/{id}/attach", axum::routing::post(attach))
        .route("/host/epoch/{epoch}", put(fence))
        .with_state(api)
        .layer(axum::middleware::from_fn(move |req, next| {
            require_token(token.clone(), req, next)
        }))
}

/// Serves the API on `listener`, for holders of `token`, until the future is dropped.
pub async fn serve(
    api: Api,
    listener: tokio::net::TcpListener,
    token: &str,
) -> std::io::Result<()> {
    axum::serve(listener, router(api, token)).await
}

/// 401 unless the request carries the cluster token as `Authorization: Bearer TOKEN`.
async fn require_token(
    token: Arc<str>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, t) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
        });
    match presented {
        Some(t) if slipway_types::secret_eq(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        found => {
            let why = if found.is_some() {
                "invalid cluster token"
            } else {
                "missing cluster token: the host API takes it as `Authorization: Bearer TOKEN` (SLIPWAY_CLUSTER_TOKEN or --cluster-token-file; file cluster-token in the controller's data dir)"
            };
            (
                StatusCode::UNAUTHORIZED,
                Json(HostError::BadRequest(why.to_string())),
            )
                .into_response()
        }
    }
}

/// The cluster token a host process uses: `SLIPWAY_CLUSTER_TOKEN`, else the file `file`
/// (`--cluster-token-file`), else `default_file` if it exists, trimmed. Never a command-line
/// argument: every user can read a process's argv.
pub fn cluster_token(
    file: Option<&std::path::Path>,
    default_file: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let read = |path: &std::path::Path| -> std::io::Result<String> {
        let mut s = String::new();
        std::fs::File::open(path)?
            .take(4096)
            .read_to_string(&mut s)?;
        Ok(s)
    };
    let (value, from) = match (std::env::var("SLIPWAY_CLUSTER_TOKEN").ok(), file) {
        (Some(t), _) => (t, "SLIPWAY_CLUSTER_TOKEN".to_string()),
        (None, Some(f)) => (
            read(f).with_context(|| format!("cannot read --cluster-token-file {}", f.display()))?,
            format!("--cluster-token-file {}", f.display()),
        ),
        (None, None) => match read(default_file) {
            Ok(t) => (t, default_file.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", default_file.display()));
            }
        },
    };
    let value = value.trim();
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        anyhow::bail!("the cluster token in {from} is empty or not one word");
    }
    Ok(Some(value.to_string()))
}

async fn attach(
    State(api): State<Api>,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> R<Response> {
    let stream = api.attach(&id).await?;
    Ok(crate::attach::upgrade_response(req, stream))
}

async fn status(State(api): State<Api>) -> R<impl IntoResponse> {
    Ok(Json(api.status().await?))
}

async fn list(State(api): State<Api>, headers: HeaderMap) -> R<Response> {
    let sse = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if sse {
        return events(State(api)).await.map(IntoResponse::into_response);
    }
    Ok(Json(api.list_jobs().await?).into_response())
}

async fn events(State(api): State<Api>) -> R<impl IntoResponse> {
    let stream = api.events().await?.map(|e| {
        Event::default()
            .event(
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            )
            .json_data(&e)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The header a scheduler's fenced calls carry.
pub const EPOCH_HEADER: &str = "slipway-epoch";

fn epoch_of(headers: &HeaderMap) -> R<Option<u64>> {
    let Some(v) = headers.get(EPOCH_HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| HostError::BadRequest(format!("{EPOCH_HEADER} must be a number")))
}

async fn fence(State(api): State<Api>, Path(epoch): Path<u64>) -> R<impl IntoResponse> {
    api.fence(epoch).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(job): Json<HostJob>,
) -> R<impl IntoResponse> {
    if job.id != id {
        return Err(HostError::BadRequest(format!(
            "job id in the body ({}) differs from the URL ({id})",
            job.id
        )));
    }
    Ok(Json(match epoch_of(&headers)? {
        Some(e) => api.add_job_fenced(job, e).await?,
        None => api.add_job(job).await?,
    }))
}

async fn get_job(State(api): State<Api>, Path(id): Path<String>) -> R<impl IntoResponse> {
    Ok(Json(api.get_job(&id).await?))
}

async fn stop(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> R<impl IntoResponse> {
    Ok(Json(match epoch_of(&headers)? {
        Some(e) => api.stop_job_fenced(&id, e).await?,
        None => api.stop_job(&id).await?,
    }))
}

async fn signal(
    State(api): State<Api>,
    Path((id, sig)): Path<(String, String)>,
) -> R<impl IntoResponse> {
    let s = parse_signal(&sig)
        .ok_or_else(|| HostError::BadRequest(format!("unknown signal {sig:?}")))?;
    api.signal_job(&id, s).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait(State(api): State<Api>, Path(id): Path<String>) -> R<impl IntoResponse> {
    Ok(Json(api.wait_job(&id).await?))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> R<impl IntoResponse> {
    let stream = api.logs(&id, q.follow).await?.map(|l| {
        let mut b = serde_json::to_vec(&l).unwrap_or_default();
        b.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(b))
    });
    Ok((
        [("content-type", "application/x-ndjson")],
        Body::from_stream(stream),
    ))
}
