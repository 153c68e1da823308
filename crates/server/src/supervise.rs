//! `slipway supervise` (docs/restarts.md): Slipway as two children of the same binary — the
//! server without the router (`slipway server --no-router` + the flags given) and the router
//! process following it — so that either restarts without the other, and an upgrade replaces
//! the router by the handoff (no connection refused) and then the server.
//!
//! - A child that exits unexpectedly is started again after 250 ms, doubling to 10 s; the delay
//!   is reset once it has run 30 s.
//! - SIGHUP: upgrade from the binary at the path the supervisor was started from, as it is on
//!   disk now: a new router (it takes the ports over; the old one exits by itself), then the
//!   server (SIGTERM, wait, start).
//! - SIGTERM/SIGINT: SIGTERM to both, wait (the drain timeout and a margin), exit 0. Jobs keep
//!   running; the next server adopts them.
//! - A previous supervisor killed with SIGKILL leaves its children: its server (named in
//!   `<data dir>/server.pid`) is stopped before a new one starts on the same data dir; its
//!   router is replaced by the new router's handoff.

mod flags;
mod proc;

pub use flags::{local_url, router_flags, server_flags};

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

/// `slipway supervise`'s own flags; the server's follow.
#[derive(clap::Args, Debug)]
pub struct SuperviseArgs {
    /// Where the supervisor writes its pid and start time [default: <data dir>/supervise.pid]
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// The router process's data dir [default: <data dir>/router]
    #[arg(long)]
    pub router_data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub server: crate::ServerArgs,
}

/// What [`run`] needs, resolved by the binary.
pub struct Supervise {
    pub args: SuperviseArgs,
    /// The flags given after `supervise`, passed on to the children.
    pub argv: Vec<String>,
    /// The binary's path; started again from there at SIGHUP.
    pub exe: PathBuf,
    pub data_dir: PathBuf,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A child that ran this long before exiting is started again at once.
const STABLE: Duration = Duration::from_secs(30);
/// How long a new server gets to answer on its port before the router starts anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One child and its restart state.
struct Slot {
    name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    started: tokio::time::Instant,
    backoff: Duration,
    /// When it is to be started again after an unexpected exit.
    restart_at: Option<tokio::time::Instant>,
}

impl Slot {
    /// The running child's pid.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    fn new(name: &'static str, args: Vec<String>) -> Slot {
        Slot {
            name,
            args,
            child: None,
            started: tokio::time::Instant::now(),
            backoff: FIRST_BACKOFF,
            restart_at: None,
        }
    }

    fn start(&mut self, exe: &std::path::Path) -> Result<u32> {
        let child = proc::spawn(exe, &self.args)?;
        let pid = child.id().unwrap_or_default();
        tracing::info!("supervise: {} started (pid {pid})", self.name);
        self.child = Some(child);
        self.started = tokio::time::Instant::now();
        self.restart_at = None;
        Ok(pid)
    }

    /// Completes when the running child exits (never without one).
    async fn exited(&mut self) -> std::process::ExitStatus {
        match self.child.as_mut() {
            Some(c) => c.wait().await.unwrap_or_default(),
            None => std::future::pending().await,
        }
    }

