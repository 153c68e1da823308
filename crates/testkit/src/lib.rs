//! Real servers for tests, started and stopped by the test itself.
//!
//! [`postgres_database`] gives each test its own fresh database. When
//! `SLIPWAY_TEST_DATABASE_URL` points at a running server (scripts/test starts one for the
//! whole run), databases are created there; otherwise the test starts a private PostgreSQL
//! (initdb into a temp dir, a free loopback port) that stops when the returned guard drops.

pub mod etcd;
mod git_daemon;
pub mod netns;
pub mod runc;
pub use git_daemon::GitDaemon;
mod skip;
pub use skip::{
    current_test, is_root, require_all, skip, skip_deliberately, skip_unless_program,
    skip_unless_root, skip_unless_slow,
};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL server this process started; stopped (and its files removed) on drop.
pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// A database for one test, and whatever must stay alive while it is used.
pub struct TestDatabase {
    pub url: String,
    _server: Option<PostgresServer>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if PostgreSQL is installed.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Runs a PostgreSQL tool; as root it runs as the `postgres` user (PostgreSQL refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl PostgresServer {
    /// initdb + pg_ctl start on a free loopback port, trust auth, no Unix socket outside the dir.
    pub fn start() -> Result<Self, String> {
        let bin =
            postgres_bin_dir().ok_or("PostgreSQL is not installed (apt-get install postgresql)")?;
        let dir = tempfile::Builder::new()
            .prefix("slipway-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&data);
                    c
                },
                "chown data dir",
            )?;
        }
        let mut initdb = pg_command(&bin, "initdb");
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb")?;
        let port = free_port();
        let mut start = pg_command(&bin, "pg_ctl");
        start.args(["start", "-w", "-t", "30", "-l"]).arg(data.join("server.log")).arg("-D").arg(&data).arg("-o").arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            data.display()
        ));
        run(start, "pg_ctl start")?;
        Ok(PostgresServer {
            port,
            bin,
            data,
            _dir: dir,
        })
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data);
        let _ = stop.output();
    }
}

/// A fresh, empty database on a real PostgreSQL, or `None` (a counted [`skip`] of the running
/// test) when no server can be had. Under CI or `SLIPWAY_REQUIRE_ALL=1` that is a failure.
pub async fn postgres_database() -> Option<TestDatabase> {
    let (base_url, server) = match std::env::var("SLIPWAY_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => match PostgresServer::start() {
            Ok(s) => (s.url("postgres"), Some(s)),
            Err(e) => {
                skip(
                    &current_test(),
                    &format!(
                        "a PostgreSQL server (SLIPWAY_TEST_DATABASE_URL, or one to start: {e})"
                    ),
                );
                return None;
            }
        },
    };
    let name = format!("slipway_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match <sqlx::AnyConnection as sqlx::Connection>::connect(&base_url).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot connect to PostgreSQL at {base_url}: {e}")
            }
            Err(_) => tokio_sleep().await,
        }
    };
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("create test database");
    let url = match base_url.rfind('/') {
        Some(i) if base_url[..i].contains("://") && i > base_url.find("://").unwrap() + 2 => {
            let (head, tail) = base_url.split_at(i);
            let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
            format!("{head}/{name}{query}")
        }
        _ => format!("{base_url}/{name}"),
    };
    Some(TestDatabase {
        url,
        _server: server,
    })
}

async fn tokio_sleep() {
    // No tokio dependency here: a blocking sleep on the (multi-threaded) test runtime is fine
    // for this rare retry.
    std::thread::sleep(Duration::from_millis(100));
}
