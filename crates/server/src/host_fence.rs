//! Fencing of a partitioned host: a host agent cut off from etcd for longer than its lease
//! stops its jobs, so that it does not go on serving (stale data, leader locks its jobs hold)
//! after the scheduler replaced them elsewhere.
//!
//! Timeline, with the host's registration TTL of 10 s ([`slipway_discovery::DEFAULT_TTL`]):
//! its last heartbeat at T; its lease lapses at T + 10 s, when etcd drops its registration
//! (and the discovery bridge its jobs'), the routers stop sending to it and the scheduler
//! replaces its jobs on other hosts (up a second or two later). At T + 10 s + `--fence-grace`
//! (default 5 s: etcd's own expiry may lag by up to half a second, and the replacements get a
//! few seconds to come up first), the host stops its jobs (SIGTERM, like any stop).
//!
//! Cut off from etcd is not the same as etcd down: when etcd lost its quorum for everyone,
//! no scheduler can replace anything, and the cluster's running jobs must keep serving. So
//! the host fences only when **no etcd member answers at all** (a member that answers "no
//! leader" means the coordination is lost for the whole cluster, or that the host's link to
//! a majority is: the second case is not fenced, see docs/scheduler.md). Without `--etcd`
//! (one discovery process) nothing is fenced: there is no telling a partition from a
//! discovery restart.
//!
//! When the link comes back, the registration's heartbeat registers the host again (a new
//! registration: the scheduler follows it anew) and the host reports its stopped jobs as
//! finished: nothing it ran before comes back, and no job runs twice.

use slipway_discovery::Registration;
use slipway_host::HostApi;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the lease is looked at.
const CHECK: Duration = Duration::from_secs(1);

/// What one look decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Nothing,
    /// Stop every job now.
    Fence,
    /// The lease is renewed after a fence: the host is back.
    Rejoined,
}

/// The fencing decision, pure (fed the time and what was observed).
#[derive(Debug)]
pub(crate) struct FenceClock {
    grace: Duration,
    /// Since when the lease has lapsed with no etcd member answering.
    cut_since: Option<Instant>,
    fenced: bool,
}

impl FenceClock {
    pub(crate) fn new(grace: Duration) -> FenceClock {
        FenceClock {
            grace,
            cut_since: None,
            fenced: false,
        }
    }

    /// `lease_ok`: the registration is within its lease; `etcd_answers`: some etcd member
    /// answered (asked only when the lease lapsed).
    pub(crate) fn step(&mut self, now: Instant, lease_ok: bool, etcd_answers: bool) -> Step {
        if lease_ok {
            self.cut_since = None;
            return match std::mem::take(&mut self.fenced) {
                true => Step::Rejoined,
                false => Step::Nothing,
            };
        }
        if etcd_answers {
            // The coordination is down for everyone: nobody replaced these jobs.
            self.cut_since = None;
            return Step::Nothing;
        }
        let since = *self.cut_since.get_or_insert(now);
        if !self.fenced && now.duration_since(since) >= self.grace {
            self.fenced = true;
            return Step::Fence;
        }
        Step::Nothing
    }
}

/// Holds the host's registration for as long as the process runs and, with `etcd` and a
/// grace (not zero), fences the host when it is cut off (module doc).
pub fn hold(
    reg: Registration,
    api: Arc<dyn HostApi>,
    etcd: Option<slipway_etcd::Client>,
    grace: Duration,
) {
    tokio::spawn(async move {
        let Some(etcd) = etcd.filter(|_| !grace.is_zero()) else {
            let _reg = reg;
            return std::future::pending::<()>().await;
        };
        let mut clock = FenceClock::new(grace);
        loop {
            tokio::time::sleep(CHECK).await;
            let lease_ok = tokio::time::Instant::now() < reg.lease_deadline(Duration::ZERO);
            let etcd_answers = !lease_ok && etcd_answers(&etcd).await;
            match clock.step(Instant::now(), lease_ok, etcd_answers) {
                Step::Nothing => {}
                Step::Fence => fence(&*api, grace).await,
                Step::Rejoined => tracing::warn!(
                    "fencing: etcd reached again and the host registered anew; the jobs \
                     stopped while it was cut off stay stopped (the scheduler replaced them)"
                ),
            }
        }
    });
}

/// Whether any etcd member answers its status call (healthy or not).
async fn etcd_answers(etcd: &slipway_etcd::Client) -> bool {
    let (members, _) = crate::ops::etcd_members(etcd).await;
    members.iter().any(|m| m.version.is_some())
}

/// Stops every job the host runs.
async fn fence(api: &dyn HostApi, grace: Duration) {
    let jobs = match api.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!("fencing: cannot list the host's jobs: {e}");
            return;
        }
    };
    let live: Vec<_> = jobs
        .into_iter()
        .filter(|j| !j.status.is_terminal())
        .collect();
    tracing::warn!(
        jobs = live.len(),
        "fencing: cut off from etcd (no member answers) for {grace:?} past the host's lease: \
         the scheduler has replaced its jobs elsewhere; stopping them here"
    );
    for j in live {
        if let Err(e) = api.stop_job(&j.job.id).await {
            tracing::warn!(job = %j.job.id, "fencing: stop failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_cut_off_past_its_lease_fences_after_the_grace_and_rejoins() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = FenceClock::new(s(5));
        assert_eq!(c.step(t0, true, false), Step::Nothing);
        // The lease lapsed, no member answers: the grace runs from now.
        assert_eq!(c.step(t0 + s(10), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(14), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(15), false, false), Step::Fence);
        // Once only.
        assert_eq!(c.step(t0 + s(16), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(30), false, true), Step::Nothing);
        // The heartbeat got through: back.
        assert_eq!(c.step(t0 + s(31), true, false), Step::Rejoined);
        assert_eq!(c.step(t0 + s(32), true, false), Step::Nothing);
    }

    #[test]
    fn etcd_down_for_everyone_fences_nothing() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = FenceClock::new(s(5));
        // Members answer (no quorum): never fenced, however long.
        for i in 10..100 {
            assert_eq!(c.step(t0 + s(i), false, true), Step::Nothing);
        }
        // A member answering resets the count: a short cut after it waits a whole grace.
        assert_eq!(c.step(t0 + s(100), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(102), false, true), Step::Nothing);
        assert_eq!(c.step(t0 + s(103), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(107), false, false), Step::Nothing);
        assert_eq!(c.step(t0 + s(108), false, false), Step::Fence);
    }
}
