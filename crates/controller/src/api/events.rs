//! The event log: a filtered list, or a live `text/event-stream` that resumes from
//! `Last-Event-ID`.

use crate::AppState;
use crate::error::{ApiErr, ApiResult};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use slipway_types::{ErrorCode, Event, EventFilter, ObjectType};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

/// Other controllers' writes (cluster mode) wake no local watcher; a stream polls this often.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE: Duration = Duration::from_secs(15);

pub async fn list_or_stream(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut filter = parse_filter(&s, query.as_deref().unwrap_or("")).await?;
    let wants_stream = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        return Ok(Json(s.store.list_events(&filter).await?).into_response());
    }
    if let Some(last) = headers.get("last-event-id") {
        let id = last
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiErr::new(
                    ErrorCode::BadRequest,
                    "Last-Event-ID must be an event id (an integer)",
                )
            })?;
        filter.since_id = Some(id);
    }
    Ok(stream(s, filter).into_response())
}

fn stream(
    s: AppState,
    mut filter: EventFilter,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let notifier = s.store.event_notifier();
    // Without a starting point the stream shows only what happens from now on.
    if filter.since_id.is_none() {
        filter.since_id = Some(*notifier.borrow());
    }
    filter.limit = Some(100);
    let state = (s, filter, notifier, VecDeque::<Event>::new());
    let events = futures_util::stream::unfold(
        state,
        |(s, mut filter, mut notifier, mut buf)| async move {
            loop {
                if let Some(e) = buf.pop_front() {
                    let sse = SseEvent::default()
                        .id(e.id.to_string())
                        .json_data(&e)
                        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                    return Some((Ok(sse), (s, filter, notifier, buf)));
                }
                // Mark what we have seen before waiting, so a write between the query and the
                // wait is caught by the watch.
                notifier.borrow_and_update();
                match s.store.list_events(&filter).await {
                    Ok(events) if !events.is_empty() => {
                        filter.since_id = events.last().map(|e| e.id);
                        buf.extend(events);
                    }
                    Ok(_) => {
                        tokio::select! {
                            changed = notifier.changed() => if changed.is_err() { tokio::time::sleep(POLL_INTERVAL).await },
                            _ = tokio::time::sleep(POLL_INTERVAL) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!("event stream: {e}");
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
}

async fn parse_filter(s: &AppState, query: &str) -> Result<EventFilter, ApiErr> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
        ApiErr::new(
            ErrorCode::BadRequest,
            format!("malformed query string: {e}"),
        )
    })?;
    let mut filter = EventFilter::default();
    let bad = |m: String| ApiErr::new(ErrorCode::BadRequest, m);
    for (key, value) in pairs {
        match key.as_str() {
            "app_id" | "app" => filter.app_id = Some(s.store.get_app(&value).await?.id),
            "object_types" | "object_type" => {
                for t in value.split(',').filter(|t| !t.is_empty()) {
                    let t = ObjectType::parse(t).ok_or_else(|| {
                        let known: Vec<&str> = ObjectType::ALL.iter().map(|t| t.as_str()).collect();
                        bad(format!(
                            "unknown object type {t:?} (known: {})",
                            known.join(", ")
                        ))
                    })?;
                    filter.object_types.push(t);
                }
            }
            "object_id" => filter.object_id = Some(value),
            "since_id" => {
                filter.since_id = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("since_id must be an integer, got {value:?}")))?,
                )
            }
            "count" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("count must be a positive integer, got {value:?}")))?;
                filter.limit = Some(n.max(1));
            }
            other => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(filter)
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Event>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiErr::new(ErrorCode::NotFound, format!("event {id} not found")))?;
    Ok(Json(s.store.get_event(id).await?))
}
