//! `meta`, `meta set`, `meta unset`: the app's free-form metadata (a string map on the app,
//! not on releases, so changing it makes no release).

use super::parse_pairs;
use crate::context::{AppFlag, Ctx};
use crate::output::{print_json, print_table};
use anyhow::Result;
use slipway_types::AppUpdate;

#[derive(clap::Args, Debug)]
pub struct MetaArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<MetaCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum MetaCmd {
    /// Set keys: meta set KEY=VALUE…
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove keys: meta unset KEY…
    Unset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, args: MetaArgs) -> Result<()> {
    let client = ctx.client()?;
    let name = ctx.app(&args.app)?;
    let app = client.app(&name).await?;
    let mut meta = app.meta.clone();
    match args.cmd {
        None => {
            if args.json {
                return print_json(&meta);
            }
            let rows = meta.into_iter().map(|(k, v)| vec![k, v]).collect();
            print_table(&["KEY", "VALUE"], rows);
            return Ok(());
        }
        Some(MetaCmd::Set { pairs }) => meta.extend(parse_pairs(&pairs)?),
        Some(MetaCmd::Unset { keys }) => {
            for k in &keys {
                meta.remove(k);
            }
        }
    }
    // The update replaces the whole map: send it complete.
    let update = AppUpdate {
        meta: Some(meta),
        ..Default::default()
    };
    client.update_app(&app.id.to_string(), &update).await?;
    Ok(())
}
