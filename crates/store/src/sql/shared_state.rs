//! State the registry and the git receiver share between controllers: which manifests an app's
//! repository received and their media types, its tags, chunked uploads in progress (their
//! chunks are blobs, named here in order), and the digest of each app's last pushed git
//! repository (a tar in the blob store). The content lives in the blob store; these rows only
//! name it, so they stay small. None of this is a model object: no events.
//!
//! Times are unix seconds (BIGINT), compared numerically by the idle-upload clean-up.

use super::SqlStore;
use crate::{Result, StoreError};
use slipway_types::Id;
use sqlx::AssertSqlSafe;
use std::time::{SystemTime, UNIX_EPOCH};

/// Chunks one registry upload may have: a client sending a layer in more pieces than this is
/// refused (Docker sends a layer in one PATCH), so an upload's rows stay bounded.
pub const MAX_UPLOAD_CHUNKS: u64 = 10_000;

/// A chunked registry upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUpload {
    pub id: Id,
    pub app_id: Id,
    /// Bytes received so far.
    pub size: u64,
    /// The chunks' blob digests, in order.
    pub chunks: Vec<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqlStore {
    pub async fn put_registry_manifest(
        &self,
        app_id: Id,
        digest: &str,
        media_type: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO registry_manifests (app_id, digest, media_type, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, digest) DO UPDATE SET media_type = excluded.media_type",
        )
        .bind(app_id.to_string())
        .bind(digest.to_string())
        .bind(media_type.to_string())
        .bind(unix_now())
        .execute(&mut **tx)
        .await
        .map_err(|e| app_missing(e, app_id))?;
        self.commit(tx).await
    }

    pub async fn registry_manifest(&self, app_id: Id, digest: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT media_type FROM registry_manifests WHERE app_id = $1 AND digest = $2",
        )
        .bind(app_id.to_string())
        .bind(digest.to_string())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn set_registry_tag(&self, app_id: Id, tag: &str, digest: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO registry_tags (app_id, tag, digest, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(app_id.to_string())
        .bind(tag.to_string())
        .bind(digest.to_string())
        .bind(unix_now())
        .execute(&mut **tx)
        .await
        .map_err(|e| app_missing(e, app_id))?;
        self.commit(tx).await
    }

    pub async fn registry_tag(&self, app_id: Id, tag: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT digest FROM registry_tags WHERE app_id = $1 AND tag = $2")
                .bind(app_id.to_string())
                .bind(tag.to_string())
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn list_registry_tags(&self, app_id: Id) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT tag FROM registry_tags WHERE app_id = $1 ORDER BY tag")
                .bind(app_id.to_string())
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub async fn create_registry_upload(&self, id: Id, app_id: Id) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO registry_uploads (id, app_id, size, chunks, updated_at) VALUES ($1, $2, 0, 0, $3)",
        )
        .bind(id.to_string())
        .bind(app_id.to_string())
        .bind(unix_now())
        .execute(&mut **tx)
        .await
        .map_err(|e| app_missing(e, app_id))?;
        self.commit(tx).await
    }

    pub async fn registry_upload(&self, id: Id) -> Result<Option<RegistryUpload>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT app_id, size, updated_at FROM registry_uploads WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?;
        let Some((app_id, size, updated_at)) = row else {
            return Ok(None);
        };
        let chunks: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM registry_upload_chunks WHERE upload_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(Some(RegistryUpload {
            id,
            app_id: app_id
                .parse()
                .map_err(|_| StoreError::Database(format!("bad app id {app_id:?}")))?,
            size: size.max(0) as u64,
            chunks,
            updated_at,
        }))
    }

    /// Appends a chunk if the upload still has `expected_size` bytes; `Conflict` if another
    /// request appended meanwhile or the upload has [`MAX_UPLOAD_CHUNKS`], `NotFound` if it
    /// is gone. Returns the new size.
    pub async fn append_registry_upload(
        &self,
        id: Id,
        expected_size: u64,
        digest: &str,
        size: u64,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE registry_uploads SET size = size + $3, chunks = chunks + 1, updated_at = $4 \
             WHERE id = $1 AND size = $2 AND chunks < $5 RETURNING size, chunks",
        )
        .bind(id.to_string())
        .bind(expected_size as i64)
        .bind(size as i64)
        .bind(unix_now())
        .bind(MAX_UPLOAD_CHUNKS as i64)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((new_size, chunks)) = row else {
            let exists: Option<(i64, i64)> =
                sqlx::query_as("SELECT size, chunks FROM registry_uploads WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            return Err(match exists {
                None => StoreError::NotFound(format!("upload {id} not found")),
                Some((_, n)) if n as u64 >= MAX_UPLOAD_CHUNKS => StoreError::Conflict(format!(
                    "upload {id} has {n} chunks, the most one upload may have: send larger chunks"
                )),
                Some((have, _)) => StoreError::Conflict(format!(
                    "upload {id} has {have} bytes, not {expected_size}: another request appended to it"
                )),
            });
        };
        sqlx::query(
            "INSERT INTO registry_upload_chunks (upload_id, seq, digest, size) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(chunks - 1)
        .bind(digest.to_string())
        .bind(size as i64)
        .execute(&mut **tx)
        .await?;
        self.commit(tx).await?;
        Ok(new_size.max(0) as u64)
    }

    /// Whether the upload existed.
    pub async fn delete_registry_upload(&self, id: Id) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Chunks first: not every SQLite connection is guaranteed to cascade.
        sqlx::query("DELETE FROM registry_upload_chunks WHERE upload_id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        let n = sqlx::query("DELETE FROM registry_uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(n > 0)
    }

    /// Deletes uploads unchanged since `before` (unix seconds) or earlier; returns how many.
    pub async fn delete_idle_registry_uploads(&self, before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM registry_upload_chunks WHERE upload_id IN \
             (SELECT id FROM registry_uploads WHERE updated_at <= $1)",
        )
        .bind(before)
        .execute(&mut **tx)
        .await?;
        let n = sqlx::query("DELETE FROM registry_uploads WHERE updated_at <= $1")
            .bind(before)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(n)
    }

    pub async fn git_repo_digest(&self, app_id: Id) -> Result<Option<String>> {
        self.app_digest(AppDigest::GitRepo, app_id).await
    }

    pub async fn set_git_repo_digest(&self, app_id: Id, digest: &str) -> Result<()> {
        self.set_app_digest(AppDigest::GitRepo, app_id, digest)
            .await
    }

    pub async fn build_cache_digest(&self, app_id: Id) -> Result<Option<String>> {
        self.app_digest(AppDigest::BuildCache, app_id).await
    }

    pub async fn set_build_cache_digest(&self, app_id: Id, digest: &str) -> Result<()> {
        self.set_app_digest(AppDigest::BuildCache, app_id, digest)
            .await
    }

    async fn app_digest(&self, table: AppDigest, app_id: Id) -> Result<Option<String>> {
        let sql = format!("SELECT digest FROM {} WHERE app_id = $1", table.name());
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(app_id.to_string())
            .fetch_optional(self.pool())
            .await?)
    }

    async fn set_app_digest(&self, table: AppDigest, app_id: Id, digest: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (app_id, digest, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (app_id) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            table.name()
        );
        let mut tx = self.begin().await?;
        sqlx::query(AssertSqlSafe(sql))
            .bind(app_id.to_string())
            .bind(digest.to_string())
            .bind(unix_now())
            .execute(&mut **tx)
            .await
            .map_err(|e| app_missing(e, app_id))?;
        self.commit(tx).await
    }

    /// Every blob digest these tables name (manifests, tags, upload chunks, git repositories,
    /// build caches): blob garbage collection keeps them as it keeps what artifacts name.
    pub async fn shared_state_blobs(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT digest FROM registry_manifests UNION SELECT digest FROM registry_tags \
             UNION SELECT digest FROM registry_upload_chunks UNION SELECT digest FROM git_repos \
             UNION SELECT digest FROM build_caches",
        )
        .fetch_all(self.pool())
        .await?)
    }
}

/// The per-app blob digests kept in a table of their own (one row per app). The table name is
/// one of these constants, never input.
#[derive(Clone, Copy)]
enum AppDigest {
    GitRepo,
    BuildCache,
}

impl AppDigest {
    fn name(self) -> &'static str {
        match self {
            AppDigest::GitRepo => "git_repos",
            AppDigest::BuildCache => "build_caches",
        }
    }
}

/// A row naming an app that does not exist (deleted meanwhile) → not found.
fn app_missing(e: sqlx::Error, app_id: Id) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
            StoreError::NotFound(format!("app {app_id} not found"))
        }
        _ => e.into(),
    }
}
