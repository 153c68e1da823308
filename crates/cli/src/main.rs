//! `slipway`: the command-line client of a Slipway cluster (Flynn's CLI verbs, flags and output
//! lines), and the daemons themselves (`slipway server`, `slipway host`).

mod commands;
mod config;
mod context;
mod credentials;
mod git;
mod host_cmd;
mod output;
mod server;

use clap::{CommandFactory, Parser, Subcommand};
use commands::{apps, cluster, env, jobs, limit, log, meta, release, route};
use context::Ctx;
use std::process::ExitCode;

const ABOUT: &str = "Slipway: a self-hosted platform to deploy and run apps with git push";

const AFTER_HELP: &str = "\
Getting started:
  slipway server &              # run everything on this machine (registers itself as a cluster)
  cd my-app && git init
  slipway create                # creates an app and the \"slipway\" git remote
  slipway env set GREETING=hi   # a new release with that env
  slipway route add http www.example.com

Inside a repo with a \"slipway\" remote the app comes from the remote; elsewhere use -a APP.
The config is at $SLIPWAY_CONFIG, $XDG_CONFIG_HOME/slipway/config.toml or
~/.config/slipway/config.toml; SLIPWAY_URL and SLIPWAY_KEY (both set) override it.";

#[derive(Parser, Debug)]
#[command(
    name = "slipway",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    disable_help_subcommand = true,
    max_term_width = 100
)]
struct Cli {
    /// The app to act on [default: from the "slipway" git remote]
    #[arg(short = 'a', long = "app", value_name = "APP")]
    app: Option<String>,

    /// The cluster to talk to, by its name in the config [default: the default cluster]
    #[arg(short = 'c', long = "cluster", value_name = "NAME")]
    cluster: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an app (and a "slipway" git remote when run inside a git repo)
    Create(apps::CreateArgs),
    /// List apps
    Apps(apps::AppsArgs),
    /// Show an app's git and web URLs
    Info(apps::InfoArgs),
    /// Delete an app with its routes and releases
    #[command(visible_alias = "destroy")]
    Delete(apps::DeleteArgs),
    /// Show or change environment variables (each change makes a new release)
    #[command(visible_alias = "config")]
    Env(env::EnvArgs),
    /// Show or change an app's metadata
    Meta(meta::MetaArgs),
    /// Show or change resource limits of process types (each change makes a new release)
    #[command(visible_alias = "limits")]
    Limit(limit::LimitArgs),
    /// List, show and roll back releases
    #[command(visible_alias = "releases")]
    Release(release::ReleaseArgs),
    /// List, add, update and remove HTTP and TCP routes
    #[command(visible_alias = "routes")]
    Route(route::RouteArgs),
    /// Show or change how many jobs of each process type run (and wait for them)
    Scale(jobs::ScaleArgs),
    /// List the app's jobs
    Ps(jobs::PsArgs),
    /// Stop jobs (a job of a formation is replaced)
    Kill(jobs::KillArgs),
    /// Show every running job's CPU and memory (from the servers' metrics endpoints)
    Top(commands::top::TopArgs),
    /// Show an app's log: every job's output and the platform's notes (-f to follow)
    #[command(visible_alias = "logs")]
    Log(log::LogArgs),
    /// Run a one-off job of the current release: run -d -- CMD…
    Run(jobs::RunArgs),
    /// List an app's builds and print their output later: build log [ID]
    #[command(visible_alias = "builds")]
    Build(commands::build::BuildArgs),
    /// List the app's deployments
    #[command(visible_alias = "deployments")]
    Deployment(jobs::DeploymentArgs),
    /// Deploy a Docker/OCI image file (`docker save` archive, OCI layout): image push FILE
    Image(commands::image::ImageArgs),
    /// Export an app (release, slug or image, formation, routes) to a file: export -f FILE
    Export(commands::export::ExportArgs),
    /// Create an app from an export: import -f FILE [--name NEW] [--routes] [--formation]
    Import(commands::export::ImportArgs),
    /// List and manage the clusters this CLI knows
    #[command(visible_alias = "clusters")]
    Cluster(cluster::ClusterArgs),
    /// Print the CLI's version
    Version,
    /// Print a shell completion script (e.g. `slipway completion bash > /etc/bash_completion.d/slipway`)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the Slipway server: controller, scheduler, router, git receiver, host agent (--roles)
    Server(Box<slipway_server::ServerArgs>),
    /// Run the server and the router as two supervised processes (restarts, SIGHUP upgrades)
    Supervise(Box<slipway_server::supervise::SuperviseArgs>),
    /// List the cluster's hosts (host list), or run or inspect a host agent
    Host(Box<commands::hosts::HostGroupArgs>),
    /// List the cluster's hosts (same as `host list`)
    Hosts(commands::hosts::ListArgs),
    /// The pre-receive hook of the server's app repos (run by `git receive-pack`)
    #[command(name = "git-hook", hide = true)]
    GitHook,
    /// Git credential helper for the Slipway git remote (`slipway create` configures it)
    #[command(name = "git-credentials", hide = true)]
    GitCredentials {
        /// get, store or erase (git's credential helper protocol)
        action: String,
    },
}

