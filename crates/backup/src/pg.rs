//! The platform backup of a PostgreSQL store (cluster mode): `pg_dump` in its custom format,
//! restored by `pg_restore` in one transaction. The blobs are in the same database
//! (`PgBlobStore`), so the dump holds them too, and `pg_dump`'s one repeatable-read
//! transaction makes store and blobs one consistent snapshot while every controller keeps
//! writing. Left out as in embedded mode: the rows of build caches, registry uploads, leases,
//! leader epochs, job rows and, unless asked, the cluster secrets (their tables are kept,
//! empty). The build caches' blobs themselves stay in the dump (they are rows of the blob
//! table like any other).
//!
//! The connection goes to `pg_dump`/`pg_restore` through `PG*` environment variables, never
//! their arguments (a password in argv is readable by every local user).

use crate::archive::{self, Entry, Kind, Manifest};
use crate::platform::Snapshot;
use crate::{Error, Result};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::path::Path;
use std::process::Stdio;

/// The store member of a PostgreSQL platform backup.
pub const STORE_PGDUMP: &str = "store.pgdump";

/// Tables whose rows a restored platform must not inherit.
const NOT_INHERITED: [&str; 6] = [
    "build_caches",
    "registry_upload_chunks",
    "registry_uploads",
    "app_leases",
    "leader_epochs",
    "jobs",
];

/// `url`'s parts as libpq's environment variables.
fn pg_env(url: &str) -> Result<Vec<(&'static str, String)>> {
    let bad = |why: &str| Error::Refused(format!("--database-url: {why}"));
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(bad("not a postgres:// URL"));
    }
    // Percent-decoding as sqlx does (not form decoding: a `+` in a password is a `+`).
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let host = match u.host() {
        // libpq takes an IPv6 address bare, not in the URL's brackets.
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => "localhost".to_string(),
    };
    let mut env = vec![("PGHOST", host)];
    if let Some(port) = u.port() {
        env.push(("PGPORT", port.to_string()));
    }
    if !u.username().is_empty() {
        env.push(("PGUSER", decode(u.username())));
    }
    if let Some(p) = u.password() {
        env.push(("PGPASSWORD", decode(p)));
    }
    let db = u.path().trim_start_matches('/');
    if !db.is_empty() {
        env.push(("PGDATABASE", decode(db)));
    }
    // The parameters sqlx takes from the query, which win over the URL's parts as in sqlx
    // (`?host=/run/postgresql` is a Unix socket: without it pg_dump would go to localhost).
    for (k, v) in u.query_pairs() {
        let var = match k.as_ref() {
            "host" => "PGHOST",
            "hostaddr" => "PGHOSTADDR",
            "port" => "PGPORT",
            "user" => "PGUSER",
            "password" => "PGPASSWORD",
            "dbname" => "PGDATABASE",
            "sslmode" => "PGSSLMODE",
            "sslrootcert" => "PGSSLROOTCERT",
            "sslcert" => "PGSSLCERT",
            "sslkey" => "PGSSLKEY",
            "application_name" => "PGAPPNAME",
            "options" => "PGOPTIONS",
            _ => continue,
        };
        env.retain(|(k, _)| *k != var);
        env.push((var, v.into_owned()));
    }
    Ok(env)
}

async fn run(program: &str, args: &[String], env: &[(&'static str, String)]) -> Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Failed(format!("cannot run {program} (is it installed?): {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
        return Err(Error::Failed(format!("{program} failed: {tail}")));
    }
    Ok(())
}

async fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::connect(url)
        .await
        .map_err(|e| Error::db("cannot connect to --database-url", e))
}

