//! `route`, `route add http|tcp`, `route update`, `route remove`. Routes are named as Flynn
//! printed them, `http/<id>` and `tcp/<id>`, and taken back in that form.

use crate::context::{AppFlag, Ctx};
use crate::output::{print_json, print_table};
use anyhow::{Context, Result, bail};
use slipway_types::{Certificate, Id, NewRoute, Route, RouteType, RouteUpdate};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RouteArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<RouteCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum RouteCmd {
    /// Add a route
    #[command(subcommand)]
    Add(AddCmd),
    /// Change a route's service, stickiness, leader mode or certificate
    Update(UpdateArgs),
    /// Remove a route: route remove http/<id>
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(value_name = "ROUTE")]
        route: String,
    },
}

#[derive(clap::Subcommand, Debug)]
enum AddCmd {
    /// Route HTTP(S) requests for a domain (and path prefix) to a service
    Http(AddHttp),
    /// Route a TCP port to a service
    Tcp(AddTcp),
}

#[derive(clap::Args, Debug)]
struct AddHttp {
    /// The service to route to [default: APP-web]
    #[arg(short = 's', long = "service", value_name = "SERVICE")]
    service: Option<String>,
    /// Send a client's requests to the same backend (cookie)
    #[arg(long)]
    sticky: bool,
    /// Send traffic only to the service's leader
    #[arg(long)]
    leader: bool,
    #[command(flatten)]
    tls: TlsFiles,
    /// e.g. www.example.com or example.com/api (the path is a prefix)
    #[arg(value_name = "DOMAIN[/PATH]")]
    target: String,
}

#[derive(clap::Args, Debug)]
struct AddTcp {
    /// The port to listen on [default: a free one in the server's range, 3000-3500 unless
    /// `slipway server --tcp-ports` says otherwise]
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// The service to route to [default: APP-web]
    #[arg(short = 's', long = "service", value_name = "SERVICE")]
    service: Option<String>,
    /// Send traffic only to the service's leader
    #[arg(long)]
    leader: bool,
}

#[derive(clap::Args, Debug)]
struct TlsFiles {
    /// TLS certificate chain (PEM file)
    #[arg(
        short = 'c',
        long = "tls-cert",
        value_name = "CERT_FILE",
        requires = "key"
    )]
    cert: Option<PathBuf>,
    /// TLS private key (PEM file)
    #[arg(
        short = 'k',
        long = "tls-key",
        value_name = "KEY_FILE",
        requires = "cert"
    )]
    key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct UpdateArgs {
    /// http/<id> or tcp/<id>
    #[arg(value_name = "ROUTE")]
    route: String,
    /// Route to this service instead
    #[arg(short = 's', long = "service", value_name = "SERVICE")]
    service: Option<String>,
    /// Make the route sticky (HTTP only)
    #[arg(long, conflicts_with = "no_sticky")]
    sticky: bool,
    /// Make the route not sticky (HTTP only)
    #[arg(long)]
    no_sticky: bool,
    /// Send traffic only to the service's leader
    #[arg(long, conflicts_with = "no_leader")]
    leader: bool,
    /// Send traffic to all of the service's instances
    #[arg(long)]
    no_leader: bool,
    #[command(flatten)]
    tls: TlsFiles,
    /// Drop the route's own certificate (HTTP only)
    #[arg(long, conflicts_with = "cert")]
    remove_certificate: bool,
}

impl TlsFiles {
    fn read(&self) -> Result<Option<Certificate>> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        Ok(Some(Certificate {
            cert: read(cert)?,
            key: read(key)?,
        }))
    }
}

/// `http/<id>` → (type, id).
pub fn parse_route(s: &str) -> Result<(RouteType, Id)> {
    let bad = || anyhow::anyhow!("invalid route {s:?}: expected http/<id> or tcp/<id>");
    let (kind, id) = s.trim().split_once('/').ok_or_else(bad)?;
    let kind = RouteType::parse(kind).ok_or_else(bad)?;
    let id = id.parse().map_err(|_| bad())?;
    Ok((kind, id))
}

