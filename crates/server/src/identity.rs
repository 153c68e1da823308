//! The cluster's identity: the API key (users, the CLI, git) and the cluster token (hosts,
//! discovery, routers), both kept in the store's `cluster_secrets` so every controller on one
//! database answers the same ones, and copied to the data dir (0600) for the CLI and for
//! processes on the same machine that run no controller.
//!
//! The cluster credential is a bearer token, not mutual TLS: every internal listener already
//! speaks plain HTTP on loopback or the cluster network, a token needs no CA, no certificate
//! rotation and no TLS on the hot path of the host API's log and event streams, and it can be
//! handed to a new machine the way the API key is (an environment variable or a file). What it
//! does not give is transport secrecy: run the cluster network on a trusted segment (or a
//! tunnel) until TLS comes; see docs/security.md.

use anyhow::{Context, Result, bail};
use slipway_store::{API_KEY, CLUSTER_TOKEN, SqlStore};
use std::io::Read as _;
use std::path::Path;

/// The file in the data dir that holds the API key (what the CLI reads).
pub const API_KEY_FILE: &str = "api-key";
/// The file in the data dir that holds the cluster token.
pub const CLUSTER_TOKEN_FILE: &str = "cluster-token";

/// A secret from the environment variable `env` (its value given as `env_value`), else from
/// `file` (a `--…-file` flag named `flag`), trimmed; `None` when neither is given. An empty,
/// multi-word or unreadable secret is an error naming where it came from.
pub fn given_secret(
    env: &str,
    env_value: Option<String>,
    flag: &str,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<String>> {
    let (value, from) = match (env_value, file) {
        (Some(k), _) => (k, env.to_string()),
        (None, Some(f)) => (
            read_small(f).with_context(|| format!("cannot read {flag} {}", f.display()))?,
            format!("{flag} {}", f.display()),
        ),
        (None, None) => return Ok(None),
    };
    let value = value.trim();
    if value.is_empty() || value.len() >= 4096 || value.chars().any(|c| c.is_whitespace()) {
        bail!("the {what} in {from} is empty or not one word");
    }
    Ok(Some(value.to_string()))
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(4096)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// The secret in the data dir's `file`, if there is one (and it is not empty).
pub fn local_secret(data_dir: &Path, file: &str) -> Result<Option<String>> {
    let path = data_dir.join(file);
    match read_small(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `value` to the data dir's `file`, readable by its owner only, replacing it whole
/// (a temporary file renamed over it), unless it already holds `value`.
pub fn write_local_secret(data_dir: &Path, file: &str, value: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if local_secret(data_dir, file)?.as_deref() == Some(value) {
        return Ok(());
    }
    let path = data_dir.join(file);
    let tmp = data_dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{value}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// 256 random bits from the OS, as 64 hex digits.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a new cluster token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The API key and the cluster token of a process that runs the controller.
pub struct Identity {
    pub api_key: String,
    pub cluster_token: String,
}

/// Settles the cluster's identity in the store at a controller's start, and copies both
/// secrets to the data dir.
///
/// The API key: the one given (`SLIPWAY_API_KEY`, `--api-key-file`) is used, and stored when
/// the store has none; else the store's; else the data dir's `api-key` (a server from before
/// the key moved to the store) is imported; else one is generated. The cluster token: the
/// store's, else one generated (the cluster's creation). Both are offered with
/// `INSERT … ON CONFLICT DO NOTHING` and read back, so controllers starting at once agree.
/// The cluster token: the store's; else the one given (hosts provisioned before the cluster was
/// created); else one generated (the cluster's creation). A given token that differs from the
/// store's is ignored with a warning: every host and router has the store's.
pub async fn settle(
    store: &SqlStore,
    data_dir: &Path,
    given_key: Option<&str>,
    given_token: Option<&str>,
) -> Result<Identity> {
    let stored = store
        .secret(API_KEY)
        .await
        .context("cannot read the API key from the store")?;
    let api_key = match (given_key, stored) {
        (Some(given), stored) => {
            if stored.is_none() {
                store.secret_or_insert(API_KEY, given).await?;
            } else if stored.as_deref() != Some(given) {
                tracing::warn!(
                    "the API key given (SLIPWAY_API_KEY or --api-key-file) differs from the one in the store: this controller takes only the given one, the others the store's"
                );
            }
            given.to_string()
        }
        (None, Some(stored)) => stored,
        (None, None) => {
            let offer = match local_secret(data_dir, API_KEY_FILE)? {
                Some(old) => {
                    tracing::info!(
                        "importing the API key from {} into the store",
                        data_dir.join(API_KEY_FILE).display()
                    );
                    old
                }
                None => slipway_controller::generate_api_key(),
            };
            store
                .secret_or_insert(API_KEY, &offer)
                .await
                .context("cannot store the API key")?
        }
    };
    let cluster_token = match store.secret(CLUSTER_TOKEN).await? {
        Some(t) => t,
        None => {
            let offer = match given_token {
                Some(t) => t.to_string(),
                None => generate_token()?,
            };
            store
                .secret_or_insert(CLUSTER_TOKEN, &offer)
                .await
                .context("cannot store the cluster token")?
        }
    };
    if given_token.is_some_and(|t| t != cluster_token) {
        tracing::warn!(
            "the cluster token given (SLIPWAY_CLUSTER_TOKEN or --cluster-token-file) differs from the store's: this controller uses the store's, which every host and router must present"
        );
    }
    write_local_secret(data_dir, API_KEY_FILE, &api_key)?;
    write_local_secret(data_dir, CLUSTER_TOKEN_FILE, &cluster_token)?;
    Ok(Identity {
        api_key,
        cluster_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir()
                .join(format!("slipway-identity-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn secrets_come_from_the_env_or_a_file_never_empty() {
        let dir = Dir::new("given");
        let file = dir.path().join("t");
        std::fs::write(&file, "from-file\n").unwrap();
        let get = |env: Option<&str>, file: Option<&Path>| {
            given_secret("ENV", env.map(String::from), "--f", file, "token")
        };
        assert_eq!(get(None, None).unwrap(), None);
        assert_eq!(
            get(None, Some(&file)).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(get(Some("e"), Some(&file)).unwrap().as_deref(), Some("e"));
        std::fs::write(&file, " \n").unwrap();
        let e = get(None, Some(&file)).unwrap_err().to_string();
        assert!(e.contains("--f") && e.contains("empty"), "{e}");
        let e = get(None, Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read --f"), "{e}");
    }

    #[test]
    fn local_secrets_are_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("local");
        assert_eq!(local_secret(dir.path(), "s").unwrap(), None);
        write_local_secret(dir.path(), "s", "one").unwrap();
        write_local_secret(dir.path(), "s", "two").unwrap();
        assert_eq!(
            local_secret(dir.path(), "s").unwrap().as_deref(),
            Some("two")
        );
        let mode = std::fs::metadata(dir.path().join("s"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
