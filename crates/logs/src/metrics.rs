//! The aggregator's metrics (docs/metrics.md): lines stored (a counter: its rate is lines in
//! per second), live followers, dropped followers, and bytes of history on disk.

use crate::Aggregator;
use slipway_metrics::{Counters, family};

pub static LINES: Counters = Counters::new(
    "slipway_logs_lines_total",
    "Log lines stored (job output and platform lines).",
    &[],
);

/// Appends the aggregator's families to `out`.
pub fn render(agg: &Aggregator, out: &mut String) {
    LINES.render(out);
    family(
        out,
        "slipway_logs_followers",
        "gauge",
        "Live followers (log -f) right now.",
        [(vec![], agg.followers() as f64)],
    );
    family(
        out,
        "slipway_logs_followers_dropped_total",
        "counter",
        "Followers dropped for not reading.",
        [(vec![], crate::http::followers_dropped() as f64)],
    );
    let bytes: u64 = agg.app_ids().iter().map(|a| agg.disk_bytes(a)).sum();
    family(
        out,
        "slipway_logs_disk_bytes",
        "gauge",
        "Bytes of log history on disk, all apps.",
        [(vec![], bytes as f64)],
    );
}
