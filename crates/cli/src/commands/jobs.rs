//! `scale`, `ps`, `kill`, `run -d`, `deployment`, and the deploy-and-wait every release change
//! goes through (`env set`, `limit set`, `release rollback`). Output lines follow Flynn's CLI:
//! `scaling web: 1=>3`, `HH:MM:SS.mmm ==> web ID up`, `scale completed in 1.23s`.

use crate::context::{AppFlag, Ctx};
use crate::output::{ago, print_json, print_table};
use anyhow::{Context, Result, bail};
use slipway_client::Client;
use slipway_types::{DeploymentStatus, FormationUpdate, Id, Job, JobState, NewJob};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How often job and deployment states are polled while waiting.
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Don't wait for the jobs to be up (or down)
    #[arg(short = 'n', long)]
    no_wait: bool,
    /// The release to scale [default: the current release]
    #[arg(short = 'r', long, value_name = "RELEASE")]
    release: Option<Id>,
    /// How long to wait for the jobs, in seconds
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// New counts, e.g. web=3 worker=1, with host tags for a type: web=3,disk=ssd; none prints
    /// the current counts
    #[arg(value_name = "TYPE=N")]
    counts: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Include finished jobs (here `-a` is Flynn's `--all`: name the app before the command,
    /// `slipway -a APP ps -a`)
    #[arg(short = 'a', long)]
    all: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    app: AppFlag,
    #[arg(required = true, value_name = "JOB")]
    jobs: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Detached: print the job id and return (the exit shows in `ps -a`). Attached (the
    /// default), the job's stdout and stderr are printed apart and its exit code is ours
    #[arg(short = 'd', long)]
    detached: bool,
    /// Environment for the job, KEY=VALUE (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The release to run [default: the current release]
    #[arg(short = 'r', long, value_name = "RELEASE")]
    release: Option<Id>,
    /// Keep the job's output in the app's log (`slipway log`) as for detached jobs
    #[arg(long)]
    enable_log: bool,
    #[arg(required = true, last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeploymentArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<DeploymentCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum DeploymentCmd {
    /// Show or set how long a deployment may take, in seconds (default 120)
    Timeout { secs: Option<u32> },
    /// Show or set the batch size of the in-batches strategy
    BatchSize { n: Option<u32> },
    /// Show or set the strategy: all-at-once, one-by-one or in-batches
    Strategy { name: Option<String> },
}

/// Counts per type, and host tags for the types given with some (`web=3,disk=ssd`, Flynn's form).
#[allow(clippy::type_complexity)]
fn parse_counts(
    args: &[String],
) -> Result<(
    BTreeMap<String, u32>,
    BTreeMap<String, slipway_types::StringMap>,
)> {
    let mut counts = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for a in args {
        let mut parts = a.split(',');
        let (t, n) = parts
            .next()
            .and_then(|p| p.split_once('='))
            .filter(|(t, _)| !t.is_empty())
            .with_context(|| format!("invalid argument {a:?}: expected TYPE=N[,TAG=VALUE…]"))?;
        let n = n
            .parse::<u32>()
            .with_context(|| format!("invalid count in {a:?}: expected a number"))?;
        counts.insert(t.to_string(), n);
        let kv: Vec<String> = parts.map(str::to_string).collect();
        if !kv.is_empty() {
            tags.insert(
                t.to_string(),
                super::parse_pairs(&kv)?.into_iter().collect(),
            );
        }
    }
    Ok((counts, tags))
}

/// `HH:MM:SS.mmm` of a timestamp (its text form is RFC 3339 in UTC).
fn clock(j: &Job) -> String {
    let s = j.updated_at.to_string();
    s.get(11..23).unwrap_or(&s).to_string()
}

fn ptype(j: &Job) -> &str {
    j.process_type.as_deref().unwrap_or("run")
}

pub async fn scale(ctx: &Ctx, args: ScaleArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    let release = match args.release {
        Some(r) => r,
        None => client
            .app(&app)
            .await?
            .release
            .with_context(|| format!("app {app:?} has no release yet: push a release first"))?,
    };
    let (cur, mut tags) = match client.formation(&app, release).await {
        Ok(f) => (f.processes, f.tags),
        Err(e) if e.is_not_found() => Default::default(),
        Err(e) => return Err(e.into()),
    };
    if args.counts.is_empty() {
        let line: Vec<String> = cur.iter().map(|(t, n)| format!("{t}={n}")).collect();
        println!("{}", line.join(" "));
        return Ok(());
    }
    let (wanted, new_tags) = parse_counts(&args.counts)?;
    tags.extend(new_tags);
    let mut processes = cur.clone();
    processes.extend(wanted.clone());
    let summary: Vec<String> = wanted
        .iter()
        .map(|(t, n)| format!("{t}: {}=>{n}", cur.get(t).copied().unwrap_or(0)))
        .collect();
    let before: HashMap<String, JobState> = client
        .jobs(&app)
        .await?
        .into_iter()
        .map(|j| (j.id, j.state))
        .collect();
    let started = Instant::now();
    let update = FormationUpdate { processes, tags };
    client.put_formation(&app, release, &update).await?;
    println!("scaling {}", summary.join(", "));
    if args.no_wait {
        return Ok(());
    }
    println!();
    // An omni type's count is per host: any whole multiple of it is the formation.
    let omni: Vec<String> = match client.release(release).await {
        Ok(r) => r
            .processes
            .into_iter()
            .filter(|(_, p)| p.omni)
            .map(|(t, _)| t)
            .collect(),
        Err(_) => Vec::new(),
    };
    wait_for_formation(&client, &app, release, &wanted, &omni, before, args.timeout).await?;
    println!("scale completed in {:.2}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints every job state change of `release` until each type in `wanted` has exactly that many
/// jobs up and no others alive.
async fn wait_for_formation(
    client: &Client,
    app: &str,
    release: Id,
    wanted: &BTreeMap<String, u32>,
    omni: &[String],
    mut seen: HashMap<String, JobState>,
    timeout: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let mut jobs = client.jobs(app).await?;
        jobs.retain(|j| j.release_id == release);
        jobs.sort_by_key(|j| j.updated_at);
        for j in &jobs {
            if seen.get(&j.id) != Some(&j.state) && j.state != JobState::Pending {
                println!(
                    "{} ==> {} {} {}",
                    clock(j),
                    ptype(j),
                    j.id,
                    j.state.as_str()
                );
            }
            seen.insert(j.id.clone(), j.state);
        }
        let done = wanted.iter().all(|(t, n)| {
            let of_type = jobs.iter().filter(|j| ptype(j) == t);
            let (up, alive) = of_type.fold((0, 0), |(u, a), j| {
                (
                    u + u32::from(j.state == JobState::Up),
                    a + u32::from(!j.state.is_finished()),
                )
            });
            match omni.contains(t) {
                true => up == alive && (*n == 0 || (up > 0 && up % n == 0)),
                false => up == *n && alive == *n,
            }
        });
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout}s waiting for the jobs (see `slipway ps`)");
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn ps(ctx: &Ctx, args: PsArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&AppFlag::default())?;
    let mut jobs = client.jobs(&app).await?;
    jobs.retain(|j| args.all || !j.state.is_finished());
    jobs.sort_by_key(|j| j.created_at);
    if args.json {
        return print_json(&jobs);
    }
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                ptype(j).to_string(),
                j.state.as_str().to_string(),
                ago(&j.created_at),
                j.release_id.to_string(),
                j.restarts.to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "TYPE", "STATE", "CREATED", "RELEASE", "RESTARTS"],
        rows,
    );
    Ok(())
}

