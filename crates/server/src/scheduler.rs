//! The scheduler role: converges formations into jobs on the hosts it follows (level-triggered,
//! `slipway_scheduler`), and the deployment executor that writes formations for deployments.
//!
//! With a discovery (in-process or `--discovery-url`) every scheduler process is a candidate
//! in `slipway-scheduler` (meta: its controller's URL): only the leader acts, fenced by its
//! epoch (docs/scheduler.md), and the deployer runs with it; followers keep following the
//! hosts so that a takeover is quick. Without one it acts alone, as before.
//!
//! Needs: the controller's store (it is the only writer of job rows there). Gives: the
//! scheduler handle the controller (`run`, `kill`, attach), the host role (`add_host`), the
//! builder (build jobs) and housekeeping use; its traffic gate is set by `run` from the router
//! or discovery role.

use crate::Config;
use anyhow::{Context, Result};
use slipway_discovery::{NewInstance, Registry};
use slipway_scheduler::{Election, Scheduler, leader};
use slipway_store::Store;
use std::sync::Arc;

/// The scheduler, not running yet: the host role adds its host first, then [`run`] starts it.
/// The drained hosts are read before its first round ([`crate::drain::book`]); the cluster
/// token's verifier is published for hosts that join ([`crate::join`]).
pub async fn start(config: &Config, store: Arc<dyn Store>) -> Scheduler {
    let scheduler = Scheduler::new(store, Default::default());
    scheduler.set_drain_book(crate::drain::book(config)).await;
    // Hosts joining through etcd check their token against it.
    crate::join::publish(config).await;
    scheduler
}

/// Campaigns (with a registry) and starts the scheduler's rounds and the deployer (with the
/// leader only, when elected). `url`: this process's controller, for the other candidates.
pub async fn run(
    config: &Config,
    store: &Arc<dyn Store>,
    scheduler: &Scheduler,
    registry: Option<Arc<dyn Registry>>,
    url: &str,
) -> Result<()> {
    let Some(registry) = registry else {
        tokio::spawn(scheduler.clone().run());
        start_deployer(store.clone());
        return Ok(());
    };
    let election = campaign(config, registry, leader::SCHEDULER_SERVICE, url).await?;
    let leadership = election.watch();
    scheduler.elect(election);
    tokio::spawn(scheduler.clone().run());
    let store = store.clone();
    tokio::spawn(leader::while_leading(leadership, move |_| {
        slipway_deploy::Deployer::new(store.clone(), Default::default()).run()
    }));
    Ok(())
}

/// Registers this process as a candidate of `service` (meta: its controller's URL).
pub async fn campaign(
    config: &Config,
    registry: Arc<dyn Registry>,
    service: &str,
    url: &str,
) -> Result<Election> {
    let _ = config;
    let random = slipway_types::Id::new_v4().to_string().replace('-', "");
    let id = format!(
        "{}-{}",
        service.trim_start_matches("slipway-"),
        &random[..12]
    );
    let addr = url.trim_start_matches("http://").to_string();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("url".to_string(), url.to_string());
    let new = NewInstance {
        addr,
        proto: Some("tcp".into()),
        meta,
    };
    // On etcd an instance's lease is its registry's (10 s): an election gets a registry of
    // its own with the leaders' shorter one, so a killed leader is replaced sooner.
    let registry = match &config.etcd {
        Some(etcd) => Arc::new(slipway_discovery::EtcdRegistry::new(
            etcd.clone(),
            leader::LEADER_TTL,
        )) as Arc<dyn Registry>,
        None => registry,
    };
    Election::campaign(registry, service, &id, new, leader::LEADER_TTL)
        .await
        .with_context(|| format!("cannot campaign for {service} in discovery"))
}

/// The deployment executor: runs pending deployments (a deploy of an app with nothing running
/// completes at once, so this runs with or without hosts).
pub fn start_deployer(store: Arc<dyn Store>) {
    let deployer = slipway_deploy::Deployer::new(store, Default::default());
    tokio::spawn(deployer.run());
}

/// Refuses changes (any request but GET and HEAD) with 503 while no scheduler can lead
/// ([`Scheduler::coordination_unavailable`]: etcd has no quorum): a formation written now
/// would not be acted on, and the client would wait for nothing. Reads go on, and so does
/// what runs (hosts keep their jobs, routers their last backends); changes are accepted again
/// once a leader is elected, with no operator step.
///
/// Only a request that carries the API key as a Bearer token learns why: anything else goes
/// on to the API's own authentication, as before.
pub async fn refuse_changes_without_leader(
    axum::extract::State((scheduler, key)): axum::extract::State<(Scheduler, Arc<str>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let change = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if change
        && bearer_is(req.headers(), &key)
        && let Some(why) = scheduler.coordination_unavailable()
    {
        return slipway_controller::ApiErr::new(
            slipway_types::ErrorCode::Unavailable,
            format!(
                "changes are refused: no scheduler leads, since the cluster's coordination \
                 (etcd) cannot be reached ({why}). Running jobs keep serving; retry once etcd \
                 has its quorum back (a majority of its members up)"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether `headers` carry `Authorization: Bearer <key>` (compared in constant time).
fn bearer_is(headers: &axum::http::HeaderMap, key: &str) -> bool {
    let Some(presented) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, k)| k.trim().as_bytes())
    else {
        return false;
    };
    presented.len() == key.len()
        && presented
            .iter()
            .zip(key.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::bearer_is;
    use axum::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    /// Only the key's holder learns why changes are refused: others go on to the API's own
    /// authentication.
    #[test]
    fn only_the_api_key_as_a_bearer_token_counts() {
        assert!(bearer_is(&with("Bearer sekrit"), "sekrit"));
        assert!(bearer_is(&with("bearer  sekrit "), "sekrit"));
        assert!(!bearer_is(&with("Bearer sekri"), "sekrit"));
        assert!(!bearer_is(&with("Bearer sekrit2"), "sekrit"));
        assert!(!bearer_is(&with("Basic OnNla3JpdA=="), "sekrit"));
        assert!(!bearer_is(&HeaderMap::new(), "sekrit"));
    }
}
