//! The platform backup of an embedded server and its restore.
//!
//! **Consistency.** The store is copied by SQLite's `VACUUM INTO` inside one read transaction:
//! the copy is the database as of one instant, taken while the server keeps writing (WAL
//! readers do not block writers, and writers do not block it). Everything else the platform
//! needs is in blobs, which are immutable and content-addressed, and the store names a blob
//! only once it is stored (an artifact is created after its slug or layers are put), so every
//! blob the snapshot names exists; each is streamed into the archive and re-hashed on the way.
//! A blob collected between the snapshot and its turn (an old slug trimmed by housekeeping at
//! that moment) fails the backup with a message rather than leaving a hole. So the archive is
//! the platform at one instant, whatever pushes and deploys ran meanwhile: a push that had not
//! created its release then is simply not in it.
//!
//! **What is left out**: build caches (rebuilt by the next push), registry uploads in flight,
//! leases, leader epochs and job rows (the restored scheduler starts the formations afresh),
//! deployment claims, and, unless asked, the API key and cluster token (the restored server
//! makes new ones). The snapshot is vacuumed again after that, with `secure_delete`, so what
//! was removed is not left in free pages.
//!
//! **Restore** goes into a staging dir beside the data dir; only once every member was read and
//! verified is it renamed into place, so a refused archive leaves nothing behind.

use crate::archive::{self, Entry, Kind, Manifest};
use crate::{Error, Result};
use slipway_blobstore::{BlobStore, Digest, FsBlobStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store member of a platform backup.
pub const STORE_DB: &str = "store.db";

/// A snapshot ready to stream: its manifest, its members, and the temp dir holding the store
/// copy (removed on drop).
pub struct Snapshot {
    dir: PathBuf,
    pub manifest: Manifest,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// An empty snapshot with its own temp dir under `work`.
    pub(crate) fn new(work: &Path) -> Result<Snapshot> {
        let dir = work.join(format!("backup-{}", uuid::Uuid::new_v4().simple()));
        private_dir(&dir)?;
        Ok(Snapshot {
            dir,
            manifest: archive::manifest(Kind::Platform, 0, false, &[]),
            entries: Vec::new(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The archive's exact length.
    pub fn archive_len(&self) -> u64 {
        archive::archive_len(&self.manifest)
    }

    /// The blobs it holds and their total size.
    pub fn blob_stats(&self) -> (usize, u64) {
        let blobs = self
            .manifest
            .members
            .iter()
            .filter(|m| m.name.starts_with(archive::BLOB_PREFIX));
        blobs.fold((0, 0), |(n, s), m| (n + 1, s + m.size))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(path: &Path, read_only: bool) -> Result<SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| Error::db(&format!("cannot open {}", path.display()), e))
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<()> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::db(sql, e))?;
    Ok(())
}

/// Removes what a restored platform must not inherit (see the module doc).
async fn clean(conn: &mut SqliteConnection, keep_secrets: bool) -> Result<()> {
    exec(conn, "PRAGMA secure_delete = ON").await?;
    for sql in [
        "DELETE FROM build_caches",
        "DELETE FROM registry_upload_chunks",
        "DELETE FROM registry_uploads",
        "DELETE FROM app_leases",
        "DELETE FROM leader_epochs",
        "DELETE FROM jobs",
        "UPDATE deployments SET claimed_by = NULL, claim_expires = NULL",
    ] {
        exec(conn, sql).await?;
    }
    if !keep_secrets {
        exec(conn, "DELETE FROM cluster_secrets").await?;
    }
    exec(conn, "VACUUM").await
}

async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::db("cannot read the schema version", e))
}

/// Every blob the store names (what `slipway_blobstore::gc` keeps, less build caches and
/// uploads): artifacts' slugs, image manifests, configs and layers (as
/// `slipway_blobstore::gc::artifact_digests` reads them), registry manifests and tags, git
/// repositories.
async fn named_blobs(conn: &mut SqliteConnection) -> Result<BTreeSet<String>> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT type, uri, manifest, digest FROM artifacts")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| Error::db("cannot list artifacts", e))?;
    let mut out = BTreeSet::new();
    let mut add = |s: &str| {
        if s.parse::<Digest>().is_ok() {
            out.insert(s.to_string());
        }
    };
    for (kind, uri, manifest, digest) in &rows {
        if let Some(d) = digest {
            add(d);
        }
        if let Some(d) = uri.strip_prefix("blob:") {
            add(d);
        }
        let manifest = manifest
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
        if kind == "image"
            && let Some(m) = manifest
        {
            if let Some(d) = m.pointer("/config/digest").and_then(|d| d.as_str()) {
                add(d);
            }
            for l in m
                .get("layers")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                    add(d);
                }
            }
        }
    }
    let shared: Vec<String> = sqlx::query_scalar(
        "SELECT digest FROM registry_manifests UNION SELECT digest FROM registry_tags \
         UNION SELECT digest FROM git_repos",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db("cannot list the registry's and git's blobs", e))?;
    for d in &shared {
        add(d);
    }
    Ok(out)
}

