//! `slipway server`'s flags. The CLI's `server` subcommand holds [`ServerArgs`] as is, so the
//! flags, their env variables and their help live next to the code that uses them.

use crate::roles::Roles;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The roles this process runs, comma-separated, or `all`: controller, scheduler, host,
    /// discovery, router, logs, builder, registry, blobstore, housekeeping (docs/roles.md).
    #[arg(long, env = "SLIPWAY_ROLES", default_value = "all", value_parser = crate::roles::parse)]
    pub roles: Roles,
    /// The controller API this process follows when it runs no controller (a router-only
    /// process reads routes and their events there), e.g. `http://127.0.0.1:7070`.
    #[arg(long, env = "SLIPWAY_CONTROLLER_URL")]
    pub controller_url: Option<String>,
    /// Discovery's HTTP API this process follows when it runs no discovery (a router-only
    /// process takes its backends from there), e.g. `http://127.0.0.1:1111`.
    #[arg(long, env = "SLIPWAY_DISCOVERY_URL")]
    pub discovery_url: Option<String>,
    /// etcd's client URLs, comma-separated (`http://10.0.0.1:2379,http://10.0.0.2:2379`):
    /// cluster mode's coordination. The discovery role keeps its instances there instead of
    /// in this process, and a process without the discovery role registers and watches there
    /// directly (no --discovery-url needed). etcd must answer at start.
    #[arg(long, env = "SLIPWAY_ETCD", value_name = "URL[,URL…]")]
    pub etcd: Option<String>,
    /// A file holding the API key of --controller-url and --discovery-url (e.g. the
    /// controller's `<data dir>/api-key`). Or put the key in `SLIPWAY_API_KEY`. There is no
    /// flag that takes the key itself: a command line is readable by every user (`ps`).
    /// Default: `<data dir>/api-key` (created on first start by a process that runs the
    /// controller).
    #[arg(long, env = "SLIPWAY_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A file holding the cluster token (the controller's `<data dir>/cluster-token`): what a
    /// process without the controller presents to discovery and host APIs. Or put the token in
    /// `SLIPWAY_CLUSTER_TOKEN` (never on the command line). Default: `<data dir>/cluster-token`
    /// if it exists. A process with the controller takes the token from the store.
    #[arg(long, env = "SLIPWAY_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Where Slipway keeps its state (database, API key, and later slugs, repos, logs).
    /// Default: /var/lib/slipway as root, ~/.local/share/slipway otherwise.
    #[arg(long, env = "SLIPWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the controller API. Port 0 picks a free port (printed at start).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The address (IP) or URL other machines and users reach this controller at: the API's
    /// `git_url` and `slipway info` name it. An IP gets the listening port (`http://IP:PORT`);
    /// a URL (`https://slipway.example.com`, e.g. behind a proxy) is used as it is. Default:
    /// the `--listen` address, or, when that is unspecified (0.0.0.0, ::), the address this
    /// machine sends from on its default route (127.0.0.1 without one).
    #[arg(long, env = "SLIPWAY_ADVERTISE", value_parser = parse_advertise)]
    pub advertise: Option<Advertise>,
    /// Apps get `<app>.<domain>` as their default HTTP route. `localhost` names resolve to this
    /// machine in browsers and curl, so the default works with no DNS set-up.
    #[arg(long, env = "SLIPWAY_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Controller state: `postgres://…` for cluster mode. Default: SQLite in the data dir.
    #[arg(long, env = "SLIPWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Don't add this server to the CLI's cluster list (~/.config/slipway/config.toml).
    #[arg(long)]
    pub no_register: bool,
    /// Run no local host agent (the same as leaving `host` out of --roles): jobs stay
    /// `blocked` until a host is added.
    #[arg(long)]
    pub no_host: bool,
    /// Tags of the local host, KEY=VALUE (repeatable); formations' tags are matched against them.
    #[arg(long = "host-tag", value_parser = parse_tag)]
    pub host_tags: Vec<(String, String)>,
    /// Serve the local host agent's API at this address (an address other processes reach;
    /// port 0 picks one) and register the host in discovery (`slipway-host`), so that a
    /// scheduler in another process follows it. Needed by `--roles host` without `scheduler`.
    #[arg(long, env = "SLIPWAY_HOST_LISTEN")]
    pub host_listen: Option<SocketAddr>,
    /// With --etcd and --host-listen: how long past its discovery lease (10 s), with no etcd
    /// member and fewer than half of the other hosts answering, the host stops its jobs, which
    /// the scheduler has replaced elsewhere (fencing a partitioned host; docs/scheduler.md).
    /// Seconds; `off` (or 0): never.
    #[arg(long, env = "SLIPWAY_FENCE_GRACE", default_value = "5", value_parser = parse_fence_grace)]
    pub fence_grace: Duration,
    #[command(flatten)]
    pub runtime: slipway_host::cli::RuntimeArgs,
    /// The network between the hosts' jobs (cluster mode: needs --etcd and the host role):
    /// `vxlan` (each host's jobs in a /24 of --cluster-subnet claimed in etcd, the kernel
    /// forwarding between hosts through a VXLAN device), `host-gw` (the same /24s, routed via
    /// the hosts' LAN addresses: hosts on one L2 segment only), `none` (each host's --subnet,
    /// jobs reach other hosts' jobs only through routers). docs/cluster.md, "Overlay network".
    #[arg(long, env = "SLIPWAY_OVERLAY", default_value = "none", value_parser = parse_overlay)]
    pub overlay: Overlay,
    /// The subnet every host's jobs are in with --overlay, one /24 per host. With an explicit
    /// /24 inside it, --subnet asks for that /24 (refused while another host holds it).
    #[arg(long, env = "SLIPWAY_CLUSTER_SUBNET", default_value = "100.100.0.0/16")]
    pub cluster_subnet: String,
    /// The address other hosts reach this one's overlay at (VXLAN's endpoint, host-gw's next
    /// hop). Default: --host-listen's IP, else the source address of the default route.
    #[arg(long, env = "SLIPWAY_OVERLAY_IP")]
    pub overlay_ip: Option<std::net::Ipv4Addr>,
    /// Seconds a host's overlay subnet outlives it in etcd (tests shorten it).
    #[arg(long, hide = true, default_value_t = crate::overlay::LEASE_TTL,
          value_parser = clap::value_parser!(i64).range(3..=86_400))]
    pub overlay_lease_ttl: i64,
    #[command(flatten)]
    pub routing: Box<RoutingArgs>,
    /// Log lines kept per app (`slipway log`); older ones are dropped as new ones arrive.
    #[arg(long, env = "SLIPWAY_LOG_LINES", default_value_t = 10_000)]
    pub log_lines: u64,
    /// Also drop log lines older than this (`30d`, `12h`, `90m`, `3600s`). Default: by count only.
    #[arg(long, env = "SLIPWAY_LOG_MAX_AGE", value_parser = parse_age)]
    pub log_max_age: Option<Duration>,
    /// How often unused blobs are deleted (tests shorten it).
    #[arg(long, hide = true, default_value = "1h", value_parser = parse_age)]
    pub blob_gc_interval: Duration,
    /// How old an unused blob must be to be deleted (uploads in flight are younger).
    #[arg(long, hide = true, default_value = "1h", value_parser = parse_age)]
    pub blob_gc_grace: Duration,
    /// Connections the controller API (with git, the registry, blobs and logs) keeps open at
    /// once; past it new ones get a 503.
    #[arg(long, env = "SLIPWAY_API_MAX_CONNECTIONS", default_value_t = 1024)]
    pub api_max_connections: usize,
    /// At SIGTERM, how long the API's requests in flight (a `git push` under way) get to finish,
    /// in seconds; event streams and `log -f` end at once (docs/restarts.md).
    #[arg(long, env = "SLIPWAY_DRAIN_TIMEOUT", default_value = "60", value_parser = parse_seconds)]
    pub drain_timeout: Duration,
    /// Where this process serves Prometheus metrics (`GET /metrics`) for every role it runs
    /// (docs/metrics.md), or `none`. A port that is taken loses the metrics, with a warning.
    #[arg(long, env = "SLIPWAY_METRICS_LISTEN", default_value = "127.0.0.1:1114", value_parser = parse_metrics_listen)]
    pub metrics_listen: MetricsListen,
    /// The log lines' format on stderr: `text` (coloured only on a terminal) or `json` (one
    /// object per line, for a log collector).
    #[arg(long, env = "SLIPWAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Restore the platform backup FILE (`slipway cluster backup`) into the data dir, then
    /// start; refused when the data dir already holds a platform (docs/backup.md).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// With --restore: replace a data dir that holds a platform (it is moved aside, not deleted).
    #[arg(long, requires = "restore")]
    pub restore_force: bool,
    /// With --restore: exit once restored instead of starting (`scripts/up --restore`).
    #[arg(long, requires = "restore")]
    pub restore_only: bool,
}

