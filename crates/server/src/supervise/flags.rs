//! The two children's command lines, made from the flags `slipway supervise` was given: the
//! server gets them all (with `--no-router`), the router only the routing ones, plus what it
//! needs to follow the server (docs/roles.md, "Two processes on one machine").

use anyhow::{Result, bail};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The routing flags that are the server's, not the router's: discovery and DNS run in the
/// server (the router process follows discovery over HTTP).
const SERVER_ONLY_ROUTING: [&str; 5] = [
    "discovery-listen",
    "dns-listen",
    "dns-upstream",
    "discovery-allow",
    "no-router",
];

/// The flags that only `supervise` takes (not passed on).
const SUPERVISE_ONLY: [&str; 2] = ["pid-file", "router-data-dir"];

/// The flags about the process itself rather than a role, which the router child takes too
/// (its log lines must be in the format the operator asked for, like the server's).
const BOTH_CHILDREN: [&str; 1] = ["log-format"];

/// The long flags of `cmd` and whether each takes a value.
fn long_flags(cmd: clap::Command) -> HashMap<String, bool> {
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            Some((long, a.get_action().takes_values()))
        })
        .collect()
}

/// A flag given on the command line: its long name and its tokens (`--x=v`, or `--x v`).
struct Given {
    name: String,
    tokens: Vec<String>,
}

/// Splits `argv` (what followed `supervise`) into flags; anything that is not a known long
/// flag is refused (the children would refuse it later, once per restart).
fn split(argv: &[String]) -> Result<Vec<Given>> {
    let mut known = long_flags(<crate::ServerArgs as clap::Args>::augment_args(
        clap::Command::new("server"),
    ));
    for f in SUPERVISE_ONLY {
        known.insert(f.to_string(), true);
    }
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            bail!("supervise: unexpected argument {a:?} (only --long flags are passed on)");
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, _)) => (n, true),
            None => (flag, false),
        };
        let Some(&takes_value) = known.get(name) else {
            bail!("supervise: unknown flag --{name}");
        };
        if name.starts_with("restore") {
            bail!(
                "supervise: --{name} would run again at each restart of the server: restore first with `slipway server --restore FILE --restore-only` (docs/backup.md)"
            );
        }
        let mut tokens = vec![a.clone()];
        if takes_value && !inline {
            match it.next() {
                Some(v) => tokens.push(v.clone()),
                None => bail!("supervise: --{name} needs a value"),
            }
        }
        out.push(Given {
            name: name.to_string(),
            tokens,
        });
    }
    Ok(out)
}

/// The server child's flags: every flag given but supervise's own, and `--no-router`.
pub fn server_flags(argv: &[String]) -> Result<Vec<String>> {
    let given = split(argv)?;
    if given.iter().any(|g| g.name == "roles") {
        bail!(
            "supervise runs every role, the router in a process of its own: --roles is not for it \
             (run `slipway server --roles …` for another split)"
        );
    }
    let mut out = vec!["server".to_string()];
    for g in given {
        if !SUPERVISE_ONLY.contains(&g.name.as_str()) && g.name != "no-router" {
            out.extend(g.tokens);
        }
    }
    out.push("--no-router".into());
    Ok(out)
}

/// The address the router child registers its admin endpoint at (as `router::register` makes
/// it: an unspecified IP is the `--advertise` one), if it registers one.
pub fn router_admin(args: &crate::ServerArgs) -> Option<SocketAddr> {
    crate::router::registered_admin(args.routing.router_admin, args.advertise.as_ref())
}

/// Where a child on this machine reaches what listens on `addr` (loopback for "any address").
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// What the router child follows and authenticates with.
pub struct RouterInputs<'a> {
    pub data_dir: &'a Path,
    pub controller_url: &'a str,
    pub discovery_url: &'a str,
    pub api_key_file: &'a Path,
    pub cluster_token_file: &'a Path,
    pub domain: &'a str,
}

/// The router child's flags: the routing flags given (but discovery's and DNS's) and what it
/// needs to follow the server.
pub fn router_flags(argv: &[String], inputs: &RouterInputs) -> Result<Vec<String>> {
    let routing = long_flags(<crate::RoutingArgs as clap::Args>::augment_args(
        clap::Command::new("routing"),
    ));
    let mut out: Vec<String> = [
        "server",
        "--roles",
        "router",
        "--no-register",
        "--controller-url",
        inputs.controller_url,
        "--discovery-url",
        inputs.discovery_url,
        "--domain",
        inputs.domain,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, path) in [
        ("--data-dir", inputs.data_dir),
        ("--api-key-file", inputs.api_key_file),
        ("--cluster-token-file", inputs.cluster_token_file),
    ] {
        out.push(flag.into());
        out.push(path.display().to_string());
    }
    for g in split(argv)? {
        let routing_flag =
            routing.contains_key(&g.name) && !SERVER_ONLY_ROUTING.contains(&g.name.as_str());
        if routing_flag || BOTH_CHILDREN.contains(&g.name.as_str()) {
            out.extend(g.tokens);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_server_gets_every_flag_and_the_router_the_routing_ones() {
        let argv = s(&[
            "--listen",
            "127.0.0.1:7070",
            "--http-port=8080",
            "--discovery-listen",
            "127.0.0.1:1111",
            "--pid-file",
            "/run/x.pid",
            "--access-log",
            "--router-admin",
            "127.0.0.1:1112",
            "--no-register",
        ]);
        let server = server_flags(&argv).unwrap();
        assert_eq!(
            server,
            s(&[
                "server",
                "--listen",
                "127.0.0.1:7070",
                "--http-port=8080",
                "--discovery-listen",
                "127.0.0.1:1111",
                "--access-log",
                "--router-admin",
                "127.0.0.1:1112",
                "--no-register",
                "--no-router",
            ])
        );
        let inputs = RouterInputs {
            data_dir: Path::new("/d/router"),
            controller_url: "http://127.0.0.1:7070",
            discovery_url: "http://127.0.0.1:1111",
            api_key_file: Path::new("/d/api-key"),
            cluster_token_file: Path::new("/d/cluster-token"),
            domain: "localhost",
        };
        let router = router_flags(&argv, &inputs).unwrap();
        let tail: Vec<&str> = router.iter().skip(16).map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--http-port=8080",
                "--access-log",
                "--router-admin",
                "127.0.0.1:1112"
            ]
        );
        assert!(router.windows(2).any(|w| w == ["--roles", "router"]));
        // `--log-format` is the process's, not a role's: both children log as asked.
        let json = s(&["--log-format", "json"]);
        assert!(server_flags(&json).unwrap().windows(2).any(|w| w == json));
        let router = router_flags(&json, &inputs).unwrap();
        assert!(router.windows(2).any(|w| w == json), "{router:?}");
        let e = server_flags(&s(&["--roles", "router"])).unwrap_err();
        assert!(e.to_string().contains("--roles is not for it"), "{e}");
        let e = server_flags(&s(&["--bogus"])).unwrap_err();
        assert!(e.to_string().contains("unknown flag --bogus"), "{e}");
        let e = server_flags(&s(&["--listen"])).unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");
        assert_eq!(
            local_url("0.0.0.0:7070".parse().unwrap()),
            "http://127.0.0.1:7070"
        );
    }
}
