//! `release`, `release show`, `release rollback`, and the "change the config, make a new
//! release" step that `env` and `limit` share.

use crate::context::{AppFlag, Ctx};
use crate::output::{self, ago, print_json, print_table};
use anyhow::{Context, Result, bail};
use slipway_client::Client;
use slipway_types::{NewRelease, Release, units::format_bytes};

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Print only release IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    #[command(subcommand)]
    cmd: Option<ReleaseCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum ReleaseCmd {
    /// Create and deploy a release from a JSON file (`-` for stdin): `{"processes": {"web":
    /// {"args": […]}}, "env": {…}}`. The current release's env is kept; the file's wins.
    Add {
        /// The release as JSON (the API's NewRelease shape, docs/api.md)
        file: String,
    },
    /// Show a release [default: the current one]
    Show {
        /// Print the release as JSON
        #[arg(long)]
        json: bool,
        /// Release ID (a unique prefix is enough)
        id: Option<String>,
    },
    /// Delete a release that is not the current one
    #[command(visible_alias = "rm")]
    Delete {
        /// Do not ask for confirmation
        #[arg(short = 'y', long = "yes")]
        yes: bool,
        /// Release ID (a unique prefix is enough)
        id: String,
    },
    /// Make an earlier release current again [default: the one before the current]
    Rollback {
        /// Do not ask for confirmation
        #[arg(short = 'y', long = "yes")]
        yes: bool,
        /// Release ID (a unique prefix is enough)
        id: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, args: ReleaseArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    match args.cmd {
        None => list(&client, &app, args.json, args.quiet).await,
        Some(ReleaseCmd::Add { file }) => add(&client, &app, &file).await,
        Some(ReleaseCmd::Show { json, id }) => show(&client, &app, id.as_deref(), json).await,
        Some(ReleaseCmd::Delete { yes, id }) => delete(&client, &app, &id, yes).await,
        Some(ReleaseCmd::Rollback { yes, id }) => rollback(&client, &app, id.as_deref(), yes).await,
    }
}

async fn add(client: &Client, app: &str, file: &str) -> Result<()> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the release from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let new: NewRelease = serde_json::from_str(&text)
        .with_context(|| format!("invalid release file {file}: expected JSON like {{\"processes\": {{\"web\": {{\"args\": [\"httpd\", \"-f\"]}}}}}}"))?;
    change_release(client, app, |next| {
        next.artifacts = new.artifacts;
        next.processes = new.processes;
        next.meta.extend(new.meta);
        next.env.extend(new.env);
        Ok(())
    })
    .await?;
    Ok(())
}

async fn list(client: &Client, app: &str, json: bool, quiet: bool) -> Result<()> {
    let current = client.app(app).await?.release;
    let releases = client.releases(app).await?;
    if json {
        return print_json(&releases);
    }
    if quiet {
        for r in &releases {
            println!("{}", r.id);
        }
        return Ok(());
    }
    let rows = releases
        .iter()
        .map(|r| {
            let mut id = r.id.to_string();
            if Some(r.id) == current {
                id.push_str(" (current)");
            }
            let processes: Vec<&str> = r.processes.keys().map(String::as_str).collect();
            vec![
                id,
                ago(&r.created_at),
                r.env.len().to_string(),
                processes.join(", "),
            ]
        })
        .collect();
    print_table(&["ID", "CREATED", "ENV", "PROCESSES"], rows);
    Ok(())
}

/// Finds one of `releases` by full ID or unique prefix.
fn find<'a>(releases: &'a [Release], app: &str, id: &str) -> Result<&'a Release> {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() {
        bail!("empty release ID");
    }
    let matches: Vec<&Release> = releases
        .iter()
        .filter(|r| r.id.to_string().starts_with(&id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!("release {id:?} not found in app {app:?}"),
        _ => bail!("release ID prefix {id:?} is ambiguous: give more of it"),
    }
}

async fn show(client: &Client, app: &str, id: Option<&str>, json: bool) -> Result<()> {
    let release = match id {
        Some(id) => find(&client.releases(app).await?, app, id)?.clone(),
        None => match client.current_release(app).await? {
            Some(r) => r,
            None => bail!("app {app:?} has no release yet"),
        },
    };
    if json {
        return print_json(&release);
    }
    print!("{}", describe(&release));
    Ok(())
}

async fn delete(client: &Client, app: &str, id: &str, yes: bool) -> Result<()> {
    let releases = client.releases(app).await?;
    let target = find(&releases, app, id)?;
    if !output::confirm(&format!("Delete release {}?", target.id), yes)? {
        bail!("release not deleted");
    }
    client.delete_release(app, target.id).await?;
    println!("Deleted release {}.", target.id);
    Ok(())
}