/// `--metrics-listen`: an address, or `none` (no endpoint).
#[derive(Clone, Copy, Debug)]
pub struct MetricsListen(pub Option<SocketAddr>);

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    crate::metrics::parse_listen(s).map(MetricsListen)
}

/// `--overlay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    On(slipway_host::runc::overlay::Backend),
}

fn parse_overlay(s: &str) -> Result<Overlay, String> {
    use slipway_host::runc::overlay::Backend;
    match s {
        "vxlan" => Ok(Overlay::On(Backend::Vxlan)),
        "host-gw" => Ok(Overlay::On(Backend::HostGw)),
        "none" => Ok(Overlay::None),
        _ => Err(format!(
            "invalid overlay {s:?}: expected `vxlan`, `host-gw` or `none`"
        )),
    }
}

/// `--advertise`: an address (the listening port is added) or a whole base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advertise {
    Ip(IpAddr),
    Url(String),
}

impl Advertise {
    /// The base URL for a controller listening on `port`.
    pub fn url(&self, port: u16) -> String {
        match self {
            Advertise::Ip(ip) => format!("http://{}", SocketAddr::new(*ip, port)),
            Advertise::Url(u) => u.clone(),
        }
    }
}

fn parse_advertise(s: &str) -> Result<Advertise, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!(
                "--advertise {s}: not an address others can reach; give this machine's IP or a URL"
            ));
        }
        return Ok(Advertise::Ip(ip));
    }
    let bad = |why: &str| {
        format!(
            "--advertise {s:?}: {why}; expected an IP (10.0.0.5) or a URL (https://slipway.example.com)"
        )
    };
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| bad("not an IP, and not an http:// or https:// URL"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty()
        || host.len() > 2048
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "?#@\\\"'<>".contains(c))
    {
        return Err(bad(
            "the URL needs a host, and no query, fragment, user or quotes",
        ));
    }
    Ok(Advertise::Url(s.trim_end_matches('/').to_string()))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid tag {s:?}: expected KEY=VALUE")),
    }
}

