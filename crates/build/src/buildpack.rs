//! Which buildpacks a build runs, and fetching them: `BUILDPACK_URL` (one), else `.buildpacks`
//! (several, in order), else detection over the bundled ones. Each entry is a bundled name
//! (`python`) or a git URL (`https://…`, `file:///…`) with an optional `#ref` (branch, tag or
//! commit). Git URLs are cloned on the host into the build dir, then mounted read-only.

use std::path::{Path, PathBuf};
use std::process::Stdio;

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

/// Whether `s` is a git URL Slipway fetches (rather than a bundled name).
pub fn is_git_url(s: &str) -> bool {
    ["https://", "http://", "git://", "file://", "ssh://"]
        .iter()
        .any(|p| s.starts_with(p))
        || s.starts_with("git@")
}

/// Splits `url#ref`.
pub fn split_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('#') {
        Some((u, r)) if !r.is_empty() => (u, Some(r)),
        Some((u, _)) => (u, None),
        None => (s, None),
    }
}

/// Clones `url` (`#ref` honoured: a branch, tag or commit) into `dest`. Errors are for users.
pub async fn clone(spec: &str, dest: &Path) -> Result<(), String> {
    let (url, rref) = split_ref(spec);
    if url.starts_with('-') {
        return Err(format!("invalid buildpack URL {spec:?}"));
    }
    let run = |args: Vec<String>, dir: Option<PathBuf>| async move {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(&args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
            .await
            .map_err(|_| "git took longer than 5 minutes".to_string())?
            .map_err(|e| format!("running git: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
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
        None => run([shallow, vec!["--".into(), url.into(), d]].concat(), None).await,
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
                Ok(()) => Ok(()),
                Err(_) => {
                    let _ = tokio::fs::remove_dir_all(dest).await;
                    let full = vec![
                        "clone".to_string(),
                        "--quiet".into(),
                        "--".into(),
                        url.into(),
                        d,
                    ];
                    run(full, None).await?;
                    run(
                        vec![
                            "-c".into(),
                            "advice.detachedHead=false".into(),
                            "checkout".into(),
                            "--quiet".into(),
                            r.into(),
                            "--".into(),
                        ],
                        Some(dest.to_path_buf()),
                    )
                    .await
                    .map_err(|e| format!("no branch, tag or commit {r:?}: {e}"))
                }
            }
        }
    };
    res.map_err(|e| format!("fetching buildpack {spec} failed: {e}"))
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
        assert!(is_git_url("file:///srv/bp") && is_git_url("git@host:bp.git"));
        assert!(!is_git_url("python") && !is_git_url("/srv/bp"));
        assert_eq!(split_ref("file:///x#main"), ("file:///x", Some("main")));
        assert_eq!(split_ref("file:///x#"), ("file:///x", None));
        assert_eq!(split_ref("file:///x"), ("file:///x", None));
    }

    #[tokio::test]
    async fn a_url_that_looks_like_an_option_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = clone("--upload-pack=touch /tmp/x", &dir.path().join("bp"))
            .await
            .unwrap_err();
        assert!(err.contains("invalid buildpack URL"), "{err}");
    }
}
