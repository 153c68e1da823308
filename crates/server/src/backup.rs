//! Platform backup and restore (`docs/backup.md`): `GET /backup` on the controller's port,
//! behind the API key, streams an archive of the store and the blobs it names (embedded:
//! `slipway_backup::platform`; PostgreSQL: `slipway_backup::pg`); `--restore FILE` restores one
//! into the data dir (or the `--database-url` database) before the roles start.
//!
//! Needs: the controller's store (its SQLite file) and the blob store.

use crate::Config;
use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_api_error::ApiErr;
use slipway_blobstore::BlobStore;
use slipway_types::ErrorCode;
use std::path::PathBuf;
use std::sync::Arc;

/// The response header with the archive's manifest summary (members, blobs, store size).
pub const SUMMARY_HEADER: &str = "slipway-backup-summary";

/// Where the store is.
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

struct Backups {
    db: Db,
    work: PathBuf,
    blobs: Arc<dyn BlobStore>,
    /// One backup at a time: each holds a store copy on disk while it streams.
    running: Arc<tokio::sync::Semaphore>,
}

#[derive(serde::Deserialize)]
struct Params {
    /// Keep the API key and the cluster token in the snapshot.
    #[serde(default)]
    secrets: bool,
}

/// `GET /backup[?secrets=true]`.
pub fn router(config: &Config, blobs: Arc<dyn BlobStore>) -> axum::Router {
    let db = match &config.args.database_url {
        Some(url) if crate::blobstore::is_postgres(url) => Db::Postgres(url.clone()),
        Some(url) => {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Db::Sqlite(PathBuf::from(path.split('?').next().unwrap_or(path)))
        }
        None => Db::Sqlite(config.data_dir.join("slipway.db")),
    };
    let work = config.data_dir.join("backup-tmp");
    // Store copies a crashed process left (each backup removes its own when it ends).
    let _ = std::fs::remove_dir_all(&work);
    let state = Arc::new(Backups {
        db,
        work,
        blobs,
        running: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    axum::Router::new()
        .route("/backup", axum::routing::get(backup))
        .with_state(state)
}

async fn backup(State(b): State<Arc<Backups>>, Query(p): Query<Params>) -> Response {
    let Ok(permit) = b.running.clone().try_acquire_owned() else {
        return ApiErr::new(
            ErrorCode::Conflict,
            "a backup is already being taken on this server; try again when it is done",
        )
        .into_response();
    };
    let snapshot = match &b.db {
        Db::Sqlite(db) => {
            slipway_backup::platform::snapshot(db, &b.work, b.blobs.as_ref(), p.secrets).await
        }
        Db::Postgres(url) => slipway_backup::pg::snapshot(url, &b.work, p.secrets).await,
    };
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("backup: {e}");
            return ApiErr::new(ErrorCode::Internal, format!("the backup failed: {e}"))
                .into_response();
        }
    };
    let len = snapshot.archive_len();
    let (blob_count, blob_bytes) = snapshot.blob_stats();
    tracing::info!(
        bytes = len,
        blobs = blob_count,
        blob_bytes,
        secrets = p.secrets,
        "backup: streaming"
    );
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let blobs = b.blobs.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let result = slipway_backup::archive::write(
            &mut tx,
            &snapshot.manifest,
            &snapshot.entries,
            Some(blobs.as_ref()),
            |_| {},
        )
        .await;
        match result {
            Ok(()) => tracing::info!(bytes = len, "backup: done"),
            // The client sees a body shorter than its Content-Length: a cut archive, refused
            // at restore.
            Err(e) => tracing::warn!("backup: stopped: {e}"),
        }
        drop(snapshot);
    });
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(rx));
    let summary = format!(
        "blobs={blob_count}; blob-bytes={blob_bytes}; secrets={}",
        p.secrets
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"slipway-backup.tar\"".to_string(),
            ),
            (header::HeaderName::from_static(SUMMARY_HEADER), summary),
        ],
        body,
    )
        .into_response()
}

/// `--restore FILE`: restores into the data dir (or the `--database-url` PostgreSQL database)
/// before anything opens it; refused, with nothing written, for a data dir or database that
/// holds a platform unless `--restore-force`, a backup of the other kind of store, or an
/// archive that is not a whole, unaltered platform backup of a Slipway no newer than this.
pub async fn restore(config: &Config, file: &std::path::Path) -> Result<()> {
    let url = config.args.database_url.as_deref();
    if let Some(url) = url.filter(|u| !crate::blobstore::is_postgres(u)) {
        anyhow::bail!(
            "--restore puts the embedded store in the data dir: give no --database-url ({url})"
        );
    }
    let started = std::time::Instant::now();
    let force = config.args.restore_force;
    let restored = slipway_backup::platform::restore(file, &config.data_dir, force, url)
        .await
        .with_context(|| format!("cannot restore {}", file.display()))?;
    if let Some(aside) = &restored.moved_aside {
        tracing::warn!(
            "restore: the previous data dir is kept at {}",
            aside.display()
        );
    }
    tracing::info!(
        apps = restored.apps,
        releases = restored.releases,
        from = %restored.manifest.slipway_version,
        created = %restored.manifest.created_at,
        secrets = restored.manifest.secrets_included,
        took_ms = started.elapsed().as_millis() as u64,
        "restored {} into {}",
        file.display(),
        config.data_dir.display()
    );
    Ok(())
}
