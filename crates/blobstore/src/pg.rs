//! Blobs in PostgreSQL, so that every controller of a cluster sees the same blobs: a slug
//! uploaded through one controller is served by another, a layer pushed to one registry is
//! pulled from the other.
//!
//! A blob is a row of `blob_store_blobs` (digest, size, chunk count, the upload that wrote it)
//! and its content `blob_store_chunks` rows of at most [`CHUNK`] bytes each, keyed by that
//! upload's id. A put registers a fresh upload id (`blob_store_uploads`), streams the body
//! into chunk rows under it while hashing (each insert its own short statement: no connection
//! or transaction is held while a slow client sends), and only once the digest is verified
//! publishes the blob row in one short transaction. Until then nothing names the chunks, so
//! nothing of a put in progress, failed or abandoned is ever visible. A failed put deletes its
//! chunks; a dropped one (client gone) has them deleted by a task it spawns; a process that
//! died mid-put leaves them to [`PgBlobStore::connect`], which removes uploads older than
//! [`STALE_UPLOAD`]. Reads stream the chunks one query at a time, so neither side holds a
//! whole blob in memory.
//!
//! The tables are created by [`PgBlobStore::connect`] (idempotently, under an advisory lock, so
//! several controllers starting at once do not race): the blob store owns them, not
//! `slipway-store`'s migrations.

use crate::{BlobError, BlobInfo, BlobStore, Body, Digest, Hasher};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// Bytes per chunk row: big enough that per-row overhead does not matter, small enough that a
/// row is cheap to hold in memory (one per reader or writer at a time).
pub const CHUNK: usize = 1024 * 1024;

/// An unpublished upload this old is abandoned (its process died): removed at connect.
pub const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// Serialises the table creation of processes starting at once ("blob" in ASCII).
const SCHEMA_LOCK: i64 = 0x626c_6f62;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS blob_store_blobs (
        digest TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        chunks INTEGER NOT NULL,
        upload_id TEXT NOT NULL UNIQUE,
        modified_ms BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS blob_store_chunks (
        upload_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (upload_id, seq)
    )",
    "CREATE TABLE IF NOT EXISTS blob_store_uploads (
        upload_id TEXT PRIMARY KEY,
        started_ms BIGINT NOT NULL
    )",
];

/// A [`BlobStore`] on PostgreSQL; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PgBlobStore {
    pool: PgPool,
}

