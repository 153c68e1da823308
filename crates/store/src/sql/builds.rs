//! Builds: one row per push that got as far as building, with its transcript.
//!
//! A build with a release goes when its release goes (`ON DELETE CASCADE`: the push flow's
//! housekeeping trims old slug releases, and their builds' logs with them); a build without one
//! (it failed before a release existed) is kept among the newest [`FAILED_BUILDS_KEPT`] of its
//! app. Deleting the app deletes its builds.

use super::rows::{id, int, opt_id, opt_text, text, time};
use super::{SqlStore, now, one};
use crate::{Result, StoreError};
use slipway_types::{Build, BuildStatus, EventOp, Id, NewBuild, ObjectType, Timestamp};
use sqlx::any::AnyRow;

/// Builds without a release kept per app (older ones are deleted when a build is recorded).
pub const FAILED_BUILDS_KEPT: usize = 10;

const BUILD_COLUMNS: &str =
    "id, app_id, commit_id, status, release_id, error, log_bytes, created_at, finished_at";

fn build_from_row(row: &AnyRow) -> Result<Build> {
    let status = text(row, "status")?;
    Ok(Build {
        id: id(row, "id")?,
        app_id: id(row, "app_id")?,
        commit: text(row, "commit_id")?,
        status: BuildStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown build status {status:?}")))?,
        release_id: opt_id(row, "release_id")?,
        error: opt_text(row, "error")?,
        log_bytes: int(row, "log_bytes")?.max(0) as u64,
        created_at: time(row, "created_at")?,
        finished_at: time(row, "finished_at")?,
    })
}

impl SqlStore {
    pub async fn create_build(&self, app_id: Id, new: &NewBuild) -> Result<Build> {
        new.validate()?;
        let mut tx = self.begin().await?;
        let app = self.get_app_tx(&mut tx, app_id).await?;
        if let Some(release_id) = new.release_id {
            let release = self.release_tx(&mut tx, release_id).await?;
            if release.app_id != app_id {
                return Err(StoreError::NotFound(format!(
                    "release {release_id} not found in app {}",
                    app.name
                )));
            }
        }
        let finished = now();
        let build = Build {
            id: Id::new_v4(),
            app_id,
            commit: new.commit.clone(),
            status: new.status,
            release_id: new.release_id,
            error: new.error.clone(),
            log_bytes: new.log.len() as u64,
            created_at: new.started_at,
            finished_at: Timestamp::parse(&finished).expect("own format"),
        };
        sqlx::query(
            "INSERT INTO builds (id, app_id, commit_id, status, release_id, error, log, log_bytes, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(build.id.to_string())
        .bind(app_id.to_string())
        .bind(build.commit.clone())
        .bind(build.status.as_str())
        .bind(build.release_id.map(|r| r.to_string()))
        .bind(build.error.clone())
        .bind(new.log.clone())
        .bind(build.log_bytes as i64)
        .bind(build.created_at.to_string())
        .bind(finished)
        .execute(&mut **tx)
        .await?;
        // Builds that never made a release: keep the newest few.
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM builds WHERE app_id = $1 AND release_id IS NULL ORDER BY created_at DESC, id DESC",
        )
        .bind(app_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        for old in stale.iter().skip(FAILED_BUILDS_KEPT) {
            sqlx::query("DELETE FROM builds WHERE id = $1")
                .bind(old.clone())
                .execute(&mut **tx)
                .await?;
        }
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Build,
            &build.id.to_string(),
            EventOp::Create,
            &build,
        )
        .await?;
        Ok(build)
    }

    pub async fn get_build(&self, app_id: Id, build_id: Id) -> Result<Build> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1 AND app_id = $2"
        )))
        .bind(build_id.to_string())
        .bind(app_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        build_from_row(&one(row, "build", build_id)?)
    }

    pub async fn get_build_log(&self, app_id: Id, build_id: Id) -> Result<String> {
        let log: Option<String> =
            sqlx::query_scalar("SELECT log FROM builds WHERE id = $1 AND app_id = $2")
                .bind(build_id.to_string())
                .bind(app_id.to_string())
                .fetch_optional(self.pool())
                .await?;
        one(log, "build", build_id)
    }

    pub async fn list_builds(&self, app_id: Id) -> Result<Vec<Build>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE app_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(app_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(build_from_row).collect()
    }
}
