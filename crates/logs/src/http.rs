//! `GET /apps/{app}/log?lines=N&follow=true&process_type=&job_id=&stream=`: newline-delimited
//! JSON [`LogEntry`]s, or SSE (`id: SEQ`, `data: JSON`) with `Accept: text/event-stream`.
//! Mounted on the controller's port (behind its API key) by `slipway server`.

use crate::aggregator::{Aggregator, Query};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt;
use slipway_api_error::{ApiErr, ApiResult};
use slipway_store::Store;
use slipway_types::{ApiError, ErrorCode, LOG_STREAMS, LogEntry};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct LogState {
    agg: Aggregator,
    store: Arc<dyn Store>,
}

/// The log routes; apps are looked up (by name or id) in `store`.
pub fn router(agg: Aggregator, store: Arc<dyn Store>) -> axum::Router {
    axum::Router::new()
        .route("/apps/{app}/log", axum::routing::get(get_log))
        .with_state(LogState { agg, store })
}

/// The query, checked: unknown parameters and malformed values are 400s that say what is wrong.
pub fn parse_query(query: &str) -> Result<(Query, bool), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed query string: {e}"),
        )
    })?;
    let mut q = Query::default();
    let mut follow = false;
    let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
    for (key, value) in pairs {
        let value = value.trim().to_string();
        match key.as_str() {
            "lines" => {
                q.lines = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "lines must be a number of lines (0 or more), got {value:?}"
                    ))
                })?)
            }
            "follow" => {
                follow = match value.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(bad(format!("follow must be true or false, got {value:?}")));
                    }
                }
            }
            "process_type" | "type" => q.process_type = Some(value).filter(|v| !v.is_empty()),
            "job_id" | "job" => q.job_id = Some(value).filter(|v| !v.is_empty()),
            "stream" => {
                if !value.is_empty() && !LOG_STREAMS.contains(&value.as_str()) {
                    return Err(bad(format!(
                        "stream must be one of {}, got {value:?}",
                        LOG_STREAMS.join(", ")
                    )));
                }
                q.stream = Some(value).filter(|v| !v.is_empty());
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?} (known: lines, follow, process_type, job_id, stream)"
                )));
            }
        }
    }
    Ok((q, follow))
}

async fn get_log(
    State(s): State<LogState>,
    Path(app): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (q, follow) = parse_query(query.as_deref().unwrap_or(""))?;
    // Answered as the controller's API answers a store error (one mapping, slipway-api-error).
    let app = slipway_store::app_by_id_or_name(s.store.as_ref(), &app).await?;
    let app_id = app.id.to_string();
    let sse = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let io_err = |e: std::io::Error| {
        ApiErr::new(
            ErrorCode::Internal,
            format!("cannot read the log of {}: {e}", app.name),
        )
    };
    let body = if follow {
        let lines = bounded(s.agg.follow(&app_id, &q).await.map_err(io_err)?);
        if sse {
            // Comments keep idle connections (and proxies) from timing out.
            let keepalive = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(KEEPALIVE).await;
                Some((": keepalive\n\n".to_string(), ()))
            });
            let events = lines.map(|e| sse_event(&e));
            Body::from_stream(
                futures_util::stream::select(events, keepalive).map(Ok::<_, Infallible>),
            )
        } else {
            Body::from_stream(lines.map(|e| Ok::<_, Infallible>(ndjson(&e))))
        }
    } else {
        let lines = s.agg.read(&app_id, &q).await.map_err(io_err)?;
        let mut out = String::with_capacity(lines.len() * 200);
        for e in &lines {
            out.push_str(&if sse { sse_event(e) } else { ndjson(e) });
        }
        Body::from(out)
    };
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Lines a follower may have waiting (sent by us, not yet taken by its connection). A follower
/// with this many waiting that takes none for [`FOLLOW_STALL`] is dropped: its history and its
/// place in the live lines are let go, instead of piling up for a connection that does not read.
pub const FOLLOW_BACKLOG: usize = 256;
pub const FOLLOW_STALL: Duration = Duration::from_secs(10);

static FOLLOWERS_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many followers this process has dropped for not reading (a metric; tests wait on it).
pub fn followers_dropped() -> u64 {
    FOLLOWERS_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `lines` through a bounded queue fed by a task: what one follower holds is at most
/// [`FOLLOW_BACKLOG`] lines, whatever it reads. Ends (the connection then closes) when the
/// follower is dropped.
fn bounded(
    mut lines: futures_util::stream::BoxStream<'static, LogEntry>,
) -> futures_util::stream::BoxStream<'static, LogEntry> {
    use tokio::sync::mpsc::error::TrySendError;
    let (tx, rx) = tokio::sync::mpsc::channel(FOLLOW_BACKLOG);
    tokio::spawn(async move {
        loop {
            let e = tokio::select! {
                e = lines.next() => match e { Some(e) => e, None => return },
                _ = tx.closed() => return,
            };
            match tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(e)) => {
                    match tokio::time::timeout(FOLLOW_STALL, tx.send(e)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            FOLLOWERS_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(
                                backlog = FOLLOW_BACKLOG,
                                "log follow: dropped a follower that stopped reading"
                            );
                            return;
                        }
                    }
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
        .boxed()
}

fn ndjson(e: &LogEntry) -> String {
    let mut s = serde_json::to_string(e).unwrap_or_default();
    s.push('\n');
    s
}

fn sse_event(e: &LogEntry) -> String {
    format!(
        "id: {}\ndata: {}\n\n",
        e.seq,
        serde_json::to_string(e).unwrap_or_default()
    )
}
