//! The few git operations the CLI needs (the `slipway` remote an app is resolved from and that
//! `create` adds), done by running `git` in the current directory: no git library to build, and
//! the user's own git config applies.

use anyhow::{Result, bail};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// The remote `create` adds and commands resolve the app from.
pub const DEFAULT_REMOTE: &str = "slipway";

fn git(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("git").args(args).stdin(Stdio::null()).output()
}

/// Is the current directory inside a git work tree? (No git installed: no.)
pub fn in_work_tree() -> bool {
    git(&["rev-parse", "--is-inside-work-tree"])
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

/// The URL of remote `name`, if the current directory is in a repo that has it.
pub fn remote_url(name: &str) -> Option<String> {
    let out = git(&["remote", "get-url", "--", name]).ok()?;
    if !out.status.success() {
        return None;
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!url.is_empty()).then_some(url)
}

fn run(args: &[&str]) -> Result<()> {
    let out = match git(args) {
        Ok(out) => out,
        Err(e) => bail!("cannot run git: {e}"),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`git {}` failed: {}", args.join(" "), stderr.trim());
    }
    Ok(())
}

pub fn add_remote(name: &str, url: &str) -> Result<()> {
    run(&["remote", "add", "--", name, url])
}

pub fn set_remote_url(name: &str, url: &str) -> Result<()> {
    run(&["remote", "set-url", "--", name, url])
}

pub fn remove_remote(name: &str) -> Result<()> {
    run(&["remote", "remove", "--", name])
}

/// Makes git ask `slipway git-credentials` for the API key when it talks to `url`'s server,
/// in this repo only: `credential.<scheme://host:port>.helper`, after an empty value that
/// drops helpers from wider configs for this URL (they would prompt or store the key).
pub fn set_credential_helper(url: &str) -> Result<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("not an http(s) URL: {url}");
    };
    let origin = format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest));
    let key = format!("credential.{origin}.helper");
    let exe = helper_program(
        std::env::current_exe().ok().as_deref(),
        std::env::var_os("PATH").as_deref(),
    );
    let helper = format!("!'{}' git-credentials", exe.replace('\'', r"'\''"));
    run(&["config", "--local", "--replace-all", &key, ""])?;
    run(&["config", "--local", "--add", &key, &helper])
}

/// The program the credential helper runs: `slipway` when the first `slipway` in `path` (the
/// `PATH` of `create`) is the running binary `exe` (the same file, or a copy of it), so the
/// config survives upgrades and rebuilds of the binary found there; else `exe`'s absolute path
/// (a binary run from, say, a cargo target dir that is not in `PATH` at all).
pub fn helper_program(exe: Option<&Path>, path: Option<&OsStr>) -> String {
    let Some(exe) = exe else {
        return "slipway".into();
    };
    let found = path.and_then(|p| {
        std::env::split_paths(p)
            .filter(|d| d.is_absolute())
            .map(|d| d.join("slipway"))
            .find(|c| c.is_file())
    });
    if found.is_some_and(|f| same_binary(&f, exe)) {
        return "slipway".into();
    }
    exe.to_str()
        .map(String::from)
        .unwrap_or_else(|| "slipway".into())
}

/// Are `a` and `b` the same file, or files with the same bytes?
fn same_binary(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return true;
    }
    ma.len() == mb.len() && matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// The app a remote URL points at: its last path segment without `.git`
/// (`http://git.example/my-app.git` → `my-app`; scp-like `git@host:my-app.git` too).
pub fn app_from_remote_url(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_from_remote_urls() {
        for (url, app) in [
            ("http://127.0.0.1:8080/git/my-app.git", "my-app"),
            ("https://git.example.com/my-app.git/", "my-app"),
            ("https://git.example.com/my-app", "my-app"),
            ("ssh://git@example.com:2222/app2.git", "app2"),
            ("git@example.com:scp-app.git", "scp-app"),
        ] {
            assert_eq!(app_from_remote_url(url).as_deref(), Some(app), "{url}");
        }
        assert_eq!(app_from_remote_url("https://example.com/.git"), None);
        assert_eq!(app_from_remote_url(""), None);
    }

    #[test]
    fn the_helper_runs_slipway_from_path_when_it_is_this_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("target/debug/slipway");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::write(&exe, b"the binary").unwrap();
        let exe_s = exe.to_str().unwrap().to_string();
        let dir = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let path = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();
        let (linked, copied, other, empty) = (dir("linked"), dir("copied"), dir("other"), dir("e"));
        std::os::unix::fs::symlink(&exe, linked.join("slipway")).unwrap();
        std::fs::copy(&exe, copied.join("slipway")).unwrap();
        std::fs::write(other.join("slipway"), b"an older binary").unwrap();
        let helper = |dirs: &[&Path]| helper_program(Some(&exe), Some(&path(dirs)));
        assert_eq!(helper(&[&empty, &linked]), "slipway");
        assert_eq!(helper(&[&copied]), "slipway");
        // The first slipway in PATH is another binary: git would run that one.
        assert_eq!(helper(&[&other, &linked]), exe_s);
        assert_eq!(helper(&[&empty]), exe_s);
        assert_eq!(helper_program(Some(&exe), None), exe_s);
        assert_eq!(helper_program(None, None), "slipway");
    }
}
