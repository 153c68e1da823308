//! `limit` and `limit set`: resource limits per process type, kept in the release (so a change
//! makes a new release, like `env`).

use crate::commands::release::change_release;
use crate::context::{AppFlag, Ctx};
use crate::output::{print_json, print_table};
use anyhow::{Result, anyhow, bail};
use slipway_types::{Resources, units::format_bytes};
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct LimitArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Only this process type
    #[arg(short = 't', long = "process-type", value_name = "TYPE")]
    process_type: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<LimitCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum LimitCmd {
    /// Set limits of a process type: limit set web memory=512MB disk=2GB cpu=500 max_fd=1024 max_procs=100
    #[command(
        after_help = "memory and disk take B, KB, MB, GB (binary: 512MB = 512 MiB); disk \
                            (default 1GB, 16MB to 1TB) bounds what a job writes outside \
                            tmpfs; cpu is milli-CPU (1000 = one core)"
    )]
    Set {
        #[arg(value_name = "TYPE")]
        process_type: String,
        #[arg(required = true, value_name = "LIMIT=VALUE")]
        limits: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, args: LimitArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    match args.cmd {
        None => {
            let release = client.current_release(&app).await?;
            let mut limits: BTreeMap<String, Resources> = release
                .map(|r| {
                    r.processes
                        .into_iter()
                        .map(|(t, p)| (t, p.resources))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(t) = &args.process_type {
                let one = limits
                    .remove(t)
                    .ok_or_else(|| anyhow!("unknown process type {t:?}"))?;
                limits = BTreeMap::from([(t.clone(), one)]);
            }
            if args.json {
                return print_json(&limits);
            }
            let show = |v: Option<String>| v.unwrap_or_else(|| "default".into());
            let rows = limits
                .into_iter()
                .map(|(t, r)| {
                    vec![
                        t,
                        show(r.memory.map(format_bytes)),
                        show(r.disk.map(format_bytes)),
                        show(r.cpu.map(|c| format!("{c}m"))),
                        show(r.max_fd.map(|n| n.to_string())),
                        show(r.max_procs.map(|n| n.to_string())),
                    ]
                })
                .collect();
            print_table(
                &["TYPE", "MEMORY", "DISK", "CPU", "MAX_FD", "MAX_PROCS"],
                rows,
            );
            Ok(())
        }
        Some(LimitCmd::Set {
            process_type,
            limits,
        }) => {
            let pairs = super::parse_pairs(&limits)?;
            change_release(&client, &app, |r| {
                let Some(p) = r.processes.get_mut(&process_type) else {
                    bail!("unknown process type {process_type:?}");
                };
                for (k, v) in &pairs {
                    p.resources.set(k, v).map_err(|e| anyhow!(e))?;
                }
                Ok(())
            })
            .await
            .map(drop)
        }
    }
}
