//! `slipway host list` (also `slipway hosts`): the cluster's hosts as the controller's
//! scheduler follows them. `slipway host` is also the host agent's own command group
//! (`slipway host daemon`, `ps`, …, from `slipway_host::cli`); `list` is added beside those
//! here, so the agent's commands and the standalone `slipway-host-agent` stay as they are.

use crate::context::Ctx;
use crate::output::{ago, print_json, print_table};
use anyhow::Result;
use slipway_types::HostInfo;

/// Arguments of `slipway host`: `list`, or one of the host agent's commands.
#[derive(clap::Args, Debug)]
pub struct HostGroupArgs {
    #[command(subcommand)]
    pub command: HostGroupCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum HostGroupCmd {
    /// List the cluster's hosts: id, state, API address, running jobs, tags (from the controller)
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Move a host's jobs elsewhere before maintenance (start new, route, then stop old);
    /// no new job goes there until `host undrain`
    Drain(DrainArgs),
    /// Let a drained host take jobs again
    Undrain(UndrainArgs),
    /// Run this machine as a host (and router) of a cluster on etcd: `slipway server --roles
    /// host,router --etcd URL --host-listen ADDR` with the cluster token checked first
    Join(JoinArgs),
    #[command(flatten)]
    Agent(Box<slipway_host::cli::HostCommand>),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The host's id (`slipway host list`)
    pub host: String,
    /// Return once the drain is recorded, without waiting for the jobs to move
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the jobs to move (seconds)
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// The cluster's etcd client URLs, comma-separated (e.g. http://10.0.0.1:2379)
    #[arg(long, env = "SLIPWAY_ETCD")]
    pub etcd: String,
    /// A file holding the cluster token (`slipway cluster token` prints it); or set
    /// SLIPWAY_CLUSTER_TOKEN (never on the command line: other users see arguments)
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// The address of this machine's host API, which the schedulers connect to: this
    /// machine's IP on the cluster network and a port (e.g. 10.0.0.2:1113)
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// Roles of this machine
    #[arg(long, default_value = "host,router")]
    pub roles: String,
    /// A controller's URL, where the router reads its routes (with the API key:
    /// SLIPWAY_API_KEY or --api-key-file)
    #[arg(long)]
    pub controller_url: Option<String>,
    /// A file holding the API key (`<data dir>/api-key` on a controller)
    #[arg(long)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Where this machine keeps its state
    #[arg(long, default_value = "/var/lib/slipway")]
    pub data_dir: std::path::PathBuf,
    /// The overlay network between the machines' jobs (`vxlan`, `host-gw` for machines on one
    /// L2 segment, or `none`: only for hosts sharing one network namespace, e.g. tests); every
    /// host of a cluster uses the same one
    #[arg(long, env = "SLIPWAY_OVERLAY", default_value = "vxlan")]
    pub overlay: String,
    /// Any other `slipway server` flag, after `--` (e.g. -- --host-tag disk=ssd)
    #[arg(last = true)]
    pub server_args: Vec<String>,
}

/// `slipway host join`: checks that a token is given, then becomes `slipway server` with the
/// host's flags (the server checks the token against the cluster's before it registers).
pub fn join(args: JoinArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let from_env = std::env::var("SLIPWAY_CLUSTER_TOKEN").is_ok_and(|t| !t.trim().is_empty());
    if args.token_file.is_none() && !from_env {
        anyhow::bail!(
            "the cluster token is needed: --token-file FILE or SLIPWAY_CLUSTER_TOKEN (on a \
             controller, `slipway cluster token` prints it)"
        );
    }
    if args.listen.ip().is_unspecified() {
        anyhow::bail!(
            "--listen {}: give this machine's address on the cluster network (the schedulers \
             connect to it), not a wildcard",
            args.listen
        );
    }
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["server", "--roles", &args.roles, "--etcd", &args.etcd])
        .arg("--host-listen")
        .arg(args.listen.to_string())
        .arg("--data-dir")
        .arg(&args.data_dir)
        .args(["--overlay", &args.overlay])
        .arg("--no-register");
    if let Some(f) = &args.token_file {
        cmd.arg("--cluster-token-file").arg(f);
    }
    if let Some(url) = &args.controller_url {
        cmd.args(["--controller-url", url]);
    }
    if let Some(f) = &args.api_key_file {
        cmd.arg("--api-key-file").arg(f);
    }
    cmd.args(&args.server_args);
    Err(anyhow::anyhow!(cmd.exec()).context("cannot run `slipway server`"))
}

