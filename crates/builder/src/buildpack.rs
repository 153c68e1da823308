//! Which buildpacks a build runs, and fetching them: `BUILDPACK_URL` (one), else `.buildpacks`
//! (several, in order), else detection over the bundled ones. Each entry is a bundled name
//! (`python`) or a git URL (`https://…`, `http://…`, `git://…`) with an optional `#ref`
//! (branch, tag or commit). Git URLs are cloned on the host into the build dir, then mounted
//! read-only.
//!
//! The clone runs on the server, as root, with a URL and a ref the pusher wrote, so it follows
//! the submodules' rules ([`crate::push::submodules`]): only http, https and git (a `file://`
//! URL or a path would read the server's own files, other apps' repos among them), git with an
//! empty environment, and a ref is checked to be a ref name (never an option: `#--pathspec-
//! from-file=/etc/shadow` once printed a root-only file into the push) and resolved to a commit
//! before anything is checked out.

use std::path::{Path, PathBuf};

/// How the buildpacks were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Detect over the bundled buildpacks; the first whose `bin/detect` passes runs.
    Detect(Vec<String>),
    /// These run in order, whatever their `bin/detect` says.
    Explicit(Vec<String>),
}

/// `BUILDPACK_URL` from the env, else the lines of the tree's `.buildpacks`, else detection.
pub fn choose(
    env: &std::collections::BTreeMap<String, String>,
    dot_buildpacks: Option<&str>,
    bundled_dir: &Path,
) -> Choice {
    if let Some(url) = env
        .get("BUILDPACK_URL")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        return Choice::Explicit(vec![url.to_string()]);
    }
    if let Some(text) = dot_buildpacks {
        let list: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if !list.is_empty() {
            return Choice::Explicit(list);
        }
    }
    Choice::Detect(bundled_order(bundled_dir))
}

/// The bundled buildpacks in detection order: `<dir>/order` (one name per line) if present,
/// else every buildpack in the dir by name; only those with a `bin/` dir.
pub fn bundled_order(dir: &Path) -> Vec<String> {
    let names: Vec<String> = match std::fs::read_to_string(dir.join("order")) {
        Ok(t) => t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(_) => {
            let mut all: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            all.sort();
            all
        }
    };
    names
        .into_iter()
        .filter(|n| is_bundled_name(n) && dir.join(n).join("bin").is_dir())
        .collect()
}

/// A bundled buildpack's name: a plain directory name, nothing that could walk elsewhere.
pub fn is_bundled_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Whether `spec` (`url#ref`) is a buildpack Slipway may fetch; else why not, in the user's
/// words. `bundled` lists the bundled names, for the hint.
pub(crate) fn check_spec(spec: &str, bundled: &[String]) -> Result<(), String> {
    let (url, rref) = split_ref(spec);
    if let Err(why) = crate::push::submodules::transport_allowed(url.trim()) {
        return Err(format!(
            "buildpack {} is refused: {why}; Slipway fetches buildpacks from https://, http:// \
             and git:// URLs (with an optional #branch, #tag or #commit), or uses a bundled \
             one by name ({})",
            crate::push::submodules::redact(url),
            bundled.join(", ")
        ));
    }
    if let Some(r) = rref {
        check_ref(r)?;
    }
    Ok(())
}

/// A branch, tag or commit name: git's ref name rules, narrowed to what people use; never
/// something git would read as an option.
fn check_ref(r: &str) -> Result<(), String> {
    let ok = r.len() <= 255
        && !r.starts_with(['-', '/', '.'])
        && !r.ends_with(['/', '.'])
        && !r.ends_with(".lock")
        && !r.contains("..")
        && !r.contains("//")
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "buildpack ref {:?} is not a branch, tag or commit name (letters, digits, '.', '_', \
             '-', '+' and '/', not starting with '-')",
            r.chars().take(100).collect::<String>()
        ))
    }
}

/// Splits `url#ref`.
pub fn split_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('#') {
        Some((u, r)) if !r.is_empty() => (u, Some(r)),
        Some((u, _)) => (u, None),
        None => (s, None),
    }
}

