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
    #[command(flatten)]
    Agent(Box<slipway_host::cli::HostCommand>),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
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