fn db(what: &str, e: sqlx::Error) -> BlobError {
    BlobError::Io(std::io::Error::other(format!(
        "blob store database: cannot {what}: {e}"
    )))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn info(digest: &str, size: i64, modified_ms: i64) -> Result<BlobInfo, BlobError> {
    Ok(BlobInfo {
        digest: digest.parse()?,
        size: size.max(0) as u64,
        modified: Some(UNIX_EPOCH + Duration::from_millis(modified_ms.max(0) as u64)),
    })
}

impl PgBlobStore {
    /// Connects to `url` (`postgres://…`) and creates the blob tables if they are missing.
    pub async fn connect(url: &str) -> Result<PgBlobStore, BlobError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| db("connect to PostgreSQL (check --database-url)", e))?;
        PgBlobStore::open(pool).await
    }

    /// A store on an existing pool; creates the blob tables if they are missing.
    pub async fn open(pool: PgPool) -> Result<PgBlobStore, BlobError> {
        let mut tx = pool.begin().await.map_err(|e| db("begin", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("lock the schema", e))?;
        for stmt in SCHEMA {
            sqlx::query(*stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| db("create the blob tables", e))?;
        }
        tx.commit().await.map_err(|e| db("commit", e))?;
        let store = PgBlobStore { pool };
        let stale = now_ms() - STALE_UPLOAD.as_millis() as i64;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT upload_id FROM blob_store_uploads WHERE started_ms < $1")
                .bind(stale)
                .fetch_all(&store.pool)
                .await
                .map_err(|e| db("list abandoned uploads", e))?;
        for id in ids {
            discard(&store.pool, &id).await?;
        }
        Ok(store)
    }

    /// Chunk rows that belong to no blob: those of puts in progress, or of puts whose process
    /// died (removed after [`STALE_UPLOAD`]).
    pub async fn orphaned_chunks(&self) -> Result<u64, BlobError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM blob_store_chunks c WHERE NOT EXISTS
                 (SELECT 1 FROM blob_store_blobs b WHERE b.upload_id = c.upload_id)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db("count chunks", e))?;
        Ok(n as u64)
    }

    /// Fills `buf` from `body` until it is full or the body ends; the bytes read.
    async fn fill(body: &mut Body, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let got = body.read(&mut buf[n..]).await?;
            if got == 0 {
                break;
            }
            n += got;
        }
        Ok(n)
    }

    /// Streams `body` into chunk rows of `upload_id` while hashing; verifies `expected`.
    /// The digest, size and chunk count.
    async fn stream_in(
        &self,
        upload_id: &str,
        body: &mut Body,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64, i32), BlobError> {
        let mut hasher = Hasher::new();
        let mut size = 0u64;
        let mut seq: i32 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = Self::fill(body, &mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            sqlx::query("INSERT INTO blob_store_chunks (upload_id, seq, data) VALUES ($1, $2, $3)")
                .bind(upload_id)
                .bind(seq)
                .bind(&buf[..n])
                .execute(&self.pool)
                .await
                .map_err(|e| db("store a chunk", e))?;
            size += n as u64;
            seq = seq.checked_add(1).ok_or_else(|| {
                BlobError::Io(std::io::Error::other("blob too large for the blob store"))
            })?;
            if n < CHUNK {
                break;
            }
        }
        let actual = hasher.finish();
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok((actual, size, seq))
    }

    /// Marks a stored blob young again (garbage collection spares young blobs); its info, or
    /// `None` if it is not stored.
    async fn touch(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE blob_store_blobs SET modified_ms = $2 WHERE digest = $1
             RETURNING size, modified_ms",
        )
        .bind(d.as_str())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("update a blob", e))?;
        row.map(|(size, m)| info(d.as_str(), size, m)).transpose()
    }
}

