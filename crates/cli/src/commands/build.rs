//! `build` (list) and `build log [ID]`: the builds of an app's pushes, kept with the transcript
//! the pusher saw, so a build's output can be read later — after its push's terminal is gone and
//! whatever the app's own logs have evicted since (`slipway log -t build` has only what is left
//! there).

use crate::context::{AppFlag, Ctx};
use crate::output::{ago, print_json, print_table};
use anyhow::{Result, bail};
use slipway_types::Build;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    app: AppFlag,
    #[command(subcommand)]
    cmd: Option<BuildCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum BuildCmd {
    /// List the app's builds, newest first [default]
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print a build's output [default: the latest build, failed or not]
    Log {
        /// A build ID or the ID of the release it made (a unique prefix is enough)
        id: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    let builds = client.builds(&app).await?;
    match args.cmd {
        None => list(&builds, false),
        Some(BuildCmd::List { json }) => list(&builds, json),
        Some(BuildCmd::Log { id }) => {
            let build = find(&builds, &app, id.as_deref())?;
            let log = client.build_log(&app, build.id).await?;
            print!("{log}");
            Ok(())
        }
    }
}

fn list(builds: &[Build], json: bool) -> Result<()> {
    if json {
        return print_json(builds);
    }
    let rows = builds
        .iter()
        .map(|b| {
            let took = b.finished_at.unix_millis() - b.created_at.unix_millis();
            vec![
                b.id.to_string(),
                b.status.as_str().to_string(),
                b.commit.chars().take(7).collect(),
                b.release_id
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into()),
                ago(&b.created_at),
                format!("{:.1}s", took as f64 / 1000.0),
            ]
        })
        .collect();
    print_table(
        &["ID", "STATUS", "COMMIT", "RELEASE", "STARTED", "TOOK"],
        rows,
    );
    Ok(())
}

/// The build `id` names (its own ID or its release's, or a unique prefix of either); the newest
/// without one.
fn find<'a>(builds: &'a [Build], app: &str, id: Option<&str>) -> Result<&'a Build> {
    let Some(id) = id else {
        return match builds.first() {
            Some(b) => Ok(b),
            None => bail!(
                "app {app:?} has no builds yet: `git push slipway main` builds and deploys it"
            ),
        };
    };
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() {
        bail!("empty build ID");
    }
    let matches: Vec<&Build> = builds
        .iter()
        .filter(|b| {
            b.id.to_string().starts_with(&id)
                || b.release_id.is_some_and(|r| r.to_string().starts_with(&id))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no build or release {id:?} with a build log in app {app:?} (`slipway build` lists \
             them; logs of trimmed releases are deleted with them)"
        ),
        _ => bail!("ID prefix {id:?} is ambiguous: give more of it"),
    }
}
