//! Cluster-wide secrets (`cluster_secrets`): the API key and the cluster token live in the
//! store, so every controller on one database agrees on them.

use super::SqlStore;
use crate::{Result, StoreError};

/// The name of the API key in `cluster_secrets`.
pub const API_KEY: &str = "api_key";
/// The name of the cluster token (hosts, discovery) in `cluster_secrets`.
pub const CLUSTER_TOKEN: &str = "cluster_token";

impl SqlStore {
    /// The secret `name`, if the store has one.
    pub async fn secret(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cluster_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Stores `value` as the secret `name` unless the store has one, and returns the one it has
    /// then: two controllers starting at once each offer their own, and both read back the
    /// winner's (`INSERT … ON CONFLICT DO NOTHING`, then a read).
    pub async fn secret_or_insert(&self, name: &str, value: &str) -> Result<String> {
        if value.is_empty() {
            return Err(StoreError::Database(format!(
                "refusing to store an empty secret {name}"
            )));
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO cluster_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(super::now())
        .execute(&mut **tx)
        .await?;
        self.commit(tx).await?;
        self.secret(name).await?.ok_or_else(|| {
            StoreError::Database(format!(
                "the secret {name} vanished right after it was stored"
            ))
        })
    }
}
