//! `slipway host …`: the host agent's daemon and debugging commands. Lives here (not in the CLI
//! crate) so that `slipway` and the standalone `slipway-host-agent` offer exactly the same.

use crate::api::HostApi;
use crate::client::HttpHost;
use crate::runc::RuncConfig;
use crate::runc::network::NetworkConfig;
use crate::types::*;
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
// The one parser of sizes (`512MB`, `1.5G`, …), the same as the API's limits.
use slipway_types::units::parse_bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default address of the host API (Flynn's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1113";

/// Arguments of `slipway host`.
#[derive(clap::Args, Debug)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum HostCommand {
    /// Run the host agent: runs jobs as runc containers and serves the host API
    Daemon(DaemonArgs),
    /// Start a job on a host agent and show its output (like `docker run`)
    RunJob(RunJobArgs),
    /// List the jobs of a host agent
    Ps(ClientArgs),
    /// Show one job as JSON
    Inspect(IdArgs),
    /// Stop a job: SIGTERM, then SIGKILL after its grace period
    Stop(IdArgs),
    /// Wait until a job has finished and is cleaned up; exits with the job's exit code
    Wait(IdArgs),
    /// Send a signal to a job
    Signal(SignalArgs),
    /// Show a job's output
    Log(LogArgs),
    /// Show the host's id, capacity and job count
    Status(ClientArgs),
    /// Build and manage stacks (the base root filesystems of jobs)
    Stack(StackArgs),
    /// The per-job shim (started by the agent; not for humans)
    #[command(hide = true)]
    Shim { dir: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Where jobs, logs, stacks and runc state live
    #[arg(
        long,
        env = "SLIPWAY_HOST_DATA_DIR",
        default_value = "/var/lib/slipway/host"
    )]
    pub data_dir: PathBuf,
    /// Address of the host API (use port 0 for any free port)
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Host id [default: generated once and kept in DATA_DIR/host-id]
    #[arg(long)]
    pub id: Option<String>,
    /// Host tags, KEY=VALUE (repeatable)
    #[arg(long = "tag", value_parser = parse_kv)]
    pub tags: Vec<(String, String)>,
    /// URL of the blob store jobs' layers are fetched from: the controller's URL (`slipway
    /// server` serves it under /blobs). Without it, jobs with layers (slugs, images) fail.
    #[arg(long, env = "SLIPWAY_BLOB_STORE_URL")]
    pub blob_store: Option<String>,
    /// API key of the blob store (the controller's key).
    #[arg(long, env = "SLIPWAY_BLOB_STORE_KEY", hide_env_values = true)]
    pub blob_store_key: Option<String>,
    /// A file holding the cluster token the host API requires (the controller's
    /// `<data dir>/cluster-token`), or put it in `SLIPWAY_CLUSTER_TOKEN`. Default:
    /// DATA_DIR/cluster-token, generated on first start.
    #[arg(long, env = "SLIPWAY_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

/// How the host runs containers: names that must be unique per agent on a machine. Flatten it
/// into any command that embeds an agent (e.g. `slipway server`) and call [`RuntimeArgs::config`].
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Bridge the jobs' veths are plugged into
    #[arg(long, default_value = "slipway0")]
    pub bridge: String,
    /// Subnet jobs get their IPs from
    #[arg(long, default_value = "100.100.0.0/16")]
    pub subnet: String,
    /// nftables table (family ip) for the NAT rule
    #[arg(long, default_value = "slipway")]
    pub nft_table: String,
    /// cgroup below which job cgroups are created
    #[arg(long, default_value = "slipway")]
    pub cgroup_parent: String,
    /// Where stacks are built and looked up [default: DATA_DIR/stacks]
    #[arg(long)]
    pub stacks_dir: Option<PathBuf>,
    /// The runc binary
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// Static init run as every container's PID 1 (forwards signals, reaps zombies); `none`
    /// runs the job's command as PID 1 (which then ignores SIGTERM unless it handles it)
    #[arg(long, default_value = crate::runc::DEFAULT_INIT)]
    pub container_init: PathBuf,
    /// Processes and threads all jobs together may run (pids.max of the cgroup parent), so that
    /// jobs at their own limits cannot exhaust the host's pids [default: 3/4 of kernel.pid_max]
    #[arg(long, value_parser = clap::value_parser!(u64).range(64..=4_194_304))]
    pub jobs_max_procs: Option<u64>,
}

