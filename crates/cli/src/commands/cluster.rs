//! `cluster`, `cluster add`, `cluster remove`, `cluster default`: the clusters in the config
//! file, offline (nothing there talks to a server); and `cluster status`, which asks the
//! cluster's controller how the cluster itself is (etcd, role leaders, controllers, routers).

use crate::config::{Config, config_path};
use crate::context::Ctx;
use crate::output::{print_json, print_table, table};
use anyhow::Result;
use slipway_types::{ClusterStatus, Coordination};

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
    /// Print the cluster token, which a machine joining the cluster needs (`slipway host join`)
    Token,
    /// Show the cluster's coordination (etcd members), store, role leaders, controllers, routers
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Back the whole platform up (store, slugs, images): cluster backup -f FILE (docs/backup.md)
    Backup(super::backup::BackupArgs),
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    url: &'a str,
    default: bool,
}

pub async fn run(ctx: &Ctx, args: ClusterArgs) -> Result<()> {
    if let Some(ClusterCmd::Token) = args.cmd {
        println!("{}", ctx.client()?.cluster_token().await?);
        return Ok(());
    }
    if let Some(ClusterCmd::Status { json }) = args.cmd {
        let status = ctx.client()?.cluster_status().await?;
        if json {
            return print_json(&status);
        }
        print!("{}", render_status(&status));
        return Ok(());
    }
    let args = match args.cmd {
        Some(ClusterCmd::Backup(backup)) => return super::backup::run(ctx, backup).await,
        cmd => ClusterArgs { cmd, ..args },
    };
    let path = config_path()?;
    let mut config = Config::load(&path)?;
    match args.cmd {
        Some(ClusterCmd::Backup(_)) => unreachable!("answered above"),
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
        Some(ClusterCmd::Status { .. } | ClusterCmd::Token) => unreachable!("answered above"),
    }
    Ok(())
}

/// `cluster status` as text: a header of backends, then one table per part; an empty part
/// says `none` rather than vanishing.
fn render_status(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let coordination = match s.coordination {
        Coordination::InProcess => {
            "in-process (an embedded server: this one server is the whole cluster; \
             servers started with --etcd form a cluster)"
                .to_string()
        }
        Coordination::Etcd => format!("etcd ({} members)", s.etcd.len()),
        Coordination::None => "none (this controller has no discovery)".to_string(),
    };
    let plural = if s.hosts == 1 { "" } else { "s" };
    out.push_str(&format!("Coordination: {coordination}\n"));
    out.push_str(&format!("Store:        {}\n", s.store));
    out.push_str(&format!(
        "Hosts:        {} host{plural} followed (slipway host list)\n",
        s.hosts
    ));
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    if s.coordination == Coordination::Etcd {
        out.push('\n');
        if let Some(e) = &s.etcd_error {
            out.push_str(&format!("etcd: {e}\n"));
        }
        let rows = s
            .etcd
            .iter()
            .map(|m| {
                vec![
                    or_dash(&m.name),
                    or_dash(&m.id),
                    or_dash(&m.url),
                    yes(m.healthy),
                    yes(m.leader),
                    m.version.clone().unwrap_or_else(|| "-".into()),
                    m.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ETCD MEMBER",
                "ID",
                "URL",
                "HEALTHY",
                "LEADER",
                "VERSION",
                "ERROR",
            ],
            rows,
        ));
    }
    if !s.leaders.is_empty() {
        out.push('\n');
        let rows = s
            .leaders
            .iter()
            .map(|l| match &l.leader {
                Some(m) => vec![l.role.clone(), m.id.clone(), m.addr.clone()],
                None => vec![l.role.clone(), "none".into(), "-".into()],
            })
            .collect();
        out.push_str(&table(&["ROLE", "LEADER", "ADDRESS"], rows));
    }
    for (title, members) in [("CONTROLLER", &s.controllers), ("ROUTER", &s.routers)] {
        out.push('\n');
        if members.is_empty() {
            out.push_str(&format!("{title}S: none registered\n"));
            continue;
        }
        let rows = members
            .iter()
            .map(|m| {
                let url = m.url.clone().unwrap_or_else(|| "-".into());
                vec![m.id.clone(), m.addr.clone(), url]
            })
            .collect();
        out.push_str(&table(&[title, "ADDRESS", "URL"], rows));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::{EtcdMember, RoleLeader, ServiceMember};

    #[test]
    fn an_embedded_server_says_so_and_etcd_members_show_health() {
        let mut s = ClusterStatus {
            coordination: Coordination::InProcess,
            store: "sqlite".into(),
            hosts: 1,
            leaders: vec![RoleLeader {
                role: "scheduler".into(),
                service: "slipway-scheduler".into(),
                leader: None,
            }],
            ..Default::default()
        };
        let text = render_status(&s);
        assert!(
            text.contains("Coordination: in-process (an embedded server"),
            "{text}"
        );
        assert!(text.contains("Store:        sqlite\n"), "{text}");
        assert!(text.contains("1 host followed"), "{text}");
        assert!(!text.contains("ETCD MEMBER"), "{text}");
        assert!(text.contains("scheduler   none"), "{text}");
        assert!(text.contains("CONTROLLERS: none registered"), "{text}");
        s.coordination = Coordination::Etcd;
        s.etcd = vec![EtcdMember {
            id: "8e9e05c52164694d".into(),
            name: "etcd0".into(),
            url: "http://127.0.0.1:2379".into(),
            healthy: false,
            leader: false,
            version: None,
            error: Some("connection refused".into()),
        }];
        s.controllers = vec![ServiceMember {
            id: "c1".into(),
            addr: "10.0.0.1:8080".into(),
            url: Some("http://10.0.0.1:8080".into()),
        }];
        let text = render_status(&s);
        assert!(text.contains("etcd (1 members)"), "{text}");
        let row = text.lines().find(|l| l.starts_with("etcd0")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "etcd0",
                "8e9e05c52164694d",
                "http://127.0.0.1:2379",
                "no",
                "no",
                "-",
                "connection",
                "refused"
            ]
        );
        assert!(
            text.contains("c1           10.0.0.1:8080   http://10.0.0.1:8080"),
            "{text}"
        );
    }
}
