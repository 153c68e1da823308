//! Per-route request metrics in Prometheus text format: requests by status class and a latency
//! histogram (time to the response head). Atomics only on the request path; one short read
//! lock to find a route's counters.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Stats {
    label: String,
    status: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    /// Route id (nil: requests no route matched) → counters labelled `domain/path`.
    routes: RwLock<HashMap<uuid::Uuid, Arc<Stats>>>,
}

impl Metrics {
    pub fn record(&self, route: Option<&slipway_types::HttpRoute>, status: u16, took: Duration) {
        let id = route.map_or(uuid::Uuid::nil(), |r| r.id);
        let stats = self.routes.read().unwrap().get(&id).cloned();
        let stats = match stats {
            Some(s) => s,
            None => self
                .routes
                .write()
                .unwrap()
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(Stats {
                        label: route
                            .map_or("unmatched".into(), |r| format!("{}{}", r.domain, r.path)),
                        ..Default::default()
                    })
                })
                .clone(),
        };
        let class = (status / 100).clamp(1, 5) as usize - 1;
        stats.status[class].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            stats.buckets[i].fetch_add(1, Relaxed);
        }
        stats.count.fetch_add(1, Relaxed);
        stats.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let routes = self.routes.read().unwrap();
        let mut names: Vec<&Arc<Stats>> = routes.values().collect();
        names.sort_by(|a, b| a.label.cmp(&b.label));
        let mut out = String::new();
        out.push_str("# HELP slipway_router_requests_total Requests by route and status class.\n");
        out.push_str("# TYPE slipway_router_requests_total counter\n");
        for n in &names {
            for (i, c) in n.status.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "slipway_router_requests_total{{route=\"{}\",status=\"{}xx\"}} {}",
                    esc(&n.label),
                    i + 1,
                    c.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP slipway_router_request_duration_seconds Time to the response head.\n");
        out.push_str("# TYPE slipway_router_request_duration_seconds histogram\n");
        for n in &names {
            let s = *n;
            let mut cum = 0;
            for (b, c) in BUCKETS.iter().zip(&s.buckets) {
                cum += c.load(Relaxed);
                let _ = writeln!(
                    out,
                    "slipway_router_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cum}",
                    esc(&n.label)
                );
            }
            let count = s.count.load(Relaxed);
            let _ = writeln!(
                out,
                "slipway_router_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
                esc(&n.label)
            );
            let _ = writeln!(
                out,
                "slipway_router_request_duration_seconds_sum{{route=\"{}\"}} {}",
                esc(&n.label),
                s.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "slipway_router_request_duration_seconds_count{{route=\"{}\"}} {count}",
                esc(&n.label)
            );
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
