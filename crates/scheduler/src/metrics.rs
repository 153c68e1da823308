//! The scheduler's counters (docs/metrics.md): reconcile rounds, placements, restarts, lost
//! hosts. Hooks: the end of `round` and `spawn_start` (`lib.rs`), where a restart is scheduled
//! and where a host is lost (`state.rs`). Jobs by state and hosts are read when scraped
//! (`crates/server/src/metrics.rs`), from [`crate::Scheduler::jobs`] and
//! [`crate::Scheduler::hosts`].

use slipway_metrics::{Counters, Histograms, LATENCY_BUCKETS};
use std::time::Instant;

pub static ROUND_DURATION: Histograms = Histograms::new(
    "slipway_scheduler_reconcile_duration_seconds",
    "Time of one reconcile round (read formations, plan, act).",
    &[],
    LATENCY_BUCKETS,
);

pub static PLACEMENTS: Counters = Counters::new(
    "slipway_scheduler_placements_total",
    "Jobs placed on a host (starts asked for: formation jobs and one-off runs).",
    &[],
);

pub static RESTARTS: Counters = Counters::new(
    "slipway_scheduler_restarts_total",
    "Formation jobs that exited on their own and were scheduled to restart.",
    &[],
);

pub static LOST_HOSTS: Counters = Counters::new(
    "slipway_scheduler_lost_hosts_total",
    "Hosts lost (heartbeats failed or registration gone); their jobs were replaced.",
    &[],
);

/// Hook at the end of a round.
pub(crate) fn round_done(started: Instant, _stats: &crate::RoundStats) {
    ROUND_DURATION.observe(&[], started.elapsed());
}

/// Appends the counters' families to `out`.
pub fn render(out: &mut String) {
    ROUND_DURATION.render(out);
    PLACEMENTS.render(out);
    RESTARTS.render(out);
    LOST_HOSTS.render(out);
}
