//! Build metrics (docs/metrics.md): builds by result and their duration.

use slipway_metrics::{Counters, Histograms, SLOW_BUCKETS};
use std::time::Instant;

pub static BUILDS: Counters = Counters::new(
    "slipway_builds_total",
    "Builds (git push) by result: succeeded, failed (the app's build failed), error (the build could not run).",
    &["result"],
);

pub static DURATION: Histograms = Histograms::new(
    "slipway_build_duration_seconds",
    "Time of a build, from its job's start to the slug stored, by result.",
    &["result"],
    SLOW_BUCKETS,
);

pub(crate) fn build_done<T>(started: Instant, built: &Result<T, crate::pipeline::BuildError>) {
    let result = match built {
        Ok(_) => "succeeded",
        Err(crate::pipeline::BuildError::Failed(_)) => "failed",
        Err(crate::pipeline::BuildError::Internal(_)) => "error",
    };
    BUILDS.inc(&[result]);
    DURATION.observe(&[result], started.elapsed());
}

/// Appends the build families to `out`.
pub fn render(out: &mut String) {
    BUILDS.render(out);
    DURATION.render(out);
}
