//! Deployment claims: one deployer runs a deployment, the others leave it alone until its
//! claim expires (its deployer died or lost the database), then one of them takes it over.

use super::SqlStore;
use crate::Result;
use slipway_types::Id;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (the deployers' clocks are assumed roughly in step: a skew eats
/// into the claim's length, so claims last many renewal periods).
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SqlStore {
    pub async fn claim_deployment(&self, id: Id, owner: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // One statement: the row lock (PostgreSQL) or the single writer (SQLite) makes the
        // check and the write one step, so two deployers cannot both win. No event: a claim
        // is the deployers' business, not a change of the deployment.
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE deployments SET claimed_by = $1, claim_expires = $2 \
             WHERE id = $3 AND finished_at IS NULL \
             AND (claimed_by IS NULL OR claimed_by = $1 OR claim_expires < $4)",
        )
        .bind(owner)
        .bind(until)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn deployment_claim(&self, id: Id) -> Result<Option<(String, i64)>> {
        let row: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT claimed_by, claim_expires FROM deployments WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?;
        match row {
            None => Err(super::not_found("deployment", id)),
            Some((Some(owner), Some(until))) => Ok(Some((owner, until))),
            Some(_) => Ok(None),
        }
    }
}