/// Takes a consistent snapshot of the SQLite store at `db` (into a temp dir under `work`) and
/// lists the blobs it needs, with their sizes from `blobs`.
pub async fn snapshot(
    db: &Path,
    work: &Path,
    blobs: &dyn BlobStore,
    include_secrets: bool,
) -> Result<Snapshot> {
    let mut snapshot = Snapshot::new(work)?;
    let copy = snapshot.dir.join(STORE_DB);
    let mut live = connect(db, true).await?;
    sqlx::query("VACUUM INTO ?")
        .bind(copy.to_string_lossy().into_owned())
        .execute(&mut live)
        .await
        .map_err(|e| Error::db("cannot snapshot the store (VACUUM INTO)", e))?;
    let _ = live.close().await;
    let mut conn = connect(&copy, false).await?;
    clean(&mut conn, include_secrets).await?;
    let schema = schema_version(&mut conn).await?;
    let named = named_blobs(&mut conn).await?;
    let _ = conn.close().await;

    let mut entries = vec![Entry::file(STORE_DB, &copy).await?];
    for d in named {
        let digest: Digest = d
            .parse()
            .map_err(|_| Error::Failed(format!("bad digest {d}")))?;
        let info = blobs
            .head(&digest)
            .await
            .map_err(|e| Error::Failed(e.to_string()))?
            .ok_or_else(|| {
                Error::Failed(format!(
                    "the store names blob {digest}, which is not in the blob store: the backup would be incomplete"
                ))
            })?;
        entries.push(Entry::blob(digest, info.size));
    }
    let manifest = archive::manifest(Kind::Platform, schema, include_secrets, &entries);
    snapshot.manifest = manifest;
    snapshot.entries = entries;
    Ok(snapshot)
}

fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))
}

