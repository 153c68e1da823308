//! The CLI's config file: which clusters this user talks to, and which one by default.
//!
//! ```toml
//! default = "local"
//!
//! [clusters.local]
//! url = "http://127.0.0.1:8080"
//! key = "…"
//! ```
//!
//! It lives at `$SLIPWAY_CONFIG`, else `$XDG_CONFIG_HOME/slipway/config.toml`, else
//! `~/.config/slipway/config.toml`, and is written with mode 0600 because it holds API keys.
//! `SLIPWAY_URL` + `SLIPWAY_KEY` (both set) stand in for the config, for scripts and CI.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Name of the cluster used when `-c` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEntry {
    pub url: String,
    pub key: String,
}

/// The cluster a command talks to, once flags, environment and config are weighed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The config entry's name, or `$SLIPWAY_URL` when the environment chose.
    pub name: String,
    pub url: String,
    pub key: String,
}

/// Where the config file is, from the environment (a function, so tests need not mutate the
/// process environment).
pub fn config_path_with(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = set("SLIPWAY_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    if let Some(xdg) = set("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(xdg).join("slipway").join("config.toml"));
    }
    if let Some(home) = set("HOME") {
        return Ok(PathBuf::from(home)
            .join(".config")
            .join("slipway")
            .join("config.toml"));
    }
    bail!("cannot find a place for the config file: set SLIPWAY_CONFIG or HOME")
}

pub fn config_path() -> Result<PathBuf> {
    config_path_with(|k| std::env::var_os(k))
}

impl Config {
    /// Reads the config; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
    }

    /// Writes the config atomically (temp file + rename), readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string_pretty(self).context("cannot encode the config")?;
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // The mode above is filtered by the umask; make sure it is 0600 whatever it is.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!("cannot write {}: {e}", path.display())
        })
    }

    /// Adds a cluster. The first one becomes the default, as does any added with `make_default`.
    pub fn add(
        &mut self,
        name: &str,
        url: &str,
        key: &str,
        make_default: bool,
        force: bool,
    ) -> Result<()> {
        validate_cluster_name(name)?;
        slipway_client::Client::new(url, key)?;
        if self.clusters.contains_key(name) && !force {
            bail!("cluster {name:?} already exists (use -f to replace it)");
        }
        self.clusters.insert(
            name.to_string(),
            ClusterEntry {
                url: normalize_url(url),
                key: key.to_string(),
            },
        );
        if make_default || self.default_entry().is_none() {
            self.default = Some(name.to_string());
        }
        Ok(())
    }

    /// Removes a cluster; if it was the default and exactly one remains, that one is.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        if self.clusters.remove(name).is_none() {
            bail!("cluster {name:?} not found");
        }
        if self.default.as_deref() == Some(name) {
            self.default = match self.clusters.keys().collect::<Vec<_>>().as_slice() {
                [only] => Some((*only).clone()),
                _ => None,
            };
        }
        Ok(())
    }

    pub fn set_default(&mut self, name: &str) -> Result<()> {
        if !self.clusters.contains_key(name) {
            bail!("cluster {name:?} not found (see `slipway cluster`)");
        }
        self.default = Some(name.to_string());
        Ok(())
    }

    /// The default cluster's name, if it names an existing entry.
    pub fn default_entry(&self) -> Option<&str> {
        self.default
            .as_deref()
            .filter(|d| self.clusters.contains_key(*d))
    }

    /// What `slipway server` does on start: make sure the local CLI can reach it without any
    /// setup. An entry with this URL gets the (possibly new) key; otherwise a new entry is added
    /// as "default" (or "local", "local-2", … when taken), and made the default if there is
    /// none. Returns the entry's name.
    pub fn register_local(&mut self, url: &str, key: &str) -> String {
        let url = normalize_url(url);
        if let Some((name, entry)) = self.clusters.iter_mut().find(|(_, e)| e.url == url) {
            entry.key = key.to_string();
            let name = name.clone();
            if self.default_entry().is_none() {
                self.default = Some(name.clone());
            }
            return name;
        }
        let name = ["default", "local"]
            .into_iter()
            .map(String::from)
            .chain((2..).map(|n| format!("local-{n}")))
            .find(|n| !self.clusters.contains_key(n))
            .expect("an unbounded sequence has a free name");
        self.clusters.insert(
            name.clone(),
            ClusterEntry {
                url,
                key: key.to_string(),
            },
        );
        if self.default_entry().is_none() {
            self.default = Some(name.clone());
        }
        name
    }

    /// Picks the cluster: `-c NAME`, else `SLIPWAY_URL` + `SLIPWAY_KEY`, else the default.
    pub fn resolve(
        &self,
        cluster: Option<&str>,
        env_url: Option<String>,
        env_key: Option<String>,
    ) -> Result<Target> {
        let entry = |name: &str| -> Result<Target> {
            let e = self.clusters.get(name).ok_or_else(|| {
                anyhow!(
                    "cluster {name:?} not found (see `slipway cluster` for the configured ones)"
                )
            })?;
            Ok(Target {
                name: name.to_string(),
                url: e.url.clone(),
                key: e.key.clone(),
            })
        };
        if let Some(name) = cluster {
            return entry(name);
        }
        if let (Some(url), Some(key)) = (env_url, env_key)
            && !url.is_empty()
        {
            return Ok(Target {
                name: "$SLIPWAY_URL".into(),
                url,
                key,
            });
        }
        if let Some(name) = self.default_entry() {
            return entry(name);
        }
        if self.clusters.is_empty() {
            bail!(
                "no cluster configured: start one with `slipway server`, or add one with \
                 `slipway cluster add NAME URL KEY`"
            );
        }
        bail!("no default cluster: pick one with `slipway cluster default NAME` or use -c NAME")
    }
}

