//! Leader fencing in the store (docs/scheduler.md): `leader_epochs` holds, per singleton role,
//! the newest epoch a leader announced. An announcement only ever raises it; a fenced write
//! checks it in the same transaction as the write, so a leader that was replaced (a newer
//! epoch announced) cannot write after the announcement committed.

use super::SqlStore;
use crate::{Result, StoreError};
use slipway_types::Job;

fn to_db(epoch: u64) -> Result<i64> {
    i64::try_from(epoch)
        .map_err(|_| StoreError::Database(format!("leader epoch {epoch} is out of range")))
}

/// How long a fenced write may sit idle inside its transaction (its statements follow one
/// another at once; only a paused or stuck leader waits between them).
const FENCED_TX_IDLE_LIMIT: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

impl SqlStore {
    /// Raises `role`'s epoch to `epoch` unless it is already as high; returns the stored epoch
    /// afterwards (higher than `epoch`: a newer leader has announced itself).
    pub async fn announce_epoch(&self, role: &str, epoch: u64) -> Result<u64> {
        let e = to_db(epoch)?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO leader_epochs (role, epoch) VALUES ($1, $2) ON CONFLICT (role) DO NOTHING",
        )
        .bind(role.to_string())
        .bind(e)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE leader_epochs SET epoch = $2 WHERE role = $1 AND epoch < $2")
            .bind(role.to_string())
            .bind(e)
            .execute(&mut **tx)
            .await?;
        let now: i64 = sqlx::query_scalar("SELECT epoch FROM leader_epochs WHERE role = $1")
            .bind(role.to_string())
            .fetch_one(&mut **tx)
            .await?;
        self.commit(tx).await?;
        Ok(u64::try_from(now).unwrap_or(0))
    }

    /// [`SqlStore::put_jobs`] only while `role`'s stored epoch is `epoch`; `None` (nothing
    /// written) once another epoch was announced. The check is an `UPDATE` of the epoch row in
    /// the write's own transaction: on PostgreSQL it locks the row, so an announcement waits
    /// for this write to commit, and a write after an announcement sees the new epoch.
    pub async fn put_jobs_fenced(
        &self,
        role: &str,
        epoch: u64,
        jobs: &[Job],
    ) -> Result<Option<Vec<Job>>> {
        let e = to_db(epoch)?;
        let mut tx = self.begin().await?;
        if self.dialect == super::Dialect::Postgres {
            // The row lock taken below is held until commit: a leader paused (SIGSTOP, a VM
            // freeze) between the two would hold it for as long as it is paused, and its
            // successor's `announce_epoch` would wait on it forever. PostgreSQL ends a session
            // left idle inside this transaction, which releases the lock; the paused leader
            // finds its connection gone when it resumes, and is fenced by the new epoch.
            sqlx::query(FENCED_TX_IDLE_LIMIT).execute(&mut **tx).await?;
        }
        let held =
            sqlx::query("UPDATE leader_epochs SET epoch = epoch WHERE role = $1 AND epoch = $2")
                .bind(role.to_string())
                .bind(e)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        if held != 1 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.put_job_tx(&mut tx, job).await?);
        }
        self.commit(tx).await?;
        Ok(Some(out))
    }
}