/// The newest schema this Slipway's store has (a throw-away store opened and migrated).
pub async fn current_schema_version(scratch: &Path) -> Result<i64> {
    let dir = scratch.join(format!("schema-probe-{}", uuid::Uuid::new_v4().simple()));
    private_dir(&dir)?;
    let db = dir.join("probe.db");
    let result = async {
        let store = slipway_store::open(&format!("sqlite://{}", db.display()))
            .await
            .map_err(|e| Error::Failed(format!("cannot open a scratch store: {e}")))?;
        drop(store);
        let mut conn = connect(&db, true).await?;
        let v = schema_version(&mut conn).await;
        let _ = conn.close().await;
        v
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Whether `data_dir` holds a platform already: a store or any blob. A store's WAL or journal
/// left without it counts: SQLite would replay it into the restored `slipway.db` beside it.
pub fn existing_state(data_dir: &Path) -> Result<Option<String>> {
    for name in [
        "slipway.db",
        "slipway.db-wal",
        "slipway.db-shm",
        "slipway.db-journal",
    ] {
        if data_dir.join(name).exists() {
            return Ok(Some(name.into()));
        }
    }
    let blobs = data_dir.join("blobs");
    if blobs.exists() {
        let store = FsBlobStore::open(&blobs).map_err(|e| Error::Failed(e.to_string()))?;
        let n = count_files(&store)?;
        if n > 0 {
            return Ok(Some(format!("{n} blobs")));
        }
    }
    Ok(None)
}

fn count_files(store: &FsBlobStore) -> Result<usize> {
    // Counted by walking the tree: sync, and callable before any runtime.
    let dir = store.dir().to_path_buf();
    let mut n = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    Ok(n)
}

/// What a restore brought back.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub apps: i64,
    pub releases: i64,
    /// Where the replaced data dir was moved (`--restore-force` on a data dir with state).
    pub moved_aside: Option<PathBuf>,
}

/// Restores the platform backup at `file` into `data_dir`: refused when the data dir holds a
/// platform already unless `force` (then that one is moved aside, never deleted). Everything
/// is verified in a staging dir beside `data_dir` before anything is renamed into place.
///
/// With `database_url` (PostgreSQL) the backup must be of a PostgreSQL store, and is restored
/// into that database instead (`crate::pg::restore`); the data dir only holds the staging dir.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    force: bool,
    database_url: Option<&str>,
) -> Result<Restored> {
    if let Some(url) = database_url {
        return restore_pg(file, data_dir, force, url).await;
    }
    let existing = existing_state(data_dir)?;
    if let (Some(what), false) = (&existing, force) {
        return Err(Error::Refused(format!(
            "the data dir {} already holds a platform ({what}): restoring would replace it. Restore into a fresh --data-dir, or stop its server and pass --restore-force (the current data dir is then kept as {}.before-restore-TIME)",
            data_dir.display(),
            data_dir.display()
        )));
    }
    if existing.is_some() && in_use(&data_dir.join("slipway.db")).await? {
        return Err(Error::Refused(format!(
            "the store in {} is open in another process (a server running on that data dir): stop it, then restore",
            data_dir.display()
        )));
    }
    let name = data_dir
        .file_name()
        .ok_or_else(|| Error::Refused(format!("--data-dir {} has no name", data_dir.display())))?;
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    private_dir(parent)?;
    let staging = parent.join(format!(
        ".{}.restore-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    private_dir(&staging)?;
    let result = stage(file, &staging).await;
    let (manifest, apps, releases) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let moved_aside = match swap_in(&staging, data_dir, existing.is_some()) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    Ok(Restored {
        manifest,
        apps,
        releases,
        moved_aside,
    })
}

/// Whether another process has the SQLite store at `db` open: its connections hold a shared
/// lock on the file (WAL mode), so an exclusive one is refused at once. `--restore-force`
/// would otherwise move the data dir from under a running server, which keeps writing there.
async fn in_use(db: &Path) -> Result<bool> {
    if !db.exists() {
        return Ok(false);
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::ZERO)
        .pragma("locking_mode", "EXCLUSIVE")
        .connect()
        .await
        .map_err(|e| Error::db(&format!("cannot open {}", db.display()), e))?;
    let locked = match sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await {
        Ok(_) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            false
        }
        Err(sqlx::Error::Database(e)) if e.message().contains("locked") => true,
        Err(e) => return Err(Error::db("cannot lock the store", e)),
    };
    let _ = conn.close().await;
    Ok(locked)
}

/// Reads and verifies the archive into `staging` (`slipway.db`, `blobs/`), cleans the store.
async fn stage(file: &Path, staging: &Path) -> Result<(Manifest, i64, i64)> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::Refused(format!("cannot open the backup {}: {e}", file.display())))?;
    let mut input = tokio::io::BufReader::with_capacity(1 << 20, f);
    let files = staging.join(".archive");
    private_dir(&files)?;
    let blobs: Arc<dyn BlobStore> = Arc::new(
        FsBlobStore::open(staging.join("blobs")).map_err(|e| Error::Failed(e.to_string()))?,
    );
    let read = archive::read(&mut input, Kind::Platform, &files, blobs).await?;
    let Some((_, db)) = read.files.iter().find(|(n, _)| n == STORE_DB) else {
        if read.files.iter().any(|(n, _)| n == crate::pg::STORE_PGDUMP) {
            return Err(Error::Refused(
                "the backup is of a PostgreSQL store: restore it with --database-url postgres://… (an empty database)".into(),
            ));
        }
        return Err(Error::Refused(format!(
            "the backup has no {STORE_DB}: it is not a platform backup"
        )));
    };
    let target = staging.join("slipway.db");
    std::fs::rename(db, &target)
        .map_err(|e| Error::io(format!("cannot move {}", db.display()), e))?;
    let _ = std::fs::remove_dir_all(&files);

    let ours = current_schema_version(staging).await?;
    let mut conn = connect(&target, false).await?;
    let theirs = schema_version(&mut conn).await?;
    if theirs > ours {
        return Err(Error::Refused(format!(
            "the backup's store has schema version {theirs} (Slipway {}); this Slipway ({}) knows up to {ours}: upgrade Slipway first",
            read.manifest.slipway_version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    // Again at restore: a backup from another tool or an older format may carry them.
    clean(&mut conn, true).await?;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let apps = count("SELECT COUNT(*) FROM apps")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::db("the restored store cannot be read", e))?;
    let releases = count("SELECT COUNT(*) FROM releases")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::db("the restored store cannot be read", e))?;
    let _ = conn.close().await;
    Ok((read.manifest, apps, releases))
}

/// Renames the verified `staging` into `data_dir`; a data dir with state (forced) is moved
/// aside first, one without (empty, or only a host dir or key files) gets the store and blobs.
fn swap_in(staging: &Path, data_dir: &Path, has_state: bool) -> Result<Option<PathBuf>> {
    let mv = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            Error::io(
                format!("cannot move {} to {}", from.display(), to.display()),
                e,
            )
        })
    };
    if !data_dir.exists() {
        mv(staging, data_dir)?;
        return Ok(None);
    }
    if has_state {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = PathBuf::from(format!("{}.before-restore-{secs}", data_dir.display()));
        mv(data_dir, &aside)?;
        mv(staging, data_dir)?;
        return Ok(Some(aside));
    }
    // No store and no blob there: an empty blobs tree may be, which the restored one replaces.
    let blobs = data_dir.join("blobs");
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs)
            .map_err(|e| Error::io(format!("cannot remove {}", blobs.display()), e))?;
    }
    for name in ["slipway.db", "blobs"] {
        mv(&staging.join(name), &data_dir.join(name))?;
    }
    std::fs::remove_dir_all(staging)
        .map_err(|e| Error::io(format!("cannot remove {}", staging.display()), e))?;
    Ok(None)
}

