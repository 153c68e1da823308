//! `cluster`, `cluster add`, `cluster remove`, `cluster default`: the clusters in the config
//! file. Works offline: nothing here talks to a server.

use crate::config::{Config, config_path};
use crate::context::Ctx;
use crate::output::{print_json, print_table};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Print JSON instead of a table (API keys are left out)
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<ClusterCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum ClusterCmd {
    /// Add a cluster: cluster add NAME URL KEY (the first one added becomes the default)
    Add {
        /// Make it the default cluster
        #[arg(short = 'd', long = "default")]
        default: bool,
        /// Replace a cluster of the same name
        #[arg(short = 'f', long = "force")]
        force: bool,
        name: String,
        /// The server's URL, e.g. http://10.0.0.1:8080
        url: String,
        /// The server's API key (in <data-dir>/api-key on the server)
        key: String,
    },
    /// Remove a cluster from the config
    #[command(visible_alias = "rm")]
    Remove { name: String },
    /// Print the default cluster, or make NAME the default
    Default { name: Option<String> },
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    url: &'a str,
    default: bool,
}

pub fn run(_ctx: &Ctx, args: ClusterArgs) -> Result<()> {
    let path = config_path()?;
    let mut config = Config::load(&path)?;
    match args.cmd {
        None => {
            let default = config.default_entry();
            let listed: Vec<Listed> = config
                .clusters
                .iter()
                .map(|(name, c)| Listed {
                    name,
                    url: &c.url,
                    default: Some(name.as_str()) == default,
                })
                .collect();
            if args.json {
                return print_json(&listed);
            }
            let rows = listed
                .iter()
                .map(|c| {
                    let mut name = c.name.to_string();
                    if c.default {
                        name.push_str(" (default)");
                    }
                    vec![name, c.url.to_string()]
                })
                .collect();
            print_table(&["NAME", "URL"], rows);
        }
        Some(ClusterCmd::Add {
            default,
            force,
            name,
            url,
            key,
        }) => {
            config.add(&name, &url, &key, default, force)?;
            config.save(&path)?;
            println!("Cluster \"{name}\" added.");
        }
        Some(ClusterCmd::Remove { name }) => {
            config.remove(&name)?;
            config.save(&path)?;
            println!("Cluster \"{name}\" removed.");
        }
        Some(ClusterCmd::Default { name: None }) => match config.default_entry() {
            Some(name) => println!("{name}"),
            None => anyhow::bail!("no default cluster (see `slipway cluster`)"),
        },
        Some(ClusterCmd::Default { name: Some(name) }) => {
            config.set_default(&name)?;
            config.save(&path)?;
            println!("\"{name}\" is now the default cluster.");
        }
    }
    Ok(())
}