/// Split `example.com/api` into the domain and the path (the server normalises the path).
fn split_target(target: &str) -> (String, Option<String>) {
    match target.split_once('/') {
        Some((domain, path)) => (domain.to_string(), Some(format!("/{path}"))),
        None => (target.to_string(), None),
    }
}

fn describe(r: &Route) -> Vec<String> {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    match r {
        Route::Http(h) => vec![
            r.to_string(),
            h.service.clone(),
            format!("{}{}", h.domain, h.path),
            yes(h.sticky),
            yes(h.leader),
            String::new(),
        ],
        // STATE: the router's listener for the port (`listening`, `failed: …`), when the
        // server runs a router.
        Route::Tcp(t) => vec![
            r.to_string(),
            t.service.clone(),
            format!("port {}", t.port),
            String::new(),
            yes(t.leader),
            t.listener.clone().unwrap_or_default(),
        ],
    }
}

pub async fn run(ctx: &Ctx, args: RouteArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    match args.cmd {
        None => {
            let routes = client.routes(&app).await?;
            if args.json {
                return print_json(&routes);
            }
            let rows = routes.iter().map(describe).collect();
            print_table(
                &["ROUTE", "SERVICE", "TARGET", "STICKY", "LEADER", "STATE"],
                rows,
            );
        }
        Some(RouteCmd::Add(AddCmd::Http(a))) => {
            let (domain, path) = split_target(&a.target);
            let route = NewRoute::Http {
                domain,
                path,
                service: a.service,
                sticky: a.sticky,
                leader: a.leader,
                certificate: a.tls.read()?,
            };
            println!("{}", client.create_route(&app, &route).await?);
        }
        Some(RouteCmd::Add(AddCmd::Tcp(a))) => {
            let route = NewRoute::Tcp {
                port: a.port.unwrap_or(0),
                service: a.service,
                leader: a.leader,
            };
            let created = client.create_route(&app, &route).await?;
            match &created {
                Route::Tcp(t) => println!("{created} listening on port {}", t.port),
                Route::Http(_) => println!("{created}"),
            }
        }
        Some(RouteCmd::Update(u)) => {
            let (kind, id) = parse_route(&u.route)?;
            let certificate = u.tls.read()?;
            let sticky = flag(u.sticky, u.no_sticky);
            if kind == RouteType::Tcp
                && (sticky.is_some() || certificate.is_some() || u.remove_certificate)
            {
                bail!("stickiness and certificates apply to HTTP routes only");
            }
            let update = RouteUpdate {
                service: u.service,
                sticky,
                leader: flag(u.leader, u.no_leader),
                certificate,
                remove_certificate: u.remove_certificate,
            };
            if update == RouteUpdate::default() {
                bail!("nothing to update: give -s, --[no-]sticky, --[no-]leader or -c/-k");
            }
            let route = client.update_route(&app, kind, id, &update).await?;
            println!("Route {route} updated.");
        }
        Some(RouteCmd::Remove { route }) => {
            let (kind, id) = parse_route(&route)?;
            client.delete_route(&app, kind, id).await?;
            println!("Route {}/{id} removed.", kind.as_str());
        }
    }
    Ok(())
}

/// `--x` / `--no-x` → Some(true) / Some(false); neither → leave as is.
fn flag(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names() {
        let id = "0b0c1d2e-0000-4000-8000-000000000001";
        let (kind, parsed) = parse_route(&format!("tcp/{id}")).unwrap();
        assert_eq!((kind, parsed.to_string()), (RouteType::Tcp, id.to_string()));
        for bad in ["http", "udp/x", &format!("http:{id}"), "http/not-a-uuid"] {
            let err = parse_route(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected http/<id> or tcp/<id>"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn targets_split_at_the_first_slash() {
        assert_eq!(split_target("example.com"), ("example.com".into(), None));
        assert_eq!(
            split_target("example.com/api/v1"),
            ("example.com".into(), Some("/api/v1".into()))
        );
    }
}