/// Called by `slipway server` on start (see [`Config::register_local`]), on the config file
/// the CLI would read.
pub fn register_local_cluster(url: &str, key: &str) -> Result<()> {
    let path = config_path()?;
    let mut config = Config::load(&path)?;
    let before = config.clone();
    config.register_local(url, key);
    if config != before {
        config.save(&path)?;
    }
    Ok(())
}

/// URLs are compared without a trailing slash.
fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        bail!("invalid cluster name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[
            ("SLIPWAY_CONFIG", "/c.toml"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_path_with(all).unwrap(), PathBuf::from("/c.toml"));
        let xdg = env(&[
            ("SLIPWAY_CONFIG", ""),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            config_path_with(xdg).unwrap(),
            PathBuf::from("/x/slipway/config.toml")
        );
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            config_path_with(home).unwrap(),
            PathBuf::from("/h/.config/slipway/config.toml")
        );
        assert!(config_path_with(env(&[])).is_err());
    }

    #[test]
    fn register_local_adds_then_updates() {
        let mut c = Config::default();
        assert_eq!(c.register_local("http://127.0.0.1:1/", "k1"), "default");
        assert_eq!(c.default.as_deref(), Some("default"));
        assert_eq!(c.clusters["default"].url, "http://127.0.0.1:1");
        // Same URL: the key is refreshed, nothing is added.
        assert_eq!(c.register_local("http://127.0.0.1:1", "k2"), "default");
        assert_eq!(c.clusters.len(), 1);
        assert_eq!(c.clusters["default"].key, "k2");
        // New URLs take the next free name and leave the default alone.
        assert_eq!(c.register_local("http://127.0.0.1:2", "k"), "local");
        assert_eq!(c.register_local("http://127.0.0.1:3", "k"), "local-2");
        assert_eq!(c.default.as_deref(), Some("default"));
    }

    #[test]
    fn register_local_becomes_default_when_there_is_none() {
        let mut c = Config::default();
        c.add("prod", "https://prod.example", "k", false, false)
            .unwrap();
        c.default = None;
        assert_eq!(c.register_local("http://127.0.0.1:1", "k"), "default");
        assert_eq!(c.default.as_deref(), Some("default"));
    }

    #[test]
    fn save_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut c = Config::default();
        c.add("a", "http://a:1", "key-a", false, false).unwrap();
        c.add("b", "http://b:2", "key-b", true, false).unwrap();
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Config::load(&path).unwrap(), c);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("default = \"b\""), "{text}");
        assert!(text.contains("[clusters.a]"), "{text}");
        assert_eq!(
            Config::load(&dir.path().join("missing.toml")).unwrap(),
            Config::default()
        );
        std::fs::write(&path, "default = [").unwrap();
        assert!(Config::load(&path).is_err());
    }

    #[test]
    fn add_remove_default() {
        let mut c = Config::default();
        c.add("one", "http://one", "k", false, false).unwrap();
        assert_eq!(
            c.default.as_deref(),
            Some("one"),
            "the first is the default"
        );
        c.add("two", "http://two", "k", false, false).unwrap();
        assert_eq!(c.default.as_deref(), Some("one"));
        assert!(c.add("two", "http://2", "k", false, false).is_err());
        c.add("two", "http://2", "k", false, true).unwrap();
        assert!(c.add("bad name", "http://x", "k", false, false).is_err());
        assert!(c.add("x", "not a url", "k", false, false).is_err());
        c.set_default("two").unwrap();
        assert!(c.set_default("three").is_err());
        c.remove("two").unwrap();
        assert_eq!(c.default.as_deref(), Some("one"), "the only one left");
        assert!(c.remove("two").is_err());
    }

    #[test]
    fn resolve_order() {
        let mut c = Config::default();
        let none = || -> Option<String> { None };
        assert!(
            c.resolve(None, none(), none())
                .unwrap_err()
                .to_string()
                .contains("no cluster configured")
        );
        c.add("a", "http://a", "ka", false, false).unwrap();
        c.add("b", "http://b", "kb", false, false).unwrap();
        assert_eq!(c.resolve(None, none(), none()).unwrap().name, "a");
        assert_eq!(c.resolve(Some("b"), none(), none()).unwrap().key, "kb");
        assert!(c.resolve(Some("zz"), none(), none()).is_err());
        // The environment overrides the default, but not an explicit -c.
        let env = c
            .resolve(None, Some("http://env".into()), Some("ke".into()))
            .unwrap();
        assert_eq!((env.url.as_str(), env.key.as_str()), ("http://env", "ke"));
        let only_url = c.resolve(None, Some("http://env".into()), None).unwrap();
        assert_eq!(only_url.name, "a");
        let flag = c
            .resolve(Some("b"), Some("http://env".into()), Some("ke".into()))
            .unwrap();
        assert_eq!(flag.url, "http://b");
        c.default = None;
        assert!(
            c.resolve(None, none(), none())
                .unwrap_err()
                .to_string()
                .contains("no default cluster")
        );
    }
}
