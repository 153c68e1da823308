//! App leases: a named lock on one app that every controller on the database sees, held for a
//! time and renewed by its holder (the git receiver's push lock across controllers). A holder
//! that dies loses it when it expires; a holder whose clock runs ahead shortens others' waits
//! only by the skew.

use super::SqlStore;
use super::claims::now_ms;
use crate::Result;
use slipway_types::Id;
use std::time::Duration;

impl SqlStore {
    pub async fn acquire_app_lease(
        &self,
        app_id: Id,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // One statement: the insert, or the update of a lease that is this holder's or has
        // expired; a live lease of another holder updates nothing (0 rows).
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO app_leases (app_id, name, holder, expires) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, name) DO UPDATE SET holder = excluded.holder, \
             expires = excluded.expires \
             WHERE app_leases.holder = excluded.holder OR app_leases.expires < $5",
        )
        .bind(app_id.to_string())
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_app_lease(&self, app_id: Id, name: &str, holder: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM app_leases WHERE app_id = $1 AND name = $2 AND holder = $3")
            .bind(app_id.to_string())
            .bind(name)
            .bind(holder)
            .execute(&mut **tx)
            .await?;
        self.commit(tx).await
    }
}