/// `--fence-grace`: seconds (`5`, `5s`), `off` or 0 for never (a zero duration).
fn parse_fence_grace(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "off" | "0" | "0s" => Ok(Duration::ZERO),
        other => parse_age(other).map_err(|_| {
            format!("invalid --fence-grace {s:?}: expected seconds (e.g. 5 or 5s) or off")
        }),
    }
}

/// `30d`, `12h`, `90m`, `3600s` (or a number of seconds).
fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid age {s:?}: expected e.g. 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid age {s:?}: the unit is one of s, m, h, d")),
    };
    match n.checked_mul(secs) {
        Some(t) if t > 0 => Ok(Duration::from_secs(t)),
        _ => Err(format!(
            "invalid age {s:?}: must be more than 0 and not absurdly large"
        )),
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct RoutingArgs {
    /// The router's HTTP port (0: any free port). Default: 80 as root, 8080 otherwise.
    #[arg(long, env = "SLIPWAY_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// The router's HTTPS port (0: any free port). Default: 443 as root, 8443 otherwise.
    #[arg(long, env = "SLIPWAY_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// Address the router's HTTP, HTTPS and TCP-route listeners bind.
    #[arg(long, env = "SLIPWAY_ROUTER_IP", default_value = "0.0.0.0")]
    pub router_ip: IpAddr,
    /// Address of discovery's HTTP API (`/services/…`, SSE watches).
    #[arg(
        long,
        env = "SLIPWAY_DISCOVERY_LISTEN",
        default_value = "127.0.0.1:1111"
    )]
    pub discovery_listen: SocketAddr,
    /// Where discovery's DNS listens, UDP and TCP (`SERVICE.discover.`,
    /// `leader.SERVICE.discover.`, SRV; other names forwarded to --dns-upstream). `auto`: the
    /// jobs' bridge address, port 53, and containers resolve through it (off without a local
    /// host agent); `none`: off, containers use the host's /etc/resolv.conf; `IP:PORT`: there
    /// (containers use it only if that is the bridge address, or 0.0.0.0, on port 53).
    #[arg(long, env = "SLIPWAY_DNS_LISTEN", default_value = "auto", value_parser = parse_dns_listen)]
    pub dns_listen: DnsListen,
    /// The resolver discovery's DNS forwards other names to (`IP` or `IP:PORT`). Default: the
    /// first `nameserver` of the host's /etc/resolv.conf (a loopback one such as 127.0.0.53
    /// works: the DNS runs on the host).
    #[arg(long, env = "SLIPWAY_DNS_UPSTREAM", value_parser = parse_upstream)]
    pub dns_upstream: Option<SocketAddr>,
    /// Default HTTPS certificate chain (PEM file), for names without a route certificate.
    /// Default: a self-signed certificate for `localhost`, generated at start.
    #[arg(long, env = "SLIPWAY_ROUTER_CERT", requires = "router_key")]
    pub router_cert: Option<std::path::PathBuf>,
    /// The private key (PEM file) of --router-cert.
    #[arg(long, env = "SLIPWAY_ROUTER_KEY", requires = "router_cert")]
    pub router_key: Option<std::path::PathBuf>,
    /// The router's admin endpoint: `GET /metrics` (Prometheus text).
    #[arg(long, env = "SLIPWAY_ROUTER_ADMIN", default_value = "127.0.0.1:1112")]
    pub router_admin: SocketAddr,
    /// One log line per proxied request (target `slipway_router::access`).
    #[arg(long, env = "SLIPWAY_ACCESS_LOG")]
    pub access_log: bool,
    /// How long a router told to stop (SIGTERM) lets requests and TCP connections in flight
    /// finish, in seconds, before it exits anyway (docs/router.md, "Handoff, drain …").
    #[arg(long, env = "SLIPWAY_ROUTER_DRAIN_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub router_drain_timeout: Duration,
    /// Run no router (the same as leaving `router` out of --roles; discovery still runs).
    #[arg(long)]
    pub no_router: bool,
    /// The ports TCP routes may use, `FIRST-LAST` (Flynn's range by default). `route add tcp`
    /// outside it is refused, and so is a port another process holds.
    #[arg(long, env = "SLIPWAY_TCP_PORTS", default_value = "3000-3500", value_parser = parse_port_range)]
    pub tcp_ports: std::ops::RangeInclusive<u16>,
    /// Client connections the router keeps open at once (HTTP, HTTPS and TCP routes together);
    /// past it new ones are refused. Default: what fits the process's file descriptor limit
    /// next to the API and the host agent (printed at start).
    #[arg(long, env = "SLIPWAY_ROUTER_MAX_CONNECTIONS")]
    pub router_max_connections: Option<usize>,
    /// Networks (`10.1.0.0/16`, `127.0.0.1`) or exact addresses (`127.0.0.1:1112`;
    /// repeatable) discovery's API may register although they are this host's own (loopback,
    /// the host's addresses): by default those are refused, so that a registration cannot
    /// point the router at the host's own listeners.
    #[arg(long = "discovery-allow", value_parser = slipway_discovery::http::parse_allowed)]
    pub discovery_allow: Vec<slipway_discovery::http::Allowed>,
    /// Time a client has to send a request head to the API, discovery and the router's admin
    /// endpoint, which is also how long an idle kept-alive connection stays open (tests
    /// shorten it; it then applies to the router's HTTP listeners too).
    #[arg(long, hide = true, env = "SLIPWAY_HEADER_TIMEOUT", value_parser = parse_seconds)]
    pub header_timeout: Option<Duration>,
}

