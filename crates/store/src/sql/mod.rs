//! [`SqlStore`]: the [`Store`](crate::Store) on SQLite or PostgreSQL through sqlx's `Any` driver.

mod apps;
mod builds;
mod claims;
mod events;
mod fence;
mod jobs;
mod leases;
mod notify;
mod releases;
mod routes;
mod rows;
mod secrets;
mod shared_state;
mod store_impl;

pub use builds::FAILED_BUILDS_KEPT;
pub use secrets::{API_KEY, CLUSTER_TOKEN};
pub use shared_state::{MAX_UPLOAD_CHUNKS, RegistryUpload};

use crate::{Result, StoreError};
use serde::Serialize;
use slipway_types::{EventOp, Id, ObjectType, Timestamp};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// Every SQLite connection's settings: what makes an acknowledged write durable (docs/store.md).
///
/// - `journal_mode = WAL`: a commit appends to the write-ahead log and is atomic: a process
///   killed at any instant (kill -9, OOM, panic) leaves either the whole transaction or none
///   of it, recovered from the log by the next open. Readers never block the writer.
/// - `synchronous = FULL`: the log is fsynced at every commit, before the commit returns and
///   so before the API answers. With it an acknowledged write also survives power loss or a
///   kernel crash (on a disk that honours flushes). `NORMAL` would be enough for kill -9
///   (the committed pages are in the OS page cache, which outlives the process) but could
///   lose the last commits on power loss. Cost measured here: ~0.3 ms per commit instead
///   of ~0.04 ms; the scheduler batches its job rows ([`SqlStore::put_jobs`]).
/// - `busy_timeout = 10000`: a connection waits up to 10 s for another one's lock (another
///   process on the same file, a checkpoint) instead of failing at once with SQLITE_BUSY.
/// - `foreign_keys = ON`: the ON DELETE CASCADEs and references the schema relies on.
///
/// Write transactions start with `BEGIN IMMEDIATE` ([`SqlStore::begin`]).
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 10000",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite allows one writer; a deferred transaction that upgrades to a write while another
    /// commits fails at once with SQLITE_BUSY. Serialising writes here avoids that entirely.
    write_lock: Option<Arc<Mutex<()>>>,
    /// The newest event id known: this process's commits, and on PostgreSQL every
    /// controller's (LISTEN/NOTIFY, [`notify`]).
    last_event: Arc<watch::Sender<i64>>,
    /// The LISTEN task on PostgreSQL, ended with the store.
    listener: Option<notify::ListenerTask>,
}

/// A write transaction. Commit it with [`SqlStore::commit`] so event watchers are woken.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
    last_event: i64,
}

impl std::ops::Deref for WriteTx {
    type Target = Transaction<'static, Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}
impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl SqlStore {
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Unavailable(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://…"
            )));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if dialect == Dialect::Sqlite {
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        conn.execute(*pragma).await?;
                    }
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(10);
        }
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let pool = options.connect(&url).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot open the database at {}: {e}", redact(&url)))
        })?;
        let store = SqlStore {
            pool,
            dialect,
            write_lock: (dialect == Dialect::Sqlite).then(|| Arc::new(Mutex::new(()))),
            last_event: Arc::new(watch::Sender::new(0)),
            listener: None,
        };
        let mut tx = store.begin().await?;
        crate::migrations::run(&mut tx, dialect).await?;
        store.commit(tx).await?;
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&store.pool)
            .await?;
        store.last_event.send_replace(newest.unwrap_or(0));
        let mut store = store;
        if dialect == Dialect::Postgres {
            store.listener = Some(notify::spawn(
                url.clone(),
                store.pool.clone(),
                store.last_event.clone(),
            ));
        }
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn schema_version(&self) -> i64 {
        crate::migrations::latest_version()
    }

    pub async fn close(&self) {
        if let Some(l) = &self.listener {
            l.stop();
        }
        self.pool.close().await
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) async fn begin(&self) -> Result<WriteTx> {
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        // On SQLite the write lock is taken at BEGIN: a deferred transaction that reads first
        // and writes later fails at once (SQLITE_BUSY, no busy wait) if another process wrote
        // in between; an immediate one waits its turn under `busy_timeout`. (In one process
        // `write_lock` already serialises writers.)
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx {
            tx,
            _guard: guard,
            last_event: 0,
        })
    }

    pub(crate) async fn commit(&self, tx: WriteTx) -> Result<()> {
        let WriteTx {
            tx,
            _guard,
            last_event,
        } = tx;
        tx.commit().await?;
        if last_event > 0 {
            notify::advance(&self.last_event, last_event);
        }
        Ok(())
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_event.subscribe()
    }

    /// The usual end of a write: append its event, then commit.
    pub(crate) async fn commit_with_event(
        &self,
        mut tx: WriteTx,
        app_id: Option<Id>,
        object_type: ObjectType,
        object_id: &str,
        op: EventOp,
        data: &impl Serialize,
    ) -> Result<()> {
        self.append_event(&mut tx, app_id, object_type, object_id, op, data)
            .await?;
        self.commit(tx).await
    }

    /// Appends an event to the write transaction.
    pub(crate) async fn append_event(
        &self,
        tx: &mut WriteTx,
        app_id: Option<Id>,
        object_type: ObjectType,
        object_id: &str,
        op: EventOp,
        data: &impl Serialize,
    ) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            // Sequence values are handed out at insert but become visible at commit, so two
            // concurrent writers could commit ids out of order and a stream resuming after the
            // larger one would miss the smaller. Serialising event appends until commit keeps
            // visibility in id order.
            sqlx::query("SELECT pg_advisory_xact_lock(707002)")
                .execute(&mut ***tx)
                .await?;
        }
        let data = serde_json::to_string(data).map_err(|e| StoreError::Database(e.to_string()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (app_id, object_type, object_id, op, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(app_id.map(|a| a.to_string()))
        .bind(object_type.as_str())
        .bind(object_id.to_string())
        .bind(op.as_str())
        .bind(data)
        .bind(Timestamp::now().to_string())
        .fetch_one(&mut ***tx)
        .await?;
        if self.dialect == Dialect::Postgres {
            // Delivered to every listener at commit (never for a rolled-back write).
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(notify::CHANNEL)
                .bind(id.to_string())
                .execute(&mut ***tx)
                .await?;
        }
        tx.last_event = tx.last_event.max(id);
        Ok(())
    }
}

/// Turns a unique-constraint violation into a conflict with `message`.
pub(crate) fn unique_violation(
    message: impl Into<String>,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StoreError::Conflict(message.into())
        }
        _ => e.into(),
    }
}

pub(crate) fn not_found(what: &str, id: impl std::fmt::Display) -> StoreError {
    StoreError::NotFound(format!("{what} {id} not found"))
}

fn redact(url: &str) -> String {
    // postgres://user:password@host → postgres://user:***@host
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) fn now() -> String {
    Timestamp::now().to_string()
}

/// Fetches one row or maps "no rows" to a not-found error.
pub(crate) fn one<T>(row: Option<T>, what: &str, id: impl std::fmt::Display) -> Result<T> {
    row.ok_or_else(|| not_found(what, id))
}

#[cfg(test)]
mod tests {
    /// Every pooled connection runs with the durability settings (`SQLITE_PRAGMAS`), not just
    /// the first one: each of the pool's connections is checked at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sqlite_connection_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
        let store = super::SqlStore::open(&url).await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(store.pool().acquire().await.unwrap());
        }
        for conn in &mut conns {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            // 2 = FULL (0 OFF, 1 NORMAL, 3 EXTRA).
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(sync, 2);
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(busy, 10_000);
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(fk, 1);
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
