//! Joining a machine to a cluster: `slipway cluster token` (the token, to API-key holders:
//! `GET /cluster/token`) and a host that checks the token it was given before it registers.
//!
//! etcd has no notion of the token (anyone who reaches etcd could register anything), so the
//! controllers publish a **verifier** of it in etcd: SHA-256 of a fixed prefix and the token
//! ([`CHECK_KEY`]; the token itself never goes to etcd). A host started with `--etcd` compares
//! its token's verifier with it and refuses to start, saying what to do, when they differ. A
//! host that skipped the check (an old binary, a hand-written registration) is still refused
//! by the schedulers: every call to a host API carries the cluster's token, and a host with
//! another one answers 401, so it is never followed and gets no job.

use crate::Config;
use anyhow::{Result, bail};
use axum::Json;
use axum::extract::State;
use std::sync::Arc;

/// The verifier's key in etcd (outside discovery's prefix).
pub const CHECK_KEY: &str = "/slipway/cluster-token-check";

/// The verifier of `token`: hex SHA-256 of `slipway-cluster-token:` and the token.
pub fn verifier(token: &str) -> String {
    slipway_blobstore::Digest::of_bytes(format!("slipway-cluster-token:{token}").as_bytes())
        .hex()
        .to_string()
}

/// How often a controller checks that the verifier is still in etcd.
const REPUBLISH: std::time::Duration = std::time::Duration::from_secs(30);

/// At a controller's start: publishes the verifier of the cluster's token (settled in the
/// store, the same for every controller) in etcd, and publishes it again whenever it is gone
/// (etcd's data lost or restored from an older backup, the key deleted): until then, hosts
/// joining would skip the check.
pub async fn publish(config: &Config) {
    let (Some(etcd), Some(token)) = (&config.etcd, config.cluster_token.as_deref()) else {
        return;
    };
    let value = verifier(token).into_bytes();
    if let Err(e) = put(etcd, &value).await {
        tracing::warn!(
            "cannot publish the cluster token's verifier in etcd (hosts joining cannot check their token until a controller does): {e}"
        );
    }
    tokio::spawn(keep_published(etcd.clone(), value, REPUBLISH));
}

async fn put(etcd: &slipway_etcd::Client, value: &[u8]) -> Result<()> {
    let put = slipway_etcd::PutRequest {
        key: CHECK_KEY.into(),
        value: value.to_vec(),
        lease: 0,
        prev_kv: false,
    };
    etcd.put(&put).await?;
    Ok(())
}

/// Every `every`: the verifier back in etcd if it is missing or another (etcd unreachable:
/// tried again next time).
async fn keep_published(etcd: slipway_etcd::Client, value: Vec<u8>, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        match etcd.get(CHECK_KEY).await {
            Ok(Some(kv)) if kv.value == value => {}
            Ok(_) => match put(&etcd, &value).await {
                Ok(()) => tracing::info!(
                    "the cluster token's verifier was missing from etcd: published again"
                ),
                Err(e) => tracing::warn!("cannot publish the cluster token's verifier: {e}"),
            },
            Err(_) => {}
        }
    }
}

/// At a host's start with `--etcd`: its token must be the cluster's.
pub async fn check_token(config: &Config) -> Result<()> {
    let Some(etcd) = &config.etcd else {
        return Ok(());
    };
    let Some(token) = config.cluster_token.as_deref().filter(|t| !t.is_empty()) else {
        bail!(
            "no cluster token: a host that joins a cluster needs the one `slipway cluster token` \
             prints (SLIPWAY_CLUSTER_TOKEN, --cluster-token-file or `slipway host join \
             --token-file`)"
        );
    };
    let published = match etcd.get(CHECK_KEY).await {
        Ok(kv) => kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        Err(e) => bail!("cannot read the cluster token's verifier from etcd: {e}"),
    };
    match published {
        None => {
            tracing::warn!(
                "no controller has published the cluster token's verifier in etcd yet: the \
                 host's token is not checked now (schedulers still refuse a host with another one)"
            );
            Ok(())
        }
        Some(v) if v.trim() == verifier(token) => Ok(()),
        Some(_) => bail!(
            "this host's cluster token is not the cluster's, so the cluster refuses it: give \
             the one `slipway cluster token` prints (SLIPWAY_CLUSTER_TOKEN, \
             --cluster-token-file or `slipway host join --token-file`)"
        ),
    }
}

/// `GET /cluster/token` (behind the API key): the cluster token, for `slipway cluster token`.
pub fn router(config: &Config) -> axum::Router {
    let token: Arc<str> = config.cluster_token.clone().unwrap_or_default().into();
    axum::Router::new()
        .route("/cluster/token", axum::routing::get(token_answer))
        .with_state(token)
}

async fn token_answer(State(token): State<Arc<str>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "token": &*token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the verifier was published at a controller's start only, so once it was
    /// gone from etcd (data lost, key deleted) joining hosts skipped the check for good.
    #[tokio::test]
    async fn a_verifier_gone_from_etcd_is_published_again() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let value = verifier("tok").into_bytes();
        put(&client, &value).await.unwrap();
        let every = std::time::Duration::from_millis(100);
        tokio::spawn(keep_published(client.clone(), value.clone(), every));
        let delete = slipway_etcd::DeleteRangeRequest {
            key: CHECK_KEY.into(),
            ..Default::default()
        };
        client.delete_range(&delete).await.unwrap();
        let deadline = std::time::Instant::now() + every * 30;
        loop {
            if let Some(kv) = client.get(CHECK_KEY).await.unwrap() {
                assert_eq!(kv.value, value);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never published again"
            );
            tokio::time::sleep(every / 2).await;
        }
    }

    #[test]
    fn the_verifier_is_fixed_per_token_and_is_not_the_token() {
        let v = verifier("abc");
        assert_eq!(v, verifier("abc"));
        assert_ne!(v, verifier("abd"));
        assert_eq!(v.len(), 64);
        assert!(!v.contains("abc"));
    }
}