/// Dumps the store at `url` into a temp dir under `work`.
pub async fn snapshot(url: &str, work: &Path, include_secrets: bool) -> Result<Snapshot> {
    let env = pg_env(url)?;
    let mut conn = connect(url).await?;
    let schema: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::db("cannot read the schema version", e))?;
    let _ = conn.close().await;
    let mut snapshot = Snapshot::new(work)?;
    let file = snapshot.dir().join(STORE_PGDUMP);
    let mut args: Vec<String> = [
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--compress=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut excluded: Vec<&str> = NOT_INHERITED.to_vec();
    if !include_secrets {
        excluded.push("cluster_secrets");
    }
    args.extend(excluded.iter().map(|t| format!("--exclude-table-data={t}")));
    args.push(format!("--file={}", file.display()));
    run("pg_dump", &args, &env).await?;
    let entries = vec![Entry::file(STORE_PGDUMP, &file).await?];
    snapshot.manifest = archive::manifest(Kind::Platform, schema, include_secrets, &entries);
    snapshot.entries = entries;
    Ok(snapshot)
}

/// Restores the PostgreSQL backup whose verified `store.pgdump` is at `dump` into `url`:
/// refused when that database holds a Slipway store unless `force` (then its objects are
/// dropped first); one transaction, so a failure leaves the database as it was.
pub async fn restore(dump: &Path, manifest: &Manifest, url: &str, force: bool) -> Result<()> {
    let env = pg_env(url)?;
    let mut conn = connect(url).await?;
    let has_store: bool =
        sqlx::query_scalar("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::db("cannot look into --database-url", e))?;
    if has_store && !force {
        return Err(Error::Refused(
            "the --database-url database already holds a Slipway store: restoring would replace it. Restore into an empty database, or stop every server on it and pass --restore-force (its tables are dropped)".into(),
        ));
    }
    let _ = conn.close().await;
    let mut args: Vec<String> = [
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if has_store {
        args.extend(["--clean".to_string(), "--if-exists".to_string()]);
    }
    args.push(format!(
        "--dbname={}",
        env.iter()
            .find(|(k, _)| *k == "PGDATABASE")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "postgres".into())
    ));
    args.push(dump.display().to_string());
    run("pg_restore", &args, &env).await?;
    let mut conn = connect(url).await?;
    for t in NOT_INHERITED {
        // Table names from the constant above, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}")))
            .execute(&mut conn)
            .await
            .map_err(|e| Error::db("cannot clean the restored store", e))?;
    }
    sqlx::query("UPDATE deployments SET claimed_by = NULL, claim_expires = NULL")
        .execute(&mut conn)
        .await
        .map_err(|e| Error::db("cannot clean the restored store", e))?;
    let _ = conn.close().await;
    tracing::info!(
        schema = manifest.schema_version,
        "restored the PostgreSQL store"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pg_env;

    fn get(env: &[(&'static str, String)], k: &str) -> Option<String> {
        env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_url_becomes_the_libpq_environment_as_sqlx_reads_it() {
        let env = pg_env("postgres://sl%40ip:a+b%2Fc@[::1]:5433/my%20db?sslmode=require").unwrap();
        assert_eq!(get(&env, "PGHOST").as_deref(), Some("::1"));
        assert_eq!(get(&env, "PGPORT").as_deref(), Some("5433"));
        assert_eq!(get(&env, "PGUSER").as_deref(), Some("sl@ip"));
        assert_eq!(get(&env, "PGPASSWORD").as_deref(), Some("a+b/c"));
        assert_eq!(get(&env, "PGDATABASE").as_deref(), Some("my db"));
        assert_eq!(get(&env, "PGSSLMODE").as_deref(), Some("require"));
        let env = pg_env("postgresql://db.example:5432/slipway").unwrap();
        assert_eq!(get(&env, "PGHOST").as_deref(), Some("db.example"));
        assert_eq!(get(&env, "PGPASSWORD"), None);
        assert!(pg_env("mysql://x/y").is_err());
        let env = pg_env("postgres:///slipway?host=/run/postgresql&user=sw&dbname=other").unwrap();
        assert_eq!(get(&env, "PGHOST").as_deref(), Some("/run/postgresql"));
        assert_eq!(get(&env, "PGUSER").as_deref(), Some("sw"));
        assert_eq!(get(&env, "PGDATABASE").as_deref(), Some("other"));
        assert_eq!(env.iter().filter(|(k, _)| *k == "PGDATABASE").count(), 1);
    }
}
