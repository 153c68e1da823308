//! Backups of the whole platform and exports of one app (issue 23, `docs/backup.md`).
//!
//! - [`archive`]: the format both use — a tar whose first member is `manifest.json` (format
//!   and Slipway versions, every member's size and SHA-256), read as a whitelist so that a
//!   truncated, altered or hostile archive is refused before anything is kept;
//! - [`platform`]: the consistent snapshot of an embedded (SQLite) store by `VACUUM INTO`, the
//!   blobs it names, and the restore into a fresh data dir (staged beside it, then renamed in);
//! - [`pg`]: the same for a PostgreSQL store (cluster mode): `pg_dump`, `pg_restore` in one
//!   transaction;
//! - [`app`]: the shape of one app's export (`app.json`).
//!
//! It knows the store's schema (the snapshot is cleaned of build caches, leases, job rows and,
//! unless asked, the cluster secrets) and the blob store, nothing above them.

#![forbid(unsafe_code)]

pub mod app;
pub mod archive;
pub mod pg;
pub mod platform;

pub use archive::{Entry, Kind, Manifest, Member};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a backup, restore, export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive (or the place to restore it) is not acceptable; nothing was kept.
    #[error("{0}")]
    Refused(String),
    /// Something failed on this side (disk, database, blob store).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub(crate) fn io(what: String, e: std::io::Error) -> Error {
        Error::Failed(format!("{what}: {e}"))
    }

    pub(crate) fn db(what: &str, e: sqlx::Error) -> Error {
        Error::Failed(format!("{what}: {e}"))
    }
}
