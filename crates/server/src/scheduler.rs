//! The scheduler role: converges formations into jobs on the hosts it follows (level-triggered,
//! `slipway_scheduler`), and the deployment executor that writes formations for deployments.
//!
//! Needs: the controller's store (it is the only writer of job rows there). Gives: the
//! scheduler handle the controller (`run`, `kill`, attach), the host role (`add_host`), the
//! builder (build jobs) and housekeeping use; its traffic gate is set by `run` from the router
//! or discovery role.

use slipway_store::Store;
use std::sync::Arc;

pub fn start(store: Arc<dyn Store>) -> slipway_scheduler::Scheduler {
    let scheduler = slipway_scheduler::Scheduler::new(store, Default::default());
    tokio::spawn(scheduler.clone().run());
    scheduler
}

/// The deployment executor: runs pending deployments (a deploy of an app with nothing running
/// completes at once, so this runs with or without hosts).
pub fn start_deployer(store: Arc<dyn Store>) {
    let deployer = slipway_deploy::Deployer::new(store, Default::default());
    tokio::spawn(deployer.run());
}
