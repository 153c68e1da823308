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

/// At a controller's start: publishes the verifier of the cluster's token (settled in the
/// store, the same for every controller) in etcd.
pub async fn publish(config: &Config) {
    let (Some(etcd), Some(token)) = (&config.etcd, config.cluster_token.as_deref()) else {
        return;
    };
    let put = slipway_etcd::PutRequest {
        key: CHECK_KEY.into(),
        value: verifier(token).into_bytes(),
        lease: 0,
        prev_kv: false,
    };
    if let Err(e) = etcd.put(&put).await {
        tracing::warn!(
            "cannot publish the cluster token's verifier in etcd (hosts joining cannot check their token until a controller does): {e}"
        );
    }
}

/// At a host's start with `--etcd`: its token must be the cluster's.
pub async fn check_token(config: &Config) -> Result<()> {
    let Some(etcd) = &config.etcd else {
        return Ok(());
    };
    let token = config.cluster_token.as_deref().unwrap_or_default();
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

    #[test]
    fn the_verifier_is_fixed_per_token_and_is_not_the_token() {
        let v = verifier("abc");
        assert_eq!(v, verifier("abc"));
        assert_ne!(v, verifier("abd"));
        assert_eq!(v.len(), 64);
        assert!(!v.contains("abc"));
    }
}
