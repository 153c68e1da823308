//! The API's request metrics: requests by method, route template and status, and the time to
//! the response head by route. Route templates (`/apps/{app}`), not paths, so the label set is
//! bounded; requests no route matched share `unmatched`.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use slipway_metrics::{Counters, Histograms, LATENCY_BUCKETS};
use std::time::Instant;

pub static REQUESTS: Counters = Counters::new(
    "slipway_controller_requests_total",
    "API requests by method, route template and status code.",
    &["method", "route", "status"],
);

pub static DURATION: Histograms = Histograms::new(
    "slipway_controller_request_duration_seconds",
    "Time from an API request to its response head, by method and route template.",
    &["method", "route"],
    LATENCY_BUCKETS,
);

/// Appends the API's families to `out` (the process's `/metrics`).
pub fn render(out: &mut String) {
    REQUESTS.render(out);
    DURATION.render(out);
}

pub(crate) async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    REQUESTS.inc(&[&method, &route, status.as_str()]);
    DURATION.observe(&[&method, &route], started.elapsed());
    resp
}