/// The control listeners' header (and idle keep-alive) timeout unless `--header-timeout`.
pub const CONTROL_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections discovery's API keeps open at once (watches included: one per router and host).
pub const DISCOVERY_MAX_CONNECTIONS: usize = 512;

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected seconds, e.g. 30 or 0.5"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("invalid duration {s:?}: 0.01 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("invalid port range {s:?}: expected FIRST-LAST, e.g. 3000-3500");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// `--dns-listen`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DnsListen {
    /// The local host agent's bridge address, port 53; off without a host agent.
    Auto,
    Off,
    At(SocketAddr),
}

fn parse_dns_listen(s: &str) -> Result<DnsListen, String> {
    match s {
        "auto" => Ok(DnsListen::Auto),
        "none" | "off" => Ok(DnsListen::Off),
        _ => s.parse().map(DnsListen::At).map_err(|_| {
            format!(
                "invalid address {s:?}: expected IP:PORT (e.g. 127.0.0.1:5353), `auto` or `none`"
            )
        }),
    }
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid resolver {s:?}: expected IP or IP:PORT (e.g. 1.1.1.1)"))
}

#[cfg(test)]
mod tests {
    use super::{Advertise, parse_advertise};

    #[test]
    fn advertise_takes_an_ip_or_a_plain_base_url() {
        assert_eq!(
            parse_advertise("10.0.0.5").unwrap().url(7070),
            "http://10.0.0.5:7070"
        );
        assert_eq!(
            parse_advertise("fd00::5").unwrap().url(7070),
            "http://[fd00::5]:7070"
        );
        assert_eq!(
            parse_advertise("https://slipway.example.com/").unwrap(),
            Advertise::Url("https://slipway.example.com".into())
        );
        assert_eq!(
            parse_advertise("http://10.0.0.5:8000").unwrap().url(7070),
            "http://10.0.0.5:8000"
        );
        for bad in [
            "0.0.0.0",
            "::",
            "slipway.example.com",
            "ftp://x",
            "http://",
            "http://a b",
            "http://u:p@host",
            "http://host?x=1",
            "http://host\"",
        ] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }
}
