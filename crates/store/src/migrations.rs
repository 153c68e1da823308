//! Versioned schema migrations, applied in order at open, each in its own transaction.
//!
//! The SQL is shared; `{EVENT_ID}` and the trigger block differ per dialect. Never edit a
//! migration that has shipped: add a new one.

use crate::StoreError;
use crate::sql::Dialect;
use sqlx::{Any, AssertSqlSafe, Transaction};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
    sqlite_extra: &'static str,
    postgres_extra: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: r#"
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    meta TEXT NOT NULL,
    strategy TEXT NOT NULL,
    deploy_timeout BIGINT NOT NULL,
    deploy_batch_size BIGINT,
    release_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    uri TEXT NOT NULL,
    manifest TEXT,
    meta TEXT NOT NULL,
    size BIGINT,
    digest TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    env TEXT NOT NULL,
    meta TEXT NOT NULL,
    processes TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX releases_app ON releases(app_id, created_at);
CREATE TABLE release_artifacts (
    release_id TEXT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    position BIGINT NOT NULL,
    PRIMARY KEY (release_id, position)
);
CREATE INDEX release_artifacts_artifact ON release_artifacts(artifact_id);
CREATE TABLE formations (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    release_id TEXT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    processes TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app_id, release_id)
);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    release_id TEXT NOT NULL,
    process_type TEXT,
    host_id TEXT,
    state TEXT NOT NULL,
    args TEXT NOT NULL,
    exit_status BIGINT,
    host_error TEXT,
    restarts BIGINT NOT NULL,
    meta TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_app ON jobs(app_id, created_at);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    old_release_id TEXT,
    new_release_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    processes TEXT NOT NULL,
    deploy_timeout BIGINT NOT NULL,
    deploy_batch_size BIGINT,
    error TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE UNIQUE INDEX deployments_one_unfinished ON deployments(app_id) WHERE finished_at IS NULL;
CREATE TABLE http_routes (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    domain TEXT NOT NULL,
    path TEXT NOT NULL,
    sticky BIGINT NOT NULL,
    leader BIGINT NOT NULL,
    tls_cert TEXT,
    tls_key TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX http_routes_unique ON http_routes(domain, path);
CREATE TABLE tcp_routes (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    port BIGINT NOT NULL,
    leader BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX tcp_routes_unique ON tcp_routes(port);
CREATE TABLE events (
    id {EVENT_ID},
    app_id TEXT,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    op TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX events_app ON events(app_id, id);
"#,
        sqlite_extra: r#"
CREATE TRIGGER releases_immutable BEFORE UPDATE ON releases
BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;
CREATE TRIGGER artifacts_immutable BEFORE UPDATE ON artifacts
BEGIN SELECT RAISE(ABORT, 'artifacts are immutable'); END;
"#,
        postgres_extra: r#"
CREATE FUNCTION refuse_update() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION '% are immutable', TG_TABLE_NAME; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER releases_immutable BEFORE UPDATE ON releases
    FOR EACH ROW EXECUTE FUNCTION refuse_update();
CREATE TRIGGER artifacts_immutable BEFORE UPDATE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION refuse_update();
"#,
    },
    // A push's build and its transcript (`slipway build log`). A build goes with its release
    // (housekeeping trims old slug releases) or with its app.
    Migration {
        version: 2,
        name: "builds",
        sql: r#"
CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    commit_id TEXT NOT NULL,
    status TEXT NOT NULL,
    release_id TEXT REFERENCES releases(id) ON DELETE CASCADE,
    error TEXT,
    log TEXT NOT NULL,
    log_bytes BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE INDEX builds_app ON builds(app_id, created_at);
CREATE INDEX builds_release ON builds(release_id);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // Cluster-wide secrets (the API key, the cluster token): in the store, so every controller
    // on one database answers the same key instead of each its own data dir's.
    Migration {
        version: 3,
        name: "cluster secrets",
        sql: r#"
CREATE TABLE cluster_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // A deployment is run by the one deployer that holds its claim (renewed while it runs;
    // `claim_expires` in Unix milliseconds), so a restart of one server no longer fails the
    // deployment another is running.
    Migration {
        version: 4,
        name: "deployment claims",
        sql: r#"
ALTER TABLE deployments ADD COLUMN claimed_by TEXT;
ALTER TABLE deployments ADD COLUMN claim_expires BIGINT;
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // State the registry and the git receiver kept in a controller's data dir, shared so that
    // any controller of a cluster serves any push or pull (issue 16). The content itself is in
    // the blob store; these rows name it. Everything goes with its app.
    Migration {
        version: 5,
        name: "registry and git state",
        sql: r#"
CREATE TABLE registry_manifests (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, digest)
);
CREATE TABLE registry_tags (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, tag)
);
CREATE TABLE registry_uploads (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    size BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX registry_uploads_updated ON registry_uploads(updated_at);
CREATE TABLE registry_upload_chunks (
    upload_id TEXT NOT NULL REFERENCES registry_uploads(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
CREATE TABLE git_repos (
    app_id TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // Leader fencing (docs/scheduler.md): the newest epoch of each singleton role. A leader
    // announces its epoch here before it acts, and its job-row writes go through only while
    // the stored epoch is still its own.
    Migration {
        version: 6,
        name: "leader epochs",
        sql: r#"
CREATE TABLE leader_epochs (
    role TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL
);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // Named leases on one app, seen by every controller on the database: the push lock, so two
    // pushes to one app through two controllers run one after the other (`sql/leases.rs`).
    Migration {
        version: 7,
        name: "app leases",
        sql: r#"
CREATE TABLE app_leases (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (app_id, name)
);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
    // Each app's build cache as the last build left it (a blob), so a build through any
    // controller starts from it, not from that controller's own copy.
    Migration {
        version: 8,
        name: "build caches",
        sql: r#"
CREATE TABLE build_caches (
    app_id TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
        sqlite_extra: "",
        postgres_extra: "",
    },
];

/// Brings the schema up to date. Safe to run from several controllers at once on PostgreSQL
/// (an advisory lock serialises them).
pub(crate) async fn run(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
) -> Result<(), StoreError> {
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(707001)")
            .execute(&mut **tx)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(&mut **tx)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut **tx)
        .await?;
    // A newer slipway migrated this database (a controller of an upgraded cluster): running on
    // a schema we do not know would write rows it cannot read. Refuse before touching anything.
    if let Some(newest) = applied
        .iter()
        .copied()
        .max()
        .filter(|v| *v > latest_version())
    {
        return Err(StoreError::Database(format!(
            "the database's schema is version {newest}, newer than this slipway knows (version {}): \
             a newer slipway upgraded it; run that version (or newer) here too, or point \
             --database-url at another database",
            latest_version()
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let (event_id, extra) = match dialect {
            Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", m.sqlite_extra),
            Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", m.postgres_extra),
        };
        let sql = format!("{}\n{}", m.sql.replace("{EVENT_ID}", event_id), extra);
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut **tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(slipway_types::Timestamp::now().to_string())
        .execute(&mut **tx)
        .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