fn main() -> ExitCode {
    // A job's shim is this binary started as `slipway host shim DIR`; it must not build an async
    // runtime (that would cost every job ~2 MiB more), so it is dispatched before anything else.
    slipway_host::shim::run_if_shim_invocation();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime")
        .block_on(cli_main())
}

async fn cli_main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are not failures; usage errors exit 1 like every other error.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        app: cli.app,
        cluster: cli.cluster,
    };
    match cli.command {
        Command::Create(args) => apps::create(&ctx, args).await,
        Command::Apps(args) => apps::list(&ctx, args).await,
        Command::Info(args) => apps::info(&ctx, args).await,
        Command::Delete(args) => apps::delete(&ctx, args).await,
        Command::Env(args) => env::run(&ctx, args).await,
        Command::Meta(args) => meta::run(&ctx, args).await,
        Command::Limit(args) => limit::run(&ctx, args).await,
        Command::Release(args) => release::run(&ctx, args).await,
        Command::Route(args) => route::run(&ctx, args).await,
        Command::Scale(args) => jobs::scale(&ctx, args).await,
        Command::Ps(args) => jobs::ps(&ctx, args).await,
        Command::Kill(args) => jobs::kill(&ctx, args).await,
        Command::Top(args) => commands::top::run(&ctx, args).await,
        Command::Log(args) => log::run(&ctx, args).await,
        Command::Run(args) => jobs::run(&ctx, args).await,
        Command::Deployment(args) => jobs::deployments(&ctx, args).await,
        Command::Image(args) => commands::image::run(&ctx, args).await,
        Command::Build(args) => commands::build::run(&ctx, args).await,
        Command::Cluster(args) => cluster::run(&ctx, args).await,
        Command::Export(args) => commands::export::export(&ctx, args).await,
        Command::Import(args) => commands::export::import(&ctx, args).await,
        Command::Version => {
            println!("slipway {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "slipway",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Server(args) => server::run(*args).await,
        Command::Supervise(args) => server::supervise(*args).await,
        Command::Host(args) => match args.command {
            commands::hosts::HostGroupCmd::List(list) => commands::hosts::list(&ctx, list).await,
            commands::hosts::HostGroupCmd::Drain(a) => commands::hosts::drain(&ctx, a).await,
            commands::hosts::HostGroupCmd::Undrain(a) => commands::hosts::undrain(&ctx, a).await,
            commands::hosts::HostGroupCmd::Join(a) => commands::hosts::join(a),
            commands::hosts::HostGroupCmd::Agent(command) => {
                host_cmd::run(host_cmd::HostArgs { command: *command }).await
            }
        },
        Command::Hosts(args) => commands::hosts::list(&ctx, args).await,
        Command::GitHook => match slipway_builder::push::hook::run().await {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::GitCredentials { action } => credentials::run(&action),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_list_sits_beside_the_agents_commands() {
        use commands::hosts::HostGroupCmd;
        let host = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Host(h) => h.command,
            other => panic!("not host: {other:?}"),
        };
        assert!(matches!(
            host(&["slipway", "host", "list", "--json"]),
            HostGroupCmd::List(l) if l.json
        ));
        assert!(matches!(
            host(&["slipway", "host", "ls"]),
            HostGroupCmd::List(_)
        ));
        assert!(matches!(
            host(&[
                "slipway",
                "host",
                "ps",
                "--host-url",
                "http://127.0.0.1:1113"
            ]),
            HostGroupCmd::Agent(_)
        ));
        assert!(matches!(
            host(&["slipway", "host", "daemon", "--data-dir", "/tmp/x"]),
            HostGroupCmd::Agent(_)
        ));
        let cli = Cli::try_parse_from(["slipway", "-c", "prod", "hosts"]).unwrap();
        assert!(matches!(cli.command, Command::Hosts(_)));
    }

    #[test]
    fn app_flag_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["slipway", "-a", "one", "env"]).unwrap();
        assert_eq!(cli.app.as_deref(), Some("one"));
        let cli = Cli::try_parse_from(["slipway", "env", "set", "-a", "two", "K=V"]).unwrap();
        let Command::Env(args) = cli.command else {
            panic!("not env")
        };
        assert_eq!(args.app.app.as_deref(), Some("two"));
    }

    #[test]
    fn route_cert_flag_is_not_the_cluster_flag() {
        let cli = Cli::try_parse_from([
            "slipway", "-c", "prod", "route", "add", "http", "-c", "c.pem", "-k", "k.pem", "x.com",
        ])
        .unwrap();
        assert_eq!(cli.cluster.as_deref(), Some("prod"));
        assert!(
            Cli::try_parse_from(["slipway", "route", "add", "http", "-c", "c.pem", "x.com"])
                .is_err(),
            "a certificate needs its key"
        );
    }
}