#[async_trait::async_trait]
impl BlobStore for PgBlobStore {
    async fn put(&self, mut body: Body, expected: Option<&Digest>) -> Result<BlobInfo, BlobError> {
        // Already stored: read nothing — the content is named by the digest.
        if let Some(d) = expected
            && let Some(info) = self.touch(d).await?
        {
            return Ok(info);
        }
        let upload_id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO blob_store_uploads (upload_id, started_ms) VALUES ($1, $2)")
            .bind(&upload_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| db("start an upload", e))?;
        // Until published, the chunks go when this put ends: error, mismatch, or dropped.
        let mut guard = Staged {
            pool: Some(self.pool.clone()),
            upload_id: upload_id.clone(),
        };
        let (actual, size, chunks) = match self.stream_in(&upload_id, &mut body, expected).await {
            Ok(x) => x,
            Err(e) => {
                guard.pool = None;
                if let Err(d) = discard(&self.pool, &upload_id).await {
                    tracing::warn!(upload = %upload_id, "cannot discard a failed blob upload: {d}");
                }
                return Err(e);
            }
        };
        let mut tx = self.pool.begin().await.map_err(|e| db("begin", e))?;
        // Someone else stored the same content meanwhile: theirs stays, ours goes.
        let (owner, modified_ms): (String, i64) = sqlx::query_as(
            "INSERT INTO blob_store_blobs (digest, size, chunks, upload_id, modified_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (digest) DO UPDATE SET modified_ms = EXCLUDED.modified_ms
             RETURNING upload_id, modified_ms",
        )
        .bind(actual.as_str())
        .bind(size as i64)
        .bind(chunks)
        .bind(&upload_id)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db("publish a blob", e))?;
        if owner != upload_id {
            sqlx::query("DELETE FROM blob_store_chunks WHERE upload_id = $1")
                .bind(&upload_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db("drop a duplicate upload", e))?;
        }
        sqlx::query("DELETE FROM blob_store_uploads WHERE upload_id = $1")
            .bind(&upload_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("finish an upload", e))?;
        tx.commit().await.map_err(|e| db("commit a blob", e))?;
        guard.pool = None;
        tracing::debug!(digest = %actual, size, "blob stored");
        info(actual.as_str(), size as i64, modified_ms)
    }

    async fn get(&self, d: &Digest) -> Result<Option<(BlobInfo, Body)>, BlobError> {
        let row: Option<(i64, i32, String, i64)> = sqlx::query_as(
            "SELECT size, chunks, upload_id, modified_ms FROM blob_store_blobs WHERE digest = $1",
        )
        .bind(d.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("read a blob", e))?;
        let Some((size, chunks, upload_id, modified_ms)) = row else {
            return Ok(None);
        };
        let pool = self.pool.clone();
        let digest = d.clone();
        // One chunk per query, fetched when the reader wants it.
        let stream = futures_util::stream::try_unfold(0i32, move |seq| {
            let (pool, upload_id, digest) = (pool.clone(), upload_id.clone(), digest.clone());
            async move {
                if seq >= chunks {
                    return Ok(None);
                }
                let data: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT data FROM blob_store_chunks WHERE upload_id = $1 AND seq = $2",
                )
                .bind(&upload_id)
                .bind(seq)
                .fetch_optional(&pool)
                .await
                .map_err(|e| std::io::Error::other(format!("blob store database: {e}")))?;
                match data {
                    Some(data) => Ok(Some((bytes::Bytes::from(data), seq + 1))),
                    None => Err(std::io::Error::other(format!(
                        "blob {digest} was deleted while being read"
                    ))),
                }
            }
        });
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        Ok(Some((
            info(d.as_str(), size, modified_ms)?,
            Box::new(reader) as Body,
        )))
    }

    async fn head(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT size, modified_ms FROM blob_store_blobs WHERE digest = $1")
                .bind(d.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db("read a blob", e))?;
        row.map(|(size, m)| info(d.as_str(), size, m)).transpose()
    }

    async fn delete(&self, d: &Digest) -> Result<bool, BlobError> {
        let mut tx = self.pool.begin().await.map_err(|e| db("begin", e))?;
        let upload: Option<String> = sqlx::query_scalar(
            "DELETE FROM blob_store_blobs WHERE digest = $1 RETURNING upload_id",
        )
        .bind(d.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db("delete a blob", e))?;
        let Some(upload) = upload else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM blob_store_chunks WHERE upload_id = $1")
            .bind(&upload)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("delete a blob's chunks", e))?;
        tx.commit().await.map_err(|e| db("commit a delete", e))?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT digest, size, modified_ms FROM blob_store_blobs ORDER BY digest",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("list blobs", e))?;
        rows.iter().map(|(d, size, m)| info(d, *size, *m)).collect()
    }
}

/// Deletes an unpublished upload's chunks and its row.
async fn discard(pool: &PgPool, upload_id: &str) -> Result<(), BlobError> {
    let mut tx = pool.begin().await.map_err(|e| db("begin", e))?;
    sqlx::query("DELETE FROM blob_store_chunks WHERE upload_id = $1")
        .bind(upload_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db("discard an upload", e))?;
    sqlx::query("DELETE FROM blob_store_uploads WHERE upload_id = $1")
        .bind(upload_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db("discard an upload", e))?;
    tx.commit().await.map_err(|e| db("discard an upload", e))
}

/// An upload in progress: if the put is dropped before it publishes or discards it (the
/// client went away), a task discards it.
struct Staged {
    pool: Option<PgPool>,
    upload_id: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let id = std::mem::take(&mut self.upload_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = discard(&pool, &id).await {
                    tracing::warn!(upload = %id, "cannot discard an abandoned blob upload: {e}");
                }
            });
        }
    }
}
