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

/// On SQLite another process's writes wake no watcher, so a stream also polls this often; on
/// PostgreSQL the notifier follows every controller (LISTEN/NOTIFY) and a stream only waits
/// for it. Also the pause after a failed read.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(operation_id = "events_list_or_stream", get, path = "/events", tag = "events", params(crate::api::spec::EventQuery), responses((status = 200, description = "Events in id order; with `Accept: text/event-stream` a stream of them (SSE, resumable with `Last-Event-ID`)", content((Vec<Event> = "application/json"), (String = "text/event-stream"))), crate::api::spec::ReadErrors))]
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

/// Events a stream reads from the store at once: the most it holds for a subscriber that does
/// not read (the store is the backlog, not memory). It was 100: 500 subscribers that never read,
/// resuming from id 0 over 9 KB events, held ~380 MB.
const PAGE: u32 = 8;
/// A subscriber that has caught up once and then falls more than this many events behind the
/// newest is dropped (it ends with a comment saying so; reconnecting with `Last-Event-ID`
/// resumes without a gap). One that is still catching up (`Last-Event-ID` or `since_id` far
/// back) is not: it reads at its own pace, from the store.
pub(crate) const MAX_LAG: i64 = 1000;

/// One subscriber's place in the event log.
struct Sub {
    s: AppState,
    filter: EventFilter,
    notifier: tokio::sync::watch::Receiver<i64>,
    buf: VecDeque<Event>,
    /// Events up to this id have been read from the store (delivered, in `buf`, or not matching
    /// the filter): how far behind it is, is the newest id minus this.
    read_to: i64,
    /// The last id sent, for the drop notice.
    sent: Option<i64>,
    /// Caught up with the newest event at least once (only then can it fall behind).
    live: bool,
    done: bool,
}

impl Sub {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.done {
                return None;
            }
            let newest = *self.notifier.borrow();
            if self.live && newest - self.read_to > MAX_LAG {
                self.done = true;
                let resume = self.sent.or(self.filter.since_id).unwrap_or(0);
                tracing::info!(
                    behind = newest - self.read_to,
                    "event stream: dropped a subscriber that fell behind"
                );
                return Some(SseEvent::default().comment(format!(
                    "dropped: this stream fell more than {MAX_LAG} events behind; reconnect with Last-Event-ID: {resume} to resume"
                )));
            }
            if let Some(e) = self.buf.pop_front() {
                self.sent = Some(e.id);
                return Some(
                    SseEvent::default()
                        .id(e.id.to_string())
                        .json_data(&e)
                        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
                );
            }
            // Mark what we have seen before reading, so a write between the query and the wait
            // is caught by the watch.
            let mark = *self.notifier.borrow_and_update();
            match self.s.store.list_events(&self.filter).await {
                Ok(events) => {
                    let full = events.len() >= PAGE as usize;
                    if let Some(last) = events.last() {
                        self.filter.since_id = Some(last.id);
                        self.read_to = self.read_to.max(last.id);
                    }
                    if !full {
                        // Everything up to `mark` that matches has been read.
                        self.read_to = self.read_to.max(mark);
                        self.live = true;
                    }
                    if !events.is_empty() {
                        self.buf.extend(events);
                        continue;
                    }
                    let poll = async {
                        if self.s.store.events_cluster_wide() {
                            std::future::pending::<()>().await
                        }
                        tokio::time::sleep(POLL_INTERVAL).await
                    };
                    tokio::select! {
                        changed = self.notifier.changed() => if changed.is_err() { tokio::time::sleep(POLL_INTERVAL).await },
                        _ = poll => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("event stream: {e}");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }
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
    filter.limit = Some(PAGE);
    let sub = Sub {
        read_to: filter.since_id.unwrap_or(0),
        s,
        filter,
        notifier,
        buf: VecDeque::new(),
        sent: None,
        live: false,
        done: false,
    };
    let events = futures_util::stream::unfold(sub, |mut sub| async move {
        let e = sub.next().await?;
        Some((Ok(e), sub))
    });
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
            "app_id" | "app" => {
                filter.app_id = Some(
                    slipway_store::app_by_id_or_name(s.store.as_ref(), &value)
                        .await?
                        .id,
                )
            }
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

#[utoipa::path(operation_id = "events_get", get, path = "/events/{id}", tag = "events", params(crate::api::spec::IdPath), responses((status = 200, body = Event), crate::api::spec::ReadErrors))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Event>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiErr::new(ErrorCode::NotFound, format!("event {id} not found")))?;
    Ok(Json(s.store.get_event(id).await?))
}
