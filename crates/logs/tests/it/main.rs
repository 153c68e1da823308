//! The aggregator's tests: history and retention on disk, follow, the HTTP API, and ingest
//! from a host agent (`HostApi`). Real-binary cases (runc, `slipway log`) are in
//! `crates/cli/tests/it/logs.rs`.

mod aggregator;
mod api;
mod follow_backlog;
mod ingest;
mod sink;

use slipway_logs::{Aggregator, Config, Retention, Source};
use std::path::Path;

pub fn open(dir: &Path, max_lines: u64) -> Aggregator {
    Aggregator::open(Config {
        dir: dir.to_path_buf(),
        retention: Retention {
            max_lines,
            max_age: None,
        },
    })
    .expect("open the aggregator")
}

pub fn src(app_id: &str, ptype: &str, job: &str) -> Source {
    Source {
        app: "demo".into(),
        app_id: app_id.into(),
        release_id: "r1".into(),
        process_type: ptype.into(),
        job_id: job.into(),
        host_id: "host-1".into(),
    }
}
