//! `create`, `apps`, `info`, `delete`: the app's life cycle, and the git remote that ties a
//! repo to its app.

use crate::context::{AppFlag, Ctx};
use crate::git;
use crate::output::{self, ago, print_json, print_table};
use anyhow::{Result, bail};
use slipway_types::{ClusterInfo, NewApp};
use std::io::IsTerminal;

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Name of the git remote to add; "" adds none
    #[arg(short = 'r', long = "remote", value_name = "REMOTE", default_value = git::DEFAULT_REMOTE)]
    remote: String,
    /// Replace an existing git remote of that name without asking
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// The app's name: lowercase letters, digits and dashes [default: a random one]
    name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AppsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    app: AppFlag,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Delete without asking to type the app's name
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// The git remote to remove afterwards (if it points at this app); "" removes none
    #[arg(short = 'r', long = "remote", value_name = "REMOTE", default_value = git::DEFAULT_REMOTE)]
    remote: String,
}

/// The git remote URL of an app.
pub fn git_url(cluster: &ClusterInfo, app: &str) -> String {
    format!("{}/{app}.git", cluster.git_url.trim_end_matches('/'))
}

pub async fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let client = ctx.client()?;
    // Settle the remote question before creating anything, so a "no" leaves nothing behind.
    let remote = if !args.remote.is_empty() && git::in_work_tree() {
        let existing = git::remote_url(&args.remote);
        if let Some(url) = &existing
            && !args.yes
        {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "a git remote named {:?} already exists ({url}): use -y to replace it, \
                     or -r REMOTE to add another one",
                    args.remote
                );
            }
            let question = format!(
                "There is already a git remote named {:?} ({url}). Replace it?",
                args.remote
            );
            if !output::confirm(&question, false)? {
                bail!("app not created: the git remote {:?} was kept", args.remote);
            }
        }
        Some((args.remote.as_str(), existing.is_some()))
    } else {
        None
    };
    let cluster = match remote {
        Some(_) => Some(client.cluster_info().await?),
        None => None,
    };
    let app = client
        .create_app(&NewApp {
            name: args.name,
            ..Default::default()
        })
        .await?;
    if let (Some((name, exists)), Some(cluster)) = (remote, cluster) {
        let url = git_url(&cluster, &app.name);
        let added = if exists {
            git::set_remote_url(name, &url)
        } else {
            git::add_remote(name, &url)
        };
        if let Err(e) = added.and_then(|()| git::set_credential_helper(&url)) {
            eprintln!("warning: app created, but the git remote was not set: {e:#}");
        }
    }
    println!("Created {}", app.name);
    Ok(())
}

pub async fn list(ctx: &Ctx, args: AppsArgs) -> Result<()> {
    let apps = ctx.client()?.apps().await?;
    if args.json {
        return print_json(&apps);
    }
    let rows = apps
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.release.map(|r| r.to_string()).unwrap_or_default(),
                ago(&a.created_at),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "RELEASE", "CREATED"], rows);
    Ok(())
}

pub async fn info(ctx: &Ctx, args: InfoArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = client.app(&ctx.app(&args.app)?).await?;
    let cluster = client.cluster_info().await?;
    println!("=== {}", app.name);
    println!("Git URL: {}", git_url(&cluster, &app.name));
    println!("Web URL: http://{}.{}", app.name, cluster.default_domain);
    Ok(())
}

pub async fn delete(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
    let client = ctx.client()?;
    // Look the app up first: an unknown app fails before any prompt.
    let app = client.app(&ctx.app(&args.app)?).await?;
    let prompt = format!(
        "This deletes app {name:?} with its routes, releases and jobs; it cannot be undone.\n\
         Type the app's name ({name}) to confirm: ",
        name = app.name
    );
    if !output::confirm_by_typing(&prompt, &app.name, args.yes)? {
        bail!("the name did not match: app {:?} not deleted", app.name);
    }
    let gone = client.delete_app(&app.id.to_string()).await?;
    if !args.remote.is_empty()
        && let Some(url) = git::remote_url(&args.remote)
        && git::app_from_remote_url(&url).as_deref() == Some(app.name.as_str())
        && let Err(e) = git::remove_remote(&args.remote)
    {
        eprintln!(
            "warning: the git remote {:?} was not removed: {e:#}",
            args.remote
        );
    }
    println!(
        "Deleted {} (removed {} routes, deleted {} releases)",
        app.name, gone.routes, gone.releases
    );
    Ok(())
}