    /// After an unexpected exit: schedules the restart with backoff.
    fn crashed(&mut self, status: std::process::ExitStatus) {
        self.child = None;
        if self.started.elapsed() >= STABLE {
            self.backoff = FIRST_BACKOFF;
        }
        tracing::warn!(
            "supervise: the {} exited unexpectedly ({status}) after {:?}: starting it again in {:?}",
            self.name,
            self.started.elapsed(),
            self.backoff
        );
        self.restart_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// SIGTERMs the child and waits `grace` for it, then SIGKILLs it.
    async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            proc::signal(pid, "TERM");
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => tracing::info!("supervise: the {} exited ({:?})", self.name, status.ok()),
            Err(_) => {
                tracing::warn!(
                    "supervise: the {} did not exit within {grace:?}: SIGKILL",
                    self.name
                );
                let _ = child.kill().await;
            }
        }
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub async fn run(sv: Supervise) -> Result<()> {
    crate::init_tracing_as(sv.args.server.log_format == "json");
    let args = &sv.args.server;
    for (flag, addr) in [
        ("--listen", args.listen),
        ("--discovery-listen", args.routing.discovery_listen),
    ] {
        if addr.port() == 0 {
            bail!("supervise: {flag} needs a fixed port (the router follows it across restarts)");
        }
    }
    // The children inherit the environment: the server child would run only these roles (and
    // `router` alone would even make it pass for a router process to the handoff).
    if std::env::var_os("SLIPWAY_ROLES").is_some_and(|v| !v.is_empty()) {
        bail!(
            "supervise runs every role, the router in a process of its own: SLIPWAY_ROLES is set \
             in its environment (unset it; run `slipway server` for another split)"
        );
    }
    let data = &sv.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let pid_file = sv
        .args
        .pid_file
        .clone()
        .unwrap_or_else(|| data.join("supervise.pid"));
    // One supervisor per data dir, whatever pid file each was given (the systemd unit's is
    // /run/slipway.pid): held until this process ends (not inherited by the children).
    let lock_path = data.join("supervise.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "a supervisor already runs on {} ({} is locked): SIGHUP it to upgrade, SIGTERM it to stop",
            data.display(),
            lock_path.display()
        ),
        // A filesystem without locks: the pid file checks below are all there is.
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!("supervise: cannot lock {}: {e}", lock_path.display())
        }
    }
    if let Some((pid, _)) = proc::live_pid(&pid_file, "supervise") {
        bail!(
            "a supervisor already runs (pid {pid}, {}): SIGHUP it to upgrade, SIGTERM it to stop",
            pid_file.display()
        );
    }
    proc::write_pid(&pid_file, std::process::id())?;
    let server_pid = data.join("server.pid");
    let grace = args.drain_timeout + Duration::from_secs(15);
    // The router's own drain (`--router-drain-timeout`), not the server's, bounds its stop.
    let router_grace = args.routing.router_drain_timeout + Duration::from_secs(15);
    if let Some((pid, started)) = proc::live_pid(&server_pid, "server") {
        proc::stop_orphan(pid, started, "server", grace).await;
    }
    let router_dir = sv
        .args
        .router_data_dir
        .clone()
        .unwrap_or_else(|| data.join("router"));
    let inputs = flags::RouterInputs {
        data_dir: &router_dir,
        controller_url: &local_url(args.listen),
        discovery_url: &local_url(args.routing.discovery_listen),
        api_key_file: &args
            .api_key_file
            .clone()
            .unwrap_or_else(|| data.join(crate::identity::API_KEY_FILE)),
        cluster_token_file: &args
            .cluster_token_file
            .clone()
            .unwrap_or_else(|| data.join(crate::identity::CLUSTER_TOKEN_FILE)),
        domain: &args.domain,
    };
    let with_router = !args.routing.no_router;
    let mut server_argv = server_flags(&sv.argv)?;
    if with_router && let Some(admin) = flags::router_admin(args) {
        // The router child registers its admin endpoint in the server's discovery, whose API
        // refuses this host's own addresses (loopback by default): that one address is let
        // through, so the deploy gates ask this router (docs/restarts.md).
        server_argv.extend(["--discovery-allow".to_string(), admin.to_string()]);
    }
    let mut server = Slot::new("server", server_argv);
    let mut router = Slot::new("router", router_flags(&sv.argv, &inputs)?);
    let exe = &sv.exe;

    // The handlers before the children: until they are installed SIGTERM and SIGHUP would end
    // the supervisor at once (their default action), leaving its children running.
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("install the SIGUSR2 handler")?;
    // SIGUSR2: the supervisor itself is replaced (`scripts/up` with a new binary): it exits and
    // leaves its children running; the next supervisor stops the server and restarts it from
    // its own binary, and its router takes the ports over from this one's (docs/restarts.md).
    let mut hand_over = false;
    // Whatever ends this (a signal, or an error such as a pid file that cannot be written),
    // the children are stopped below: none is left running unknown to the next supervisor.
    let result: Result<()> = async {
        let pid = server.start(exe)?;
        proc::write_pid(&server_pid, pid)?;
        // A stop while the server starts (up to READY_TIMEOUT) is not put off until it answers.
        tokio::select! {
            _ = wait_ready(args.listen) => {}
            // A server that exits as it starts is not waited for: started again with backoff.
            status = server.exited() => server.crashed(status),
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = usr2.recv() => {
                hand_over = true;
                return Ok(());
            }
        }
        if with_router {
            router.start(exe)?;
        }
        loop {
            let (server_due, router_due) = (server.restart_at, router.restart_at);
            tokio::select! {
                status = server.exited() => server.crashed(status),
                status = router.exited() => router.crashed(status),
                _ = due(server_due) => {
                    match server.start(exe) {
                        Ok(pid) => proc::write_pid(&server_pid, pid)?,
                        Err(e) => { tracing::warn!("supervise: {e:#}"); server.crashed(Default::default()) }
                    }
                }
                _ = due(router_due) => {
                    if let Err(e) = router.start(exe) {
                        tracing::warn!("supervise: {e:#}");
                        router.crashed(Default::default());
                    }
                }
                _ = hup.recv() => {
                    tracing::info!("supervise: SIGHUP: upgrading from {}", exe.display());
                    if with_router {
                        upgrade_router(&mut router, exe, router_grace).await;
                    }
                    server.stop(grace).await;
                    match server.start(exe) {
                        Ok(pid) => proc::write_pid(&server_pid, pid)?,
                        Err(e) => { tracing::warn!("supervise: {e:#}"); server.crashed(Default::default()) }
                    }
                    tokio::select! {
                        _ = wait_ready(args.listen) => tracing::info!("supervise: upgraded"),
                        status = server.exited() => server.crashed(status),
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr2.recv() => {
                    hand_over = true;
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    if hand_over && result.is_ok() {
        // server.pid and the router's router.pid stay: the next supervisor finds both.
        tracing::info!(
            "supervise: SIGUSR2: exiting for the next supervisor; the server (pid {}) and the router (pid {}) keep running",
            server.pid().map_or("-".into(), |p| p.to_string()),
            router.pid().map_or("-".into(), |p| p.to_string()),
        );
        if proc::live_pid(&pid_file, "supervise").is_some_and(|(p, _)| p == std::process::id()) {
            let _ = std::fs::remove_file(&pid_file);
        }
        drop(lock);
        return Ok(());
    }
    if let Err(e) = &result {
        tracing::error!("supervise: {e:#}");
    }
    tracing::info!("supervise: stopping the router and the server; jobs keep running");
    tokio::join!(router.stop(router_grace), server.stop(grace));
    let _ = std::fs::remove_file(&server_pid);
    if proc::live_pid(&pid_file, "supervise").is_none() {
        let _ = std::fs::remove_file(&pid_file);
    }
    tracing::info!("supervise: stopped");
    drop(lock);
    result
}

/// Starts a new router beside the running one: it takes the ports over (the handoff) and the
/// old one drains and exits by itself. A new one that fails leaves the old one serving.
async fn upgrade_router(router: &mut Slot, exe: &std::path::Path, grace: Duration) {
    let old = router.child.take();
    if let Err(e) = router.start(exe) {
        tracing::warn!("supervise: cannot start the new router, the old one serves on: {e:#}");
        router.child = old;
        return;
    }
    let Some(mut old) = old else { return };
    let bound = crate::router::handoff::LOAD_TIMEOUT + grace;
    tokio::select! {
        _ = old.wait() => tracing::info!("supervise: the new router took over; the old one exited"),
        status = router.exited() => {
            tracing::warn!("supervise: the new router exited ({status}); the old one serves on");
            router.child = Some(old);
        }
        _ = tokio::time::sleep(bound) => {
            tracing::warn!("supervise: the old router still runs {bound:?} after its successor started: SIGKILL");
            let _ = old.kill().await;
        }
    }
}

/// Completes at `at` (never without one).
async fn due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until something accepts on `addr` (the server's API), [`READY_TIMEOUT`] at most.
async fn wait_ready(addr: std::net::SocketAddr) {
    let url = local_url(addr);
    let target = url.trim_start_matches("http://").to_string();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(&target).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("supervise: the server does not answer on {url} after {READY_TIMEOUT:?}");
}