impl RuntimeArgs {
    /// The runc runtime configuration for an agent keeping its state in `data_dir`.
    pub fn config(&self, data_dir: &std::path::Path) -> Result<RuncConfig> {
        let mut rc = RuncConfig::new(data_dir);
        let (subnet, prefix) = NetworkConfig::parse_subnet(&self.subnet)?;
        rc.network = NetworkConfig {
            bridge: self.bridge.clone(),
            subnet,
            prefix,
            nft_table: self.nft_table.clone(),
        };
        rc.cgroup_parent = self.cgroup_parent.clone();
        rc.runc = self.runc.clone();
        rc.jobs_max_procs = self.jobs_max_procs;
        rc.init = (self.container_init != std::path::Path::new("none"))
            .then(|| self.container_init.clone());
        if let Some(s) = &self.stacks_dir {
            rc.stacks_dir = s.clone();
        }
        Ok(rc)
    }
}

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Host API URL
    #[arg(
        long = "host-url",
        env = "SLIPWAY_HOST_URL",
        default_value = "http://127.0.0.1:1113"
    )]
    pub url: String,
    /// A file holding the host API's cluster token, or put it in `SLIPWAY_CLUSTER_TOKEN`.
    /// Default: cluster-token in the host's data dir (`SLIPWAY_HOST_DATA_DIR`, else
    /// /var/lib/slipway/host).
    #[arg(long, env = "SLIPWAY_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The host API at `--host-url` with the cluster token.
    fn api(&self) -> Result<HttpHost> {
        let data = std::env::var_os("SLIPWAY_HOST_DATA_DIR")
            .map_or_else(|| PathBuf::from("/var/lib/slipway/host"), PathBuf::from);
        let default = data.join(crate::http::CLUSTER_TOKEN_FILE);
        let token = crate::http::cluster_token(self.cluster_token_file.as_deref(), &default)?
            .with_context(|| {
                format!(
                    "the host API needs the cluster token: set SLIPWAY_CLUSTER_TOKEN or --cluster-token-file (no {})",
                    default.display()
                )
            })?;
        Ok(HttpHost::new(&self.url, &token))
    }
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct SignalArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
    /// TERM, SIGUSR1, 9…
    pub signal: String,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
    /// Keep streaming until the job exits
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunJobArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Stack name (or absolute rootfs path)
    #[arg(long, default_value = "busybox")]
    pub stack: String,
    /// Job id [default: random]
    #[arg(long)]
    pub id: Option<String>,
    /// Environment variable KEY=VALUE (repeatable)
    #[arg(short, long = "env", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Port the job listens on (exported as PORT)
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Memory limit, e.g. 256MB, 1G
    #[arg(short, long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// CPU in milli-CPUs (1000 = one core)
    #[arg(long)]
    pub cpu: Option<u64>,
    /// Use the host's network instead of an own IP
    #[arg(long)]
    pub host_network: bool,
    /// Stop grace period in seconds
    #[arg(long)]
    pub grace: Option<u64>,
    /// Print the job id and return at once instead of streaming output
    #[arg(short, long)]
    pub detach: bool,
    /// The command to run
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StackArgs {
    #[command(subcommand)]
    pub command: StackCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum StackCommand {
    /// Build a stack (busybox: < 1 s; bookworm: debootstrap, about a minute)
    Build {
        name: String,
        /// [default: /var/lib/slipway/host/stacks]
        #[arg(long, env = "SLIPWAY_STACKS_DIR")]
        stacks_dir: Option<PathBuf>,
    },
    /// List the stacks this binary knows and whether they are built
    List {
        #[arg(long, env = "SLIPWAY_STACKS_DIR")]
        stacks_dir: Option<PathBuf>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn default_stacks(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from("/var/lib/slipway/host/stacks"))
}

/// Runs `slipway host …`. The shim never returns; everything else returns when done.
pub async fn run(args: HostArgs) -> Result<()> {
    match args.command {
        HostCommand::Shim { dir } => crate::shim::main(&dir),
        HostCommand::Daemon(d) => daemon(d).await,
        HostCommand::RunJob(r) => run_job(r).await,
        HostCommand::Ps(c) => ps(&c.api()?).await,
        HostCommand::Inspect(i) => {
            let j = i.client.api()?.get_job(&i.id).await?;
            println!("{}", serde_json::to_string_pretty(&j)?);
            Ok(())
        }
        HostCommand::Stop(i) => {
            i.client.api()?.stop_job(&i.id).await?;
            println!("stopping {}", i.id);
            Ok(())
        }
        HostCommand::Wait(i) => {
            let done = i.client.api()?.wait_job(&i.id).await?;
            report_exit(&i.id, &done)
        }
        HostCommand::Signal(s) => {
            let sig = parse_signal(&s.signal)
                .with_context(|| format!("unknown signal {:?} (try TERM, USR1, 9)", s.signal))?;
            s.client.api()?.signal_job(&s.id, sig).await?;
            Ok(())
        }
        HostCommand::Log(l) => {
            let mut logs = l.client.api()?.logs(&l.id, l.follow).await?;
            while let Some(line) = logs.next().await {
                print_line(&line);
            }
            Ok(())
        }
        HostCommand::Status(c) => {
            let s = c.api()?.status().await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        HostCommand::Stack(StackArgs { command }) => match command {
            StackCommand::Build { name, stacks_dir } => {
                let dir = default_stacks(stacks_dir);
                let r = tokio::task::spawn_blocking(move || crate::stack::build(&dir, &name, true))
                    .await??;
                println!("{}", r.display());
                Ok(())
            }
            StackCommand::List { stacks_dir } => {
                let dir = default_stacks(stacks_dir);
                for (name, _) in crate::stack::STACKS {
                    let state = match crate::stack::built(&dir, name) {
                        Some(p) => format!("built at {}", p.display()),
                        None => "not built".into(),
                    };
                    println!("{name:10} {state}");
                }
                Ok(())
            }
        },
    }
}

async fn daemon(d: DaemonArgs) -> Result<()> {
    let rc = d.runtime.config(&d.data_dir)?;
    let mut ac = crate::AgentConfig::new(&d.data_dir);
    if let Some(id) = d.id {
        ac.id = id;
    }
    ac.tags = d.tags.into_iter().collect();
    if let Some(url) = d.blob_store {
        ac.blobs = Some(std::sync::Arc::new(slipway_blobstore::HttpBlobStore::new(
            url,
            d.blob_store_key,
        )));
    }
    let default = d.data_dir.join(crate::http::CLUSTER_TOKEN_FILE);
    let token = match crate::http::cluster_token(d.cluster_token_file.as_deref(), &default)? {
        Some(t) => t,
        None => new_token(&default)?,
    };
    let host = crate::daemon::start(rc, ac, Some((d.listen, token))).await?;
    // Tests and scripts wait for this line.
    println!("listening on {}", host.addr.expect("listen address"));
    tokio::select! {
        r = host.serve_forever() => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("host agent stopping; jobs keep running and will be re-adopted");
            Ok(())
        }
    }
}

/// A new cluster token (256 bits from the OS) in `path` (0600), for a daemon given none.
fn new_token(path: &std::path::Path) -> Result<String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the cluster token file {}", path.display()))?;
    writeln!(f, "{token}")?;
    eprintln!(
        "generated a cluster token for the host API in {}",
        path.display()
    );
    Ok(token)
}

fn print_line(l: &LogLine) {
    let ts =
        l.ts.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
    if l.stream == "stdout" {
        println!("{ts} {}", l.msg);
    } else {
        println!("{ts} [{}] {}", l.stream, l.msg);
    }
}

async fn run_job(r: RunJobArgs) -> Result<()> {
    let api = r.client.api()?;
    let id =
        r.id.unwrap_or_else(|| format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let mut config = JobConfig::new(&r.stack, &[]);
    config.args = r.command;
    config.env = r.env.into_iter().collect::<BTreeMap<_, _>>();
    config.host_network = r.host_network;
    config.stop_grace_ms = r.grace.map(|s| s * 1000);
    if let Some(p) = r.port {
        config.ports.push(PortSpec {
            port: p,
            proto: "tcp".into(),
            check: None,
        });
    }
    let job = HostJob {
        id: id.clone(),
        app_id: String::new(),
        app_name: String::new(),
        release_id: String::new(),
        process_type: "run".into(),
        metadata: BTreeMap::new(),
        config,
        resources: Resources {
            memory_bytes: r.memory,
            cpu_milli: r.cpu,
            ..Default::default()
        },
    };
    let info = api.add_job(job).await?;
    if info.status == JobStatus::Failed {
        bail!("{}", info.error.unwrap_or_else(|| "the job failed".into()));
    }
    if r.detach {
        println!("{id}");
        if let Some(ip) = info.ip {
            eprintln!("job {id} running at {ip}");
        }
        return Ok(());
    }
    let mut logs = api.logs(&id, true).await?;
    while let Some(line) = logs.next().await {
        print_line(&line);
    }
    let done = api.wait_job(&id).await?;
    report_exit(&id, &done)
}

/// Says how a finished job ended and exits with its code (like `docker run`).
fn report_exit(id: &str, done: &JobInfo) -> Result<()> {
    match &done.exit {
        Some(e) if e.code == 0 => Ok(()),
        Some(e) => {
            eprintln!("job {id}: {e}");
            std::process::exit(e.code.clamp(1, 255));
        }
        None => bail!(
            "job {id}: {}",
            done.error
                .clone()
                .unwrap_or_else(|| "no exit status".into())
        ),
    }
}

async fn ps(api: &dyn HostApi) -> Result<()> {
    let jobs = api.list_jobs().await?;
    println!(
        "{:<28} {:<9} {:<4} {:<16} {:<22} COMMAND",
        "ID", "STATUS", "UP", "IP", "EXIT"
    );
    for j in jobs {
        let exit = j.exit.as_ref().map(|e| e.to_string()).unwrap_or_default();
        println!(
            "{:<28} {:<9} {:<4} {:<16} {:<22} {}",
            j.job.id,
            serde_json::to_value(j.status)?.as_str().unwrap_or(""),
            if j.up { "yes" } else { "" },
            j.ip.map(|i| i.to_string()).unwrap_or_default(),
            exit,
            j.job.config.args.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_flynn() {
        assert_eq!(parse_bytes("512MB"), Ok(512 << 20));
        assert_eq!(parse_bytes("12k"), Ok(12 << 10));
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
