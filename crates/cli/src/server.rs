//! `slipway server`: runs the daemon roles in one process (embedded mode). So far: the
//! controller API on SQLite (or PostgreSQL with `--database-url`).

use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Where Slipway keeps its state (database, API key, and later slugs, repos, logs).
    /// Default: /var/lib/slipway as root, ~/.local/share/slipway otherwise.
    #[arg(long, env = "SLIPWAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the controller API. Port 0 picks a free port (printed at start).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Apps get `<app>.<domain>` as their default HTTP route. `localhost` names resolve to this
    /// machine in browsers and curl, so the default works with no DNS set-up.
    #[arg(long, env = "SLIPWAY_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Controller state: `postgres://…` for cluster mode. Default: SQLite in the data dir.
    #[arg(long, env = "SLIPWAY_DATABASE_URL")]
    database_url: Option<String>,
    /// Don't add this server to the CLI's cluster list (~/.config/slipway/config.toml).
    #[arg(long)]
    no_register: bool,
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let domain = slipway_types::normalize_domain(&args.domain)
        .map_err(|e| anyhow::anyhow!("--domain: {}", e.message))?;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    create_private_dir(&data_dir)?;
    let api_key = load_or_create_key(&data_dir.join("api-key"))?;
    let database_url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("slipway.db").display()));
    let store = slipway_store::open(&database_url)
        .await
        .context("cannot open the controller database")?;
    tracing::info!(
        backend = slipway_store::Store::backend(&store),
        "store ready"
    );

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is another `slipway server` running? Use --listen to pick another address", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let local_url = format!("http://{}", client_addr(addr));
    // The first line on stdout says where we are (tests and scripts read it).
    println!("Listening on {local_url}");
    std::io::stdout().flush()?;

    if !args.no_register {
        crate::config::register_local_cluster(&local_url, &api_key)
            .context("cannot add this server to the CLI config (use --no-register to skip)")?;
    }
    let config = slipway_controller::ControllerConfig {
        api_key,
        default_domain: domain,
        git_url: local_url.clone(),
    };
    tracing::info!(data_dir = %data_dir.display(), "controller API on {local_url}");
    slipway_controller::serve(listener, Arc::new(store), config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Where a client on this machine reaches a server bound to `addr` (0.0.0.0 → 127.0.0.1).
fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

fn default_data_dir() -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/slipway"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("slipway"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/slipway"))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// The API key lives in the data dir, readable by its owner only. Created on first start.
fn load_or_create_key(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_string()),
        Ok(_) => anyhow::bail!(
            "the API key file {} is empty: delete it to generate a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the API key {}", path.display()));
        }
    }
    let key = slipway_controller::generate_api_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the API key file {}", path.display()))?;
    writeln!(file, "{key}")?;
    tracing::info!("generated a new API key in {}", path.display());
    Ok(key)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
