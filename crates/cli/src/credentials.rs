//! `slipway git-credentials`: a git credential helper, so `git push slipway main` needs no
//! prompt. `slipway create` sets it on the remote's URL only (`credential.<url>.helper`, in the
//! repo's config); for `get` it answers `username=slipway` and the API key of the configured
//! cluster whose URL has the same scheme and host:port as the one git asks about.

use crate::config::{Config, config_path};
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// Reads git's `key=value` lines up to a blank line or EOF.
pub fn parse_request(input: impl BufRead) -> BTreeMap<String, String> {
    let mut req = BTreeMap::new();
    for line in input.lines().map_while(Result::ok) {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            req.insert(k.to_string(), v.to_string());
        }
    }
    req
}

/// `scheme://host:port` of a URL, as git's `protocol` and `host` fields spell it.
fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// The key for the cluster git asks about: `SLIPWAY_URL`/`SLIPWAY_KEY` if they match, else the
/// first configured cluster with the same origin.
pub fn key_for(
    config: &Config,
    env: Option<(String, String)>,
    req: &BTreeMap<String, String>,
) -> Option<String> {
    let want = (
        req.get("protocol")?.to_ascii_lowercase(),
        req.get("host")?.to_ascii_lowercase(),
    );
    let candidates = env.into_iter().chain(
        config
            .clusters
            .values()
            .map(|c| (c.url.clone(), c.key.clone())),
    );
    for (url, key) in candidates {
        if origin(&url).as_ref() == Some(&want) {
            return Some(key);
        }
    }
    None
}

/// Runs the helper for `action` (`get`; `store` and `erase` have nothing to do: the key lives
/// in the CLI config).
pub fn run(action: &str) -> Result<()> {
    let req = parse_request(std::io::stdin().lock());
    if action != "get" {
        return Ok(());
    }
    let config = Config::load(&config_path()?)?;
    let env = match (std::env::var("SLIPWAY_URL"), std::env::var("SLIPWAY_KEY")) {
        (Ok(u), Ok(k)) if !u.is_empty() => Some((u, k)),
        _ => None,
    };
    // No match: print nothing, and git asks the next helper or the user.
    if let Some(key) = key_for(&config, env, &req) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "username=slipway")?;
        writeln!(out, "password={key}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterEntry;

    #[test]
    fn answers_for_the_cluster_of_the_url() {
        let mut config = Config::default();
        for (name, url, key) in [
            ("a", "http://127.0.0.1:7070", "ka"),
            ("b", "https://paas.example.com/", "kb"),
        ] {
            config.clusters.insert(
                name.into(),
                ClusterEntry {
                    url: url.into(),
                    key: key.into(),
                },
            );
        }
        let req = parse_request(
            "protocol=http\nhost=127.0.0.1:7070\npath=demo.git\n\nignored=1\n".as_bytes(),
        );
        assert_eq!(req.get("ignored"), None);
        assert_eq!(key_for(&config, None, &req).as_deref(), Some("ka"));
        let req = parse_request("protocol=https\nhost=paas.example.com\n".as_bytes());
        assert_eq!(key_for(&config, None, &req).as_deref(), Some("kb"));
        let req = parse_request("protocol=http\nhost=127.0.0.1:9999\n".as_bytes());
        assert_eq!(key_for(&config, None, &req), None);
        let env = Some(("http://127.0.0.1:9999".to_string(), "ke".to_string()));
        assert_eq!(key_for(&config, env, &req).as_deref(), Some("ke"));
    }
}
