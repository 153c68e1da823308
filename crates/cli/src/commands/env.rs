//! `env`, `env set`, `env unset`, `env get`: environment variables of the app (or, with `-t`,
//! of one process type). Releases are immutable, so each change makes a new release.

use super::parse_pairs;
use crate::commands::release::change_release;
use crate::context::{AppFlag, Ctx};
use crate::output::print_json;
use anyhow::{Result, anyhow, bail};
use slipway_types::{NewRelease, StringMap};

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// Use the env of this process type instead of the app-wide env
    #[arg(short = 't', long = "process-type", value_name = "TYPE", global = true)]
    process_type: Option<String>,
    /// Print JSON instead of KEY=VALUE lines
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<EnvCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum EnvCmd {
    /// Set variables: env set KEY=VALUE…
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove variables: env unset KEY…
    Unset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print one variable's value
    Get {
        #[arg(value_name = "KEY")]
        key: String,
    },
}

/// The env map a command works on: the release's, or a process type's with `-t`.
fn env_of<'a>(
    release: &'a mut NewRelease,
    process_type: Option<&str>,
) -> Result<&'a mut StringMap> {
    match process_type {
        None => Ok(&mut release.env),
        Some(t) => release
            .processes
            .get_mut(t)
            .map(|p| &mut p.env)
            .ok_or_else(|| anyhow!("unknown process type {t:?}")),
    }
}

pub async fn run(ctx: &Ctx, args: EnvArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    let t = args.process_type.as_deref();
    match args.cmd {
        None => {
            let mut current = current(&client, &app).await?;
            let env = env_of(&mut current, t)?;
            if args.json {
                return print_json(env);
            }
            for (k, v) in env.iter() {
                println!("{k}={v}");
            }
            Ok(())
        }
        Some(EnvCmd::Get { key }) => {
            let mut current = current(&client, &app).await?;
            match env_of(&mut current, t)?.get(&key) {
                Some(v) => {
                    println!("{v}");
                    Ok(())
                }
                None => bail!("{key} is not set"),
            }
        }
        Some(EnvCmd::Set { pairs }) => {
            let pairs = parse_pairs(&pairs)?;
            change_release(&client, &app, |r| {
                env_of(r, t)?.extend(pairs);
                Ok(())
            })
            .await
            .map(drop)
        }
        Some(EnvCmd::Unset { keys }) => change_release(&client, &app, |r| {
            let env = env_of(r, t)?;
            for k in &keys {
                env.remove(k);
            }
            Ok(())
        })
        .await
        .map(drop),
    }
}

/// The current release's config (empty when the app has none yet).
async fn current(client: &slipway_client::Client, app: &str) -> Result<NewRelease> {
    Ok(client
        .current_release(app)
        .await?
        .map(|r| NewRelease::from_release(&r))
        .unwrap_or_default())
}