/// `release show` as aligned `Key: value` lines, Flynn's layout.
fn describe(release: &Release) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("ID".into(), release.id.to_string()),
        (
            "Created".into(),
            format!("{} ({})", release.created_at, ago(&release.created_at)),
        ),
    ];
    for a in &release.artifacts {
        fields.push(("Artifact".into(), a.to_string()));
    }
    let types: Vec<&str> = release.processes.keys().map(String::as_str).collect();
    if !types.is_empty() {
        fields.push(("Process types".into(), types.join(", ")));
    }
    for (k, v) in &release.env {
        fields.push((format!("Env[{k}]"), v.clone()));
    }
    for (k, v) in &release.meta {
        fields.push((format!("Meta[{k}]"), v.clone()));
    }
    for (name, p) in &release.processes {
        if !p.args.is_empty() {
            fields.push((format!("{name}.command"), p.args.join(" ")));
        }
        for (k, v) in &p.env {
            fields.push((format!("{name}.env[{k}]"), v.clone()));
        }
        let r = &p.resources;
        let limits: Vec<String> = [
            r.memory.map(|m| format!("memory={}", format_bytes(m))),
            r.cpu.map(|c| format!("cpu={c}m")),
            r.max_fd.map(|n| format!("max_fd={n}")),
            r.max_procs.map(|n| format!("max_procs={n}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !limits.is_empty() {
            fields.push((format!("{name}.limits"), limits.join(" ")));
        }
    }
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:")))
        .collect()
}

async fn rollback(client: &Client, app: &str, id: Option<&str>, yes: bool) -> Result<()> {
    let current = client.app(app).await?.release;
    let Some(current) = current else {
        bail!("app {app:?} has no release yet: there is nothing to roll back");
    };
    let mut releases = client.releases(app).await?;
    // Newest first, whatever order the server used.
    releases.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let target = match id {
        Some(id) => find(&releases, app, id)?,
        None => releases
            .iter()
            .position(|r| r.id == current)
            .and_then(|i| releases.get(i + 1))
            .ok_or_else(|| anyhow::anyhow!("no previous release to roll back to"))?,
    };
    if target.id == current {
        bail!("release {} is already the current release", target.id);
    }
    let question = format!("Roll back app {app:?} to release {}?", target.id);
    if !output::confirm(&question, yes)? {
        bail!("rollback cancelled");
    }
    super::jobs::deploy_and_wait(client, app, target.id).await?;
    println!("Rolled back to release {}.", target.id);
    Ok(())
}

/// Makes a new release from the current one (or an empty one when the app has none) with
/// `change` applied, deploys it (waiting for the deployment: a failure is an error and the old
/// release keeps serving), and prints Flynn's `Created release ID.`.
pub async fn change_release(
    client: &Client,
    app: &str,
    change: impl FnOnce(&mut NewRelease) -> Result<()>,
) -> Result<Release> {
    let mut next = match client.current_release(app).await? {
        Some(r) => NewRelease::from_release(&r),
        None => NewRelease::default(),
    };
    change(&mut next)?;
    let release = client.create_release(app, &next).await?;
    super::jobs::deploy_and_wait(client, app, release.id).await?;
    println!("Created release {}.", release.id);
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::Timestamp;

    fn release(id: &str) -> Release {
        Release {
            id: id.parse().unwrap(),
            app_id: uuid::Uuid::nil(),
            artifacts: vec![],
            env: Default::default(),
            meta: Default::default(),
            processes: Default::default(),
            created_at: Timestamp::now(),
        }
    }

    #[test]
    fn show_aligns_fields() {
        let mut r = release("aaaaaaaa-0000-0000-0000-000000000001");
        r.env.insert("A".into(), "1".into());
        let mut web = slipway_types::ProcessType::default();
        web.resources.set("memory", "512MB").unwrap();
        r.processes.insert("web".into(), web);
        let out = describe(&r);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID:             aaaaaaaa-0000-0000-0000-000000000001"
        );
        assert_eq!(lines[2], "Process types:  web");
        assert_eq!(lines[3], "Env[A]:         1");
        assert_eq!(lines[4], "web.limits:     memory=512MB");
    }

    #[test]
    fn find_by_prefix() {
        let rs = [
            release("aaaaaaaa-0000-0000-0000-000000000001"),
            release("aaaabbbb-0000-0000-0000-000000000002"),
        ];
        assert_eq!(find(&rs, "x", "AAAAB").unwrap().id, rs[1].id);
        assert_eq!(
            find(&rs, "x", "aaaaaaaa-0000-0000-0000-000000000001")
                .unwrap()
                .id,
            rs[0].id
        );
        assert!(
            find(&rs, "x", "aaaa")
                .unwrap_err()
                .to_string()
                .contains("ambiguous")
        );
        assert!(
            find(&rs, "x", "ff")
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        assert!(find(&rs, "x", "").is_err());
    }
}