pub async fn kill(ctx: &Ctx, args: KillArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    for job in &args.jobs {
        client.kill_job(&app, job).await?;
        println!("Job {job} killed.");
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    let env = super::parse_pairs(&args.env)?.into_iter().collect();
    let tty = !args.detached && super::run::stdin_is_terminal();
    let mut meta = BTreeMap::new();
    if args.enable_log {
        meta.insert(slipway_types::LOG_METADATA_KEY.to_string(), "1".to_string());
    }
    let job = NewJob {
        args: args.cmd,
        env,
        release: args.release,
        attach: !args.detached,
        tty: tty.then(|| {
            super::run::terminal_size().unwrap_or(slipway_types::TermSize { cols: 80, rows: 24 })
        }),
        meta: meta.into_iter().collect(),
    };
    let job = client.run_job(&app, &job).await?;
    if args.detached {
        println!("{}", job.id);
        return Ok(());
    }
    let code = super::run::session(&client, &app, &job.id, tty).await?;
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

pub async fn deployments(ctx: &Ctx, args: DeploymentArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    if let Some(cmd) = args.cmd {
        let a = client.app(&app).await?;
        let mut update = slipway_types::AppUpdate::default();
        match cmd {
            DeploymentCmd::Timeout { secs: None } => println!("{}", a.deploy_timeout),
            DeploymentCmd::Timeout { secs } => update.deploy_timeout = secs,
            DeploymentCmd::BatchSize { n: None } => match a.deploy_batch_size {
                Some(n) => println!("{n}"),
                None => println!("default (1 per host)"),
            },
            DeploymentCmd::BatchSize { n } => update.deploy_batch_size = n,
            DeploymentCmd::Strategy { name: None } => println!("{}", a.strategy.as_str()),
            DeploymentCmd::Strategy { name: Some(n) } => {
                update.strategy = Some(n.parse().map_err(|e: slipway_types::ValidationError| {
                    anyhow::anyhow!("{}", e.message)
                })?)
            }
        }
        if update != slipway_types::AppUpdate::default() {
            client.update_app(&app, &update).await?;
        }
        return Ok(());
    }
    let list = client.deployments(&app).await?;
    if args.json {
        return print_json(&list);
    }
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.status.as_str().to_string(),
                ago(&d.created_at),
                d.finished_at.as_ref().map(ago).unwrap_or_default(),
                d.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["ID", "STATUS", "CREATED", "FINISHED", "ERROR"], rows);
    Ok(())
}

/// Deploys `release` and waits for the deployment to finish; a failed deployment is an error
/// carrying its reason (the old release keeps serving).
pub async fn deploy_and_wait(client: &Client, app: &str, release: Id) -> Result<()> {
    let mut seen: HashMap<String, JobState> = client
        .jobs(app)
        .await?
        .into_iter()
        .map(|j| (j.id, j.state))
        .collect();
    let d = client.deploy(app, release).await?;
    let timeout = Duration::from_secs(u64::from(d.deploy_timeout) + 30);
    let deadline = Instant::now() + timeout;
    loop {
        let d = client.deployment(d.id).await?;
        // Progress: every job state change of the two releases, as `scale` prints them.
        let mut jobs = client.jobs(app).await?;
        jobs.sort_by_key(|j| j.updated_at);
        for j in &jobs {
            let old = seen.insert(j.id.clone(), j.state);
            if old != Some(j.state) && j.state != JobState::Pending {
                println!(
                    "{} ==> {} {} {}",
                    clock(j),
                    ptype(j),
                    j.id,
                    j.state.as_str()
                );
            }
        }
        match d.status {
            DeploymentStatus::Complete => return Ok(()),
            DeploymentStatus::Failed => bail!(
                "deployment failed: {}",
                d.error.as_deref().unwrap_or("no reason given")
            ),
            _ if Instant::now() > deadline => bail!(
                "deployment {} is still {} after {}s (see `slipway deployment`)",
                d.id,
                d.status.as_str(),
                timeout.as_secs()
            ),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}