/// Clones `url` (`#ref` honoured: a branch, tag or commit) into `dest`, with the checks of
/// [`check_spec`] and git in an empty environment. Errors are for users.
pub(crate) async fn clone(spec: &str, dest: &Path) -> Result<(), String> {
    check_spec(spec, &[])?;
    let (url, rref) = split_ref(spec);
    let url = url.trim();
    // git's HOME: an empty dir next to the clone, gone with the build dir.
    let home = dest.with_extension("home");
    tokio::fs::create_dir_all(&home)
        .await
        .map_err(|e| format!("cannot make a dir for git: {e}"))?;
    let run = |args: Vec<String>, dir: Option<PathBuf>| {
        let mut cmd = crate::push::submodules::untrusted_git(&home);
        cmd.args(&args);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        async move {
            let mut cmd = tokio::process::Command::from(cmd);
            cmd.kill_on_drop(true);
            let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
                .await
                .map_err(|_| "git took longer than 5 minutes".to_string())?
                .map_err(|e| format!("running git: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        }
    };
    let d = dest.display().to_string();
    let shallow = vec![
        "clone".to_string(),
        "--quiet".into(),
        "--depth=1".into(),
        "--recurse-submodules".into(),
    ];
    let res = match rref {
        None => run([shallow, vec!["--".into(), url.into(), d]].concat(), None)
            .await
            .map(drop),
        Some(r) => {
            // A branch or tag clones shallow; a commit needs the full history.
            let by_name = [
                shallow,
                vec![
                    "--branch".into(),
                    r.into(),
                    "--".into(),
                    url.into(),
                    d.clone(),
                ],
            ]
            .concat();
            match run(by_name, None).await {
                Ok(_) => Ok(()),
                Err(_) => {
                    async {
                        let _ = tokio::fs::remove_dir_all(dest).await;
                        let full = vec![
                            "clone".to_string(),
                            "--quiet".into(),
                            "--".into(),
                            url.into(),
                            d,
                        ];
                        run(full, None).await?;
                        // The ref as a commit first: only a commit id reaches checkout.
                        let at = Some(dest.to_path_buf());
                        let commit = run(
                            vec![
                                "rev-parse".into(),
                                "--verify".into(),
                                "--quiet".into(),
                                "--end-of-options".into(),
                                format!("{r}^{{commit}}"),
                            ],
                            at.clone(),
                        )
                        .await
                        .ok()
                        .filter(|c| c.len() >= 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| format!("no branch, tag or commit {r:?}"))?;
                        run(
                            vec![
                                "-c".into(),
                                "advice.detachedHead=false".into(),
                                "checkout".into(),
                                "--quiet".into(),
                                "--detach".into(),
                                commit,
                            ],
                            at,
                        )
                        .await
                        .map(drop)
                    }
                    .await
                }
            }
        }
    };
    res.map_err(|e| {
        format!(
            "fetching buildpack {} failed: {e}",
            crate::push::submodules::redact(spec)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn buildpack_url_then_dot_buildpacks_then_detection() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b", "a", "c"] {
            std::fs::create_dir_all(dir.path().join(n).join("bin")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join(".hidden/bin")).unwrap();
        let mut env = BTreeMap::new();
        // No order file: every buildpack, by name.
        assert_eq!(
            choose(&env, None, dir.path()),
            Choice::Detect(vec!["a".into(), "b".into(), "c".into()])
        );
        std::fs::write(dir.path().join("order"), "c\n# x\nmissing\na\n../etc\n").unwrap();
        assert_eq!(
            choose(&env, Some("# only comments\n\n"), dir.path()),
            Choice::Detect(vec!["c".into(), "a".into()])
        );
        assert_eq!(
            choose(&env, Some("a\n https://x/y.git#v1 \n"), dir.path()),
            Choice::Explicit(vec!["a".into(), "https://x/y.git#v1".into()])
        );
        env.insert("BUILDPACK_URL".into(), " b ".into());
        assert_eq!(
            choose(&env, Some("a\n"), dir.path()),
            Choice::Explicit(vec!["b".into()])
        );
    }

    #[test]
    fn names_urls_and_refs() {
        assert!(is_bundled_name("python") && is_bundled_name("my_bp-2.0"));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(!is_bundled_name(bad), "{bad}");
        }
        assert_eq!(split_ref("file:///x#main"), ("file:///x", Some("main")));
        assert_eq!(split_ref("file:///x#"), ("file:///x", None));
        assert_eq!(split_ref("file:///x"), ("file:///x", None));
    }

    #[test]
    fn only_http_https_and_git_urls_and_ref_names_are_fetched() {
        let names = ["python".to_string(), "nodejs".to_string()];
        for ok in [
            "https://github.com/heroku/heroku-buildpack-python",
            "git://127.0.0.1:9418/bp.git#v1.2",
            "http://h/bp.git#feature/x",
            "https://h/bp.git#0123456789abcdef0123456789abcdef01234567",
        ] {
            check_spec(ok, &names).unwrap();
        }
        for (bad, why) in [
            (
                "file:///var/lib/slipway/repos/x.git#main",
                "file:// URLs and paths would read the server's own files",
            ),
            (
                "/var/lib/slipway/repos/x.git",
                "would read the server's own files",
            ),
            ("../other.git", "would read the server's own files"),
            (
                "--upload-pack=touch /tmp/x",
                "would read the server's own files",
            ),
            ("ext::sh -c id", "the ext:: transport runs commands"),
            ("ssh://git@h/bp.git", "the server's own keys"),
            ("git@h:bp.git", "the server's own keys"),
            (
                "https://h/bp.git#--pathspec-from-file=/etc/shadow",
                "is not a branch, tag or commit name",
            ),
            ("https://h/bp.git#-b", "is not a branch, tag or commit name"),
            (
                "https://h/bp.git#a..b",
                "is not a branch, tag or commit name",
            ),
            (
                "https://h/bp.git#a b",
                "is not a branch, tag or commit name",
            ),
        ] {
            let e = check_spec(bad, &names).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = check_spec("file:///x", &names).unwrap_err();
        assert!(
            e.contains("or uses a bundled one by name (python, nodejs)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_ref_that_is_an_option_never_reaches_git() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "SECRET-LINE\n").unwrap();
        let spec = format!(
            "git://127.0.0.1:1/x.git#--pathspec-from-file={}",
            secret.display()
        );
        let err = clone(&spec, &dir.path().join("bp")).await.unwrap_err();
        assert!(err.contains("is not a branch, tag or commit name"), "{err}");
        assert!(!err.contains("SECRET-LINE"), "{err}");
        let err = clone("--upload-pack=touch /tmp/x", &dir.path().join("bp"))
            .await
            .unwrap_err();
        assert!(err.contains("is refused"), "{err}");
    }
}
