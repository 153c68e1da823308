//! Per-route request metrics in Prometheus text format: requests by status class and a latency
//! histogram (time to the response head). Atomics only on the request path, in one shard per
//! thread (summed when rendered), so cores don't fight over the counters' cache lines; one
//! short read lock to find a route's counters.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Shards per route: a thread adds to its own (threads beyond this share).
const SHARDS: usize = 16;

#[derive(Default)]
struct Stats {
    label: String,
    shards: [Shard; SHARDS],
}

/// One thread's counters, on their own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    status: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Stats {
    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }
}

/// This thread's shard, handed out round-robin on first use.
fn shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

#[derive(Default)]
pub struct Metrics {
    /// Route id (nil: requests no route matched) → counters labelled `domain/path`.
    routes: RwLock<HashMap<uuid::Uuid, Arc<Stats>>>,
}

impl Metrics {
    pub fn record(&self, route: Option<&slipway_types::HttpRoute>, status: u16, took: Duration) {
        let id = route.map_or(uuid::Uuid::nil(), |r| r.id);
        if let Some(stats) = self.routes.read().unwrap().get(&id) {
            stats.add(status, took);
            return;
        }
        let stats = self
            .routes
            .write()
            .unwrap()
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Stats {
                    label: route.map_or("unmatched".into(), |r| format!("{}{}", r.domain, r.path)),
                    ..Default::default()
                })
            })
            .clone();
        stats.add(status, took);
    }

    pub fn render(&self) -> String {
        let routes = self.routes.read().unwrap();
        let mut names: Vec<&Arc<Stats>> = routes.values().collect();
        names.sort_by(|a, b| a.label.cmp(&b.label));
        let mut out = String::new();
        out.push_str("# HELP slipway_router_requests_total Requests by route and status class.\n");
        out.push_str("# TYPE slipway_router_requests_total counter\n");
        for n in &names {
            for i in 0..5 {
                let _ = writeln!(
                    out,
                    "slipway_router_requests_total{{route=\"{}\",status=\"{}xx\"}} {}",
                    esc(&n.label),
                    i + 1,
                    n.sum(|s| &s.status[i])
                );
            }
        }
        out.push_str("# HELP slipway_router_request_duration_seconds Time to the response head.\n");
        out.push_str("# TYPE slipway_router_request_duration_seconds histogram\n");
        for n in &names {
            let s = *n;
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += s.sum(|sh| &sh.buckets[i]);
                let _ = writeln!(
                    out,
                    "slipway_router_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cum}",
                    esc(&n.label)
                );
            }
            let count = s.sum(|sh| &sh.count);
            let _ = writeln!(
                out,
                "slipway_router_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
                esc(&n.label)
            );
            let _ = writeln!(
                out,
                "slipway_router_request_duration_seconds_sum{{route=\"{}\"}} {}",
                esc(&n.label),
                s.sum(|sh| &sh.sum_us) as f64 / 1e6
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

impl Stats {
    fn add(&self, status: u16, took: Duration) {
        let s = &self.shards[shard()];
        let class = (status / 100).clamp(1, 5) as usize - 1;
        s.status[class].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Relaxed);
        }
        s.count.fetch_add(1, Relaxed);
        s.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }
}