/// [`restore`] into PostgreSQL: the archive is verified in a staging dir beside the data dir,
/// then `pg_restore`d in one transaction.
async fn restore_pg(file: &Path, data_dir: &Path, force: bool, url: &str) -> Result<Restored> {
    private_dir(data_dir)?;
    let staging = data_dir.join(format!(".restore-{}", uuid::Uuid::new_v4().simple()));
    private_dir(&staging)?;
    let result = async {
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            Error::Refused(format!("cannot open the backup {}: {e}", file.display()))
        })?;
        let mut input = tokio::io::BufReader::with_capacity(1 << 20, f);
        let files = staging.join(".archive");
        private_dir(&files)?;
        let blobs: Arc<dyn BlobStore> = Arc::new(
            FsBlobStore::open(staging.join("blobs")).map_err(|e| Error::Failed(e.to_string()))?,
        );
        let read = archive::read(&mut input, Kind::Platform, &files, blobs).await?;
        let Some((_, dump)) = read.files.iter().find(|(n, _)| n == crate::pg::STORE_PGDUMP)
        else {
            return Err(Error::Refused(
                "the backup is of an embedded (SQLite) store: restore it without --database-url".into(),
            ));
        };
        let ours = current_schema_version(&staging).await?;
        if read.manifest.schema_version > ours {
            return Err(Error::Refused(format!(
                "the backup's store has schema version {} (Slipway {}); this Slipway ({}) knows up to {ours}: upgrade Slipway first",
                read.manifest.schema_version,
                read.manifest.slipway_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        crate::pg::restore(dump, &read.manifest, url, force).await?;
        let mut conn = <sqlx::postgres::PgConnection as Connection>::connect(url)
            .await
            .map_err(|e| Error::db("cannot connect to --database-url", e))?;
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
        let apps = count("SELECT COUNT(*) FROM apps")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::db("the restored store cannot be read", e))?;
        let releases = count("SELECT COUNT(*) FROM releases")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::db("the restored store cannot be read", e))?;
        let _ = conn.close().await;
        Ok(Restored {
            manifest: read.manifest,
            apps,
            releases,
            moved_aside: None,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}
