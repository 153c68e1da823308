//! What every command needs to know before it talks to the server: which cluster (and its
//! client) and which app. Both are resolved lazily, so `slipway cluster` works with no cluster
//! and `slipway apps` outside any repo.

use crate::config::{Config, Target, config_path};
use crate::git;
use anyhow::{Result, bail};
use slipway_client::Client;

/// `-a APP` after an app-scoped command (`slipway env -a APP`, Heroku's habit); the same flag
/// before the command (`slipway -a APP env`, Flynn's) is on the root. Global within the
/// command, so `slipway env set -a APP K=V` works too. Not global on the root: `server` and
/// `host` have flags of their own that must not collide with it.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct AppFlag {
    /// The app to act on [default: from the "slipway" git remote]
    #[arg(short = 'a', long = "app", value_name = "APP", global = true)]
    pub app: Option<String>,
}

pub struct Ctx {
    /// `-a APP`
    pub app: Option<String>,
    /// `-c CLUSTER`
    pub cluster: Option<String>,
}

impl Ctx {
    pub fn target(&self) -> Result<Target> {
        let config = Config::load(&config_path()?)?;
        let env = |k: &str| std::env::var(k).ok();
        config.resolve(
            self.cluster.as_deref(),
            env("SLIPWAY_URL"),
            env("SLIPWAY_KEY"),
        )
    }

    pub fn client(&self) -> Result<Client> {
        let target = self.target()?;
        Ok(Client::new(&target.url, &target.key)?)
    }

    /// The app this command is about: `-a APP` (after the command, else before it), else the
    /// repo's `slipway` git remote.
    pub fn app(&self, flag: &AppFlag) -> Result<String> {
        let given = flag.app.as_deref().or(self.app.as_deref());
        resolve_app(given, || git::remote_url(git::DEFAULT_REMOTE))
    }
}

/// `-a` wins; otherwise the app the remote points at. Takes the remote lookup as a function so
/// that tests don't need a repo.
pub fn resolve_app(flag: Option<&str>, remote: impl FnOnce() -> Option<String>) -> Result<String> {
    if let Some(app) = flag {
        if app.trim().is_empty() {
            bail!("the app name given with -a is empty");
        }
        return Ok(app.to_string());
    }
    match remote().as_deref().and_then(git::app_from_remote_url) {
        Some(app) => Ok(app),
        None => bail!(
            "no app specified: use -a APP or run inside a repo with a \"{}\" git remote",
            git::DEFAULT_REMOTE
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_remote() {
        let app = resolve_app(Some("a1"), || Some("http://h/other.git".into())).unwrap();
        assert_eq!(app, "a1");
    }

    #[test]
    fn remote_is_the_fallback() {
        let app = resolve_app(None, || Some("http://h:1/git/my-app.git".into())).unwrap();
        assert_eq!(app, "my-app");
    }

    #[test]
    fn neither_is_a_clear_error() {
        let err = resolve_app(None, || None).unwrap_err().to_string();
        assert_eq!(
            err,
            "no app specified: use -a APP or run inside a repo with a \"slipway\" git remote"
        );
        assert!(resolve_app(Some(""), || None).is_err());
    }
}
