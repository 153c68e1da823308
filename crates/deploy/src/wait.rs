//! Deploy and wait: what a push does once it has made a release. A `git push` (its
//! `pre-receive` hook) and an image push (its manifest PUT) both answer only once the release
//! runs or has failed to, so both call [`deploy_and_wait`].
//!
//! The deployment itself is the [`Deployer`](crate::Deployer)'s: it keeps the app's process
//! counts. What it cannot do is start an app that ran nothing before, so a first deploy (see
//! [`is_first_deploy`]) then scales the release to its [`initial_formation`] (Flynn: `web=1`) and
//! waits for those jobs too. An image's generated `app` type is not `web`: it waits for an
//! explicit `slipway scale app=N`, as Flynn's `docker push` did.

use crate::executor::{reason, release_jobs, up_or_failed};
use slipway_store::{Store, StoreError};
use slipway_types::{Deployment, DeploymentStatus, Formation, FormationUpdate, Id, Release};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long past its own timeout a deployment may take before a push stops waiting (the
/// executor's restore of the old formation happens in that time).
const GRACE: Duration = Duration::from_secs(30);
/// How often the deployment and job rows are re-read when no store event wakes us.
const POLL: Duration = Duration::from_millis(200);

/// Why a deploy did not bring the release up; every message is for the pushing user.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No deployment was created (another one is unfinished, or the store failed): nothing
    /// changed.
    #[error("cannot start the deployment: {0}")]
    Start(StoreError),
    #[error("cannot read the deployment's progress: {0}")]
    Read(StoreError),
    /// The executor failed it and put the old formation back.
    #[error("deployment failed: {reason}; the previous release keeps serving")]
    Failed { deployment: Id, reason: String },
    #[error("deployment {deployment} is still {status} after {secs}s (see `slipway deployment`)")]
    Unfinished {
        deployment: Id,
        status: String,
        secs: u64,
    },
    #[error("cannot scale {ptype} to {count}: {source}")]
    Scale {
        ptype: String,
        count: u32,
        source: StoreError,
    },
    /// A first deploy whose initial jobs did not come up; the release stays current at 0, so
    /// the next push is again a first deploy.
    #[error(
        "Initial {ptype} job failed to start: {reason}. The release is kept with {ptype}=0: fix \
         the {ptype} process and push again"
    )]
    Initial { ptype: String, reason: String },
}

/// A deployment that finished.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub deployment: Deployment,
    /// What the release runs now: the deployment's counts, plus the initial formation of a
    /// first deploy.
    pub processes: BTreeMap<String, u32>,
}

/// Nothing ran before: no previous release, no formation of it, or one of all zeros (also what
/// a failed first deploy leaves). Such a deploy would start nothing on its own.
pub fn is_first_deploy(old: Option<&Formation>) -> bool {
    old.is_none_or(|f| f.processes.values().all(|n| *n == 0))
}

/// What a first deploy of `release` scales to: `web=1` when it has a `web` type (Flynn's
/// receiver), nothing otherwise (a worker-only app, or an image's `app` type).
pub fn initial_formation(release: &Release) -> BTreeMap<String, u32> {
    let mut f = BTreeMap::new();
    if release.processes.contains_key("web") {
        f.insert("web".to_string(), 1);
    }
    f
}

/// A deployment created and not yet waited for.
pub struct Started {
    store: Arc<dyn Store>,
    release: Release,
    deployment: Deployment,
    /// Scaled to once the deployment is complete (a first deploy), else empty.
    initial: BTreeMap<String, u32>,
}

/// Creates the deployment of `release` (the executor picks it up) and works out whether it is a
/// first deploy. Split from [`Started::wait`] for callers that act once the deployment exists
/// (the registry moves the app's routes only then: a refused deployment changes nothing).
pub async fn start(store: &Arc<dyn Store>, release: &Release) -> Result<Started, DeployError> {
    let deployment = store
        .create_deployment(release.app_id, release.id)
        .await
        .map_err(DeployError::Start)?;
    let old = match deployment.old_release_id {
        Some(r) => store.get_formation(release.app_id, r).await.ok(),
        None => None,
    };
    let initial = if is_first_deploy(old.as_ref()) {
        initial_formation(release)
    } else {
        BTreeMap::new()
    };
    Ok(Started {
        store: store.clone(),
        release: release.clone(),
        deployment,
        initial,
    })
}

