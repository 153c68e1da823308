//! The logs role: the log aggregator — every logged job's lines per app under `<data>/logs` (a
//! bounded history that survives restarts), fed by the hosts' jobs; `GET /apps/{app}/log`
//! serves it on the controller's port; apps with a `log_sink=syslog://HOST:PORT` meta get
//! their lines forwarded.
//!
//! Needs: the controller's store (apps, their meta and deletions). The host role feeds it.

use crate::Config;
use anyhow::{Context, Result};
use slipway_store::Store;
use std::sync::Arc;

pub fn start(config: &Config, store: Arc<dyn Store>) -> Result<slipway_logs::Aggregator> {
    let args = &config.args;
    if args.log_lines == 0 {
        anyhow::bail!("--log-lines must be at least 1");
    }
    let dir = config.data_dir.join("logs");
    let logs = slipway_logs::Aggregator::open(slipway_logs::Config {
        dir: dir.clone(),
        retention: slipway_logs::Retention {
            max_lines: args.log_lines,
            max_age: args.log_max_age,
        },
    })
    .with_context(|| format!("cannot open the log history in {}", dir.display()))?;
    slipway_logs::sink::run_sinks(logs.clone(), store.clone());
    slipway_logs::sink::forget_deleted_apps(logs.clone(), store);
    Ok(logs)
}