#[derive(clap::Args, Debug)]
pub struct UndrainArgs {
    /// The host's id
    pub host: String,
}

/// `slipway host drain HOST`: records the drain, then shows the jobs moving until none is
/// left ("moved 3 of 4 jobs").
pub async fn drain(ctx: &Ctx, args: DrainArgs) -> Result<()> {
    let client = ctx.client()?;
    let first = client.drain_host(&args.host).await?;
    let total = first.jobs_left;
    println!(
        "host {} drained: no new job goes there; {total} job(s) to move",
        args.host
    );
    if args.no_wait || total == 0 {
        return Ok(());
    }
    // Alone, its jobs have nowhere to go: they stay (nothing is stopped), say so now rather
    // than after the whole timeout.
    let others = client.hosts().await?;
    if !others
        .iter()
        .any(|h| h.id != args.host && h.state == slipway_types::HostState::Up)
    {
        anyhow::bail!(
            "no other host takes jobs: the {total} job(s) on host {} stay there and keep \
             running (nothing was stopped), and new jobs wait (`blocked`) until another host \
             joins or `slipway host undrain {}`",
            args.host,
            args.host
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    let mut shown = 0;
    loop {
        let now = client.drain_status(&args.host).await?;
        let moved = total.saturating_sub(now.jobs_left);
        if moved != shown {
            shown = moved;
            println!("moved {moved} of {total} jobs");
        }
        if now.jobs_left == 0 {
            println!("host {} has no job left: ready for maintenance", args.host);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} job(s) still on host {} after {} s: `slipway ps` on the apps says why \
                 (a replacement that cannot start elsewhere, e.g. no other host matches its tags); \
                 the host stays drained",
                now.jobs_left,
                args.host,
                args.timeout
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub async fn undrain(ctx: &Ctx, args: UndrainArgs) -> Result<()> {
    ctx.client()?.undrain_host(&args.host).await?;
    println!("host {} takes jobs again", args.host);
    Ok(())
}

pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let hosts = ctx.client()?.hosts().await?;
    if args.json {
        return print_json(&hosts);
    }
    print_table(
        &["ID", "STATE", "ADDRESS", "JOBS", "TAGS", "SINCE"],
        hosts.iter().map(row).collect(),
    );
    Ok(())
}

/// One table row; an agent inside the server's process has no API address of its own.
fn row(h: &HostInfo) -> Vec<String> {
    let tags = h
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        h.id.clone(),
        h.state.as_str().to_string(),
        h.addr.clone().unwrap_or_else(|| "in-process".into()),
        h.jobs.to_string(),
        if tags.is_empty() { "-".into() } else { tags },
        ago(&h.since),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::{HostState, Timestamp};

    #[test]
    fn a_row_names_state_address_and_tags() {
        let mut h = HostInfo {
            id: "h1".into(),
            state: HostState::ShuttingDown,
            addr: None,
            tags: [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into(),
            jobs: 3,
            since: Timestamp::now(),
        };
        assert_eq!(
            row(&h),
            [
                "h1",
                "shutting down",
                "in-process",
                "3",
                "a=1,b=2",
                "just now"
            ]
        );
        h.tags.clear();
        h.addr = Some("10.0.0.2:1113".into());
        assert_eq!(row(&h)[2..5], ["10.0.0.2:1113", "3", "-"]);
    }
}