/// Deploys `release` and waits until it runs: see [`start`] and [`Started::wait`].
pub async fn deploy_and_wait(
    store: &Arc<dyn Store>,
    release: &Release,
    say: impl Fn(String),
) -> Result<Deployed, DeployError> {
    start(store, release).await?.wait(say).await
}

impl Started {
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Waits for the deployment's outcome, then, on a first deploy, scales the release to its
    /// initial formation and waits for those jobs to be up. `say` prints a progress line.
    pub async fn wait(self, say: impl Fn(String)) -> Result<Deployed, DeployError> {
        let deployment = self.outcome().await?;
        let mut processes = deployment.processes.clone();
        if self.initial.is_empty() {
            return Ok(Deployed {
                deployment,
                processes,
            });
        }
        let counts: Vec<String> = self
            .initial
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        say(format!(
            "=====> Scaling initial release to {}",
            counts.join(" ")
        ));
        self.scale(&self.initial).await?;
        let timeout = Duration::from_secs(u64::from(deployment.deploy_timeout.max(1)));
        let deadline = Instant::now() + timeout;
        for (ptype, n) in &self.initial {
            if let Err(reason) = self.wait_up(ptype, *n, deadline, timeout).await {
                // The release stays current at 0 (Flynn's way): the next push that starts is
                // again a first deploy and scales up.
                let zero = self.initial.keys().map(|t| (t.clone(), 0)).collect();
                let _ = self.scale(&zero).await;
                return Err(DeployError::Initial {
                    ptype: ptype.clone(),
                    reason,
                });
            }
            say(format!("=====> Initial {ptype} job started"));
        }
        processes.extend(self.initial.clone());
        Ok(Deployed {
            deployment,
            processes,
        })
    }

    /// The deployment once it is complete; its failure as an error.
    async fn outcome(&self) -> Result<Deployment, DeployError> {
        let grace = Duration::from_secs(u64::from(self.deployment.deploy_timeout)) + GRACE;
        let deadline = Instant::now() + grace;
        let mut notifier = self.store.event_notifier();
        loop {
            let d = self
                .store
                .get_deployment(self.deployment.id)
                .await
                .map_err(DeployError::Read)?;
            match d.status {
                DeploymentStatus::Complete => return Ok(d),
                DeploymentStatus::Failed => {
                    return Err(DeployError::Failed {
                        deployment: d.id,
                        reason: d.error.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                _ if Instant::now() > deadline => {
                    return Err(DeployError::Unfinished {
                        deployment: d.id,
                        status: d.status.as_str().to_string(),
                        secs: grace.as_secs(),
                    });
                }
                _ => {
                    let _ = tokio::time::timeout(POLL, notifier.changed()).await;
                }
            }
        }
    }

    async fn scale(&self, processes: &BTreeMap<String, u32>) -> Result<(), DeployError> {
        let update = FormationUpdate {
            processes: processes.clone(),
            ..Default::default()
        };
        self.store
            .put_formation(self.release.app_id, self.release.id, &update)
            .await
            .map_err(|source| {
                let (ptype, count) = processes
                    .iter()
                    .next()
                    .map(|(t, n)| (t.clone(), *n))
                    .unwrap_or_default();
                DeployError::Scale {
                    ptype,
                    count,
                    source,
                }
            })?;
        Ok(())
    }

    /// Waits for `n` jobs of `ptype` to be up; the reason they are not after
    /// [`crate::FAILURE_THRESHOLD`] failed jobs or the deadline.
    async fn wait_up(
        &self,
        ptype: &str,
        n: u32,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut notifier = self.store.event_notifier();
        loop {
            let jobs = release_jobs(&*self.store, self.release.app_id, self.release.id, ptype)
                .await
                .map_err(|e| format!("cannot read jobs: {e}"))?;
            match up_or_failed(&jobs, n) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(last) => {
                    return Err(match (&last.host_error, last.exit_status) {
                        (Some(_), _) => reason(last),
                        (None, Some(c)) => format!("the {ptype} process exited with status {c}"),
                        (None, None) => format!("the {ptype} job went down"),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {ptype} job was up after {}s (is the {ptype} process listening on $PORT?)",
                    timeout.as_secs()
                ));
            }
            let _ = tokio::time::timeout(POLL, notifier.changed()).await;
        }
    }
}

#[cfg(test)]
mod tests;
