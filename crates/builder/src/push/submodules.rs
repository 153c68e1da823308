//! Submodules of a pushed commit (issue 5: "checkout of the pushed commit, submodules
//! included"): each gitlink is fetched at the commit the tree pins, from the URL `.gitmodules`
//! gives it, and its files are unpacked at its path with the checks of [`super::source`]. This
//! runs on the server with URLs the pusher chose, so only http, https and git are fetched, with
//! none of the server user's git config or credentials, within a time and size budget.

use super::source::{SourceError, Tally, archive_into, git_in, human, is_commit_id};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// All submodule fetches of a push together may take this long: a slow or stalled remote must
/// not hold the app's push lock for the whole build time limit.
pub const SUBMODULE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// All submodule fetches of a push together may download this much (what git stores, packs or
/// loose objects): the same cap as a push itself ([`crate::receiver::MAX_PUSH_BYTES`]). Their
/// files also count towards the source limit.
pub const SUBMODULE_FETCH_BYTES: u64 = crate::receiver::MAX_PUSH_BYTES;
/// Submodules (nested ones included) a push may have: each one is a fetch from the server.
pub const MAX_SUBMODULES: usize = 50;
/// The transports submodules are fetched with. Not `file` or local paths (they would read the
/// server's own files, other apps' repos among them), not `ext` (it runs a command), not `ssh`
/// (it would log in with the server's own keys).
pub(crate) const SUBMODULE_PROTOCOLS: &str = "http:https:git";

/// Unpacks the submodules of `commit` (nested ones too) into `dest`, which already holds the
/// commit's own files (`total` of them); returns the new total. Blocking.
pub(super) fn unpack_all(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    dest: &Path,
    max_bytes: u64,
    mut total: Tally,
    say: &mut dyn FnMut(String),
) -> Result<Tally, SourceError> {
    if gitlinks(repo, quarantine, commit)?.is_empty() {
        return Ok(total);
    }
    // The fetched submodule repos live next to `dest` (in the build's scratch dir) and go
    // when the checkout is done: only their files are built.
    let scratch = tempfile::Builder::new()
        .prefix("submodules-")
        .tempdir_in(dest.parent().unwrap_or(Path::new("/tmp")))
        .map_err(|e| SourceError::Internal(format!("cannot make a scratch dir: {e}")))?;
    let mut fetch = Fetcher {
        scratch: scratch.path(),
        timeout: SUBMODULE_TIMEOUT,
        deadline: Instant::now() + SUBMODULE_TIMEOUT,
        max_bytes: SUBMODULE_FETCH_BYTES,
        fetched: 0,
        count: 0,
    };
    struct Level {
        repo: PathBuf,
        quarantine: Option<PathBuf>,
        commit: String,
        prefix: String,
        url: Option<String>,
    }
    let mut queue = VecDeque::from([Level {
        repo: repo.to_path_buf(),
        quarantine: quarantine.map(Path::to_path_buf),
        commit: commit.to_string(),
        prefix: String::new(),
        url: None,
    }]);
    while let Some(level) = queue.pop_front() {
        let q = level.quarantine.as_deref();
        let links = gitlinks(&level.repo, q, &level.commit)?;
        if links.is_empty() {
            continue;
        }
        let urls = gitmodules_urls(&level.repo, q, &level.commit)?;
        for (path, pinned) in links {
            let full = format!("{}{path}", level.prefix);
            let Some(url) = urls.get(&path) else {
                say(format!(
                    "-----> {full} is a submodule without a URL in .gitmodules (an embedded \
                     repository?): it is not built"
                ));
                continue;
            };
            let url = submodule_url(&full, url, level.url.as_deref())?;
            say(format!(
                "-----> Fetching submodule {full} ({}) at {}",
                redact(&url),
                &pinned[..12.min(pinned.len())]
            ));
            let sub_repo = fetch.fetch(&full, &url, &pinned)?;
            let prefix = format!("{full}/");
            total = archive_into(&sub_repo, None, &pinned, &prefix, dest, max_bytes, total)?;
            queue.push_back(Level {
                repo: sub_repo,
                quarantine: None,
                commit: pinned,
                prefix,
                url: Some(url),
            });
        }
    }
    Ok(total)
}

/// The submodules (gitlinks) of `commit`: (path, pinned commit). Blocking.
pub fn gitlinks(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
) -> Result<Vec<(String, String)>, SourceError> {
    let out = git_in(repo, quarantine)
        .args(["ls-tree", "-r", "-z", commit])
        .output()
        .map_err(|e| SourceError::Internal(format!("cannot run git ls-tree: {e}")))?;
    if !out.status.success() {
        return Err(SourceError::Internal(format!(
            "git ls-tree failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // `<mode> <type> <object>\t<path>`, NUL-terminated.
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (meta, path) = entry.split_once('\t')?;
            let mut meta = meta.split(' ');
            (meta.next()? == "160000")
                .then(|| meta.nth(1))
                .flatten()
                .map(|sha| (path.to_string(), sha.to_string()))
        })
        .collect())
}

/// `.gitmodules` of `commit` as path → URL (none if it has no `.gitmodules`).
fn gitmodules_urls(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
) -> Result<BTreeMap<String, String>, SourceError> {
    let out = git_in(repo, quarantine)
        .args(["config", "-z", "--blob"])
        .arg(format!("{commit}:.gitmodules"))
        .args(["--get-regexp", r"^submodule\..*\.(path|url)$"])
        .output()
        .map_err(|e| SourceError::Internal(format!("cannot run git config: {e}")))?;
    // `key\nvalue\0` per entry; no `.gitmodules` (or no entries) is an error exit: no URLs.
    let mut paths = BTreeMap::new();
    let mut urls = BTreeMap::new();
    for entry in out.stdout.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('\n') else {
            continue;
        };
        let Some(key) = key.strip_prefix("submodule.") else {
            continue;
        };
        if let Some(name) = key.strip_suffix(".path") {
            paths.insert(name.to_string(), value.to_string());
        } else if let Some(name) = key.strip_suffix(".url") {
            urls.insert(name.to_string(), value.to_string());
        }
    }
    Ok(paths
        .into_iter()
        .filter_map(|(name, path)| Some((path, urls.get(&name)?.clone())))
        .collect())
}

/// The URL submodule `path` is fetched from, or why it is refused. `parent` is the URL of the
/// submodule it is in (None for the pushed repo's own: relative to that there is nothing
/// outside the server to resolve against).
pub fn submodule_url(path: &str, url: &str, parent: Option<&str>) -> Result<String, SourceError> {
    let refuse = |why: &str| {
        SourceError::Refused(format!(
            "submodule {path}: {} is refused: {why}; Slipway fetches submodules from https://, \
             http:// and git:// URLs only (change the URL in .gitmodules, or vendor the files \
             into the repo)",
            redact(url)
        ))
    };
    let url = url.trim();
    if url.starts_with("./") || url.starts_with("../") {
        let Some(parent) = parent else {
            return Err(refuse(
                "a relative URL names a repo next to this one on the server",
            ));
        };
        let mut base = parent.trim_end_matches('/').to_string();
        let mut rest = url;
        loop {
            if let Some(r) = rest.strip_prefix("./") {
                rest = r;
            } else if let Some(r) = rest.strip_prefix("../") {
                rest = r;
                let cut = base
                    .rfind('/')
                    .filter(|i| base[..*i].contains("://") && !base[..*i].ends_with('/'));
                match cut {
                    Some(i) => base.truncate(i),
                    None => return Err(refuse("it leaves the parent submodule's server")),
                }
            } else {
                break;
            }
        }
        return submodule_url(path, &format!("{base}/{rest}"), None);
    }
    transport_allowed(url).map_err(refuse)?;
    Ok(url.to_string())
}

/// Whether the server may fetch `url` (a submodule's or a buildpack's): `Ok` for http, https
/// and git URLs; else why not, in words.
pub fn transport_allowed(url: &str) -> Result<(), &'static str> {
    let lower = url.to_ascii_lowercase();
    if ["https://", "http://", "git://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return Ok(());
    }
    Err(
        if lower.starts_with("file:")
            || url.starts_with('/')
            || url.starts_with('.')
            || !url.contains(':')
        {
            "file:// URLs and paths would read the server's own files"
        } else if lower.starts_with("ext::") || lower.contains("::") {
            "the ext:: transport runs commands on the server"
        } else if lower.starts_with("ssh://") || lower.contains('@') || url.contains(':') {
            "ssh would log in with the server's own keys"
        } else {
            "unknown transport"
        },
    )
}

/// `url` without a `user:password@` part, for lines the pusher sees.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Fetches submodule commits into bare repos under `scratch`, within the push's submodule
/// time and size budget.
struct Fetcher<'a> {
    scratch: &'a Path,
    /// All fetches end by `deadline` (`timeout` after the first began) and bring at most
    /// `max_bytes` in all.
    timeout: Duration,
    deadline: Instant,
    max_bytes: u64,
    fetched: u64,
    count: usize,
}

impl Fetcher<'_> {
    /// A bare repo with `commit` of `url` in it.
    fn fetch(&mut self, path: &str, url: &str, commit: &str) -> Result<PathBuf, SourceError> {
        self.count += 1;
        if self.count > MAX_SUBMODULES {
            return Err(SourceError::Refused(format!(
                "the pushed tree has more than {MAX_SUBMODULES} submodules (nested ones \
                 included): vendor some of them into the repo"
            )));
        }
        if !is_commit_id(commit) {
            return Err(SourceError::Refused(format!(
                "submodule {path} pins {commit:?}, which is not a commit id"
            )));
        }
        let repo = self.scratch.join(format!("{}.git", self.count));
        let init = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SourceError::Internal(format!("cannot run git init: {e}")))?;
        if !init.status.success() {
            return Err(SourceError::Internal(format!(
                "git init failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }
        // Just the pinned commit, shallow (servers speaking git's protocol v2 allow any
        // reachable commit); else every branch and tag, and the commit must be among them.
        let first = self.run_fetch(&repo, path, url, &["--depth=1", "--", url, commit])?;
        if first.is_err() {
            let refs = [
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ];
            if let Err(e) = self.run_fetch(&repo, path, url, &refs)? {
                return Err(SourceError::Refused(format!(
                    "cannot fetch submodule {path} from {}: {e}",
                    redact(url)
                )));
            }
        }
        let has = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["cat-file", "-e"])
            .arg(format!("{commit}^{{commit}}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            return Err(SourceError::Refused(format!(
                "submodule {path}: commit {commit} is not in {} (was it pushed there?)",
                redact(url)
            )));
        }
        Ok(repo)
    }

    /// One `git fetch` with the protocol whitelist and no config, credentials or prompts of
    /// the server's user; killed at the deadline or over the size budget. Ok(Err(git's
    /// message)) when git failed on its own.
    fn run_fetch(
        &mut self,
        repo: &Path,
        path: &str,
        url: &str,
        args: &[&str],
    ) -> Result<Result<(), String>, SourceError> {
        let io = |e: std::io::Error| SourceError::Internal(format!("git fetch: {e}"));
        let log = repo.join("slipway-fetch.log");
        let mut cmd = untrusted_git(self.scratch);
        let before = dir_size(repo);
        let mut child = cmd
            .arg("--git-dir")
            .arg(repo)
            .args(["-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(io)?)
            .spawn()
            .map_err(io)?;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(io)? {
                break st;
            }
            let now = dir_size(repo).saturating_sub(before);
            let over_time = Instant::now() > self.deadline;
            if over_time || self.fetched + now > self.max_bytes {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.over_limit(path, url, over_time));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // A fetch may finish between two looks at its size.
        self.fetched += dir_size(repo).saturating_sub(before);
        if self.fetched > self.max_bytes {
            return Err(self.over_limit(path, url, false));
        }
        if status.success() {
            return Ok(Ok(()));
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("git fetch failed")
            .to_string();
        Ok(Err(last))
    }
}

impl Fetcher<'_> {
    /// The error of a fetch stopped at the deadline (`over_time`) or over the size budget.
    fn over_limit(&self, path: &str, url: &str, over_time: bool) -> SourceError {
        SourceError::Refused(if over_time {
            let t = self.timeout.as_secs();
            let t = if t.is_multiple_of(60) {
                format!("{} min", t / 60)
            } else {
                format!("{t} s")
            };
            format!(
                "fetching submodule {path} from {} took too long: submodules may take {t} in all",
                redact(url)
            )
        } else {
            format!(
                "submodule {path} from {} is over the {} limit for fetched submodules: vendor \
                 what the app needs into the repo",
                redact(url),
                human(self.max_bytes)
            )
        })
    }
}

/// `git` for fetching what a user named (submodules, buildpacks) on the server: an empty
/// environment (none of the server's config, credentials, hooks or `GIT_*` variables; only
/// `PATH`, the proxy and CA settings), `HOME` at `home`, no prompt, and only the
/// [`SUBMODULE_PROTOCOLS`] transports (for nested submodules too).
pub(crate) fn untrusted_git(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", SUBMODULE_PROTOCOLS);
    for var in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.args(["-c", "protocol.allow=never", "-c", "credential.helper="])
        .stdin(Stdio::null());
    cmd
}

/// Bytes of the files under `dir` (symlinks not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_testkit::GitDaemon;

    #[test]
    fn only_http_https_and_git_urls_are_fetched_and_relative_ones_resolve_in_submodules() {
        let ok = |url: &str, parent: Option<&str>| submodule_url("lib", url, parent).unwrap();
        assert_eq!(
            ok("https://h.example/a/b.git", None),
            "https://h.example/a/b.git"
        );
        assert_eq!(
            ok("git://127.0.0.1:9418/b.git", None),
            "git://127.0.0.1:9418/b.git"
        );
        assert_eq!(ok("HTTP://h/b", None), "HTTP://h/b");
        assert_eq!(
            ok("../c.git", Some("https://h.example/org/b.git")),
            "https://h.example/org/c.git"
        );
        assert_eq!(
            ok("./../../c.git", Some("https://h.example/org/b.git/")),
            "https://h.example/c.git"
        );
        for (url, parent, why) in [
            (
                "file:///srv/other.git",
                None,
                "would read the server's own files",
            ),
            (
                "/data/repos/x.git",
                None,
                "would read the server's own files",
            ),
            (
                "data/repos/x.git",
                None,
                "would read the server's own files",
            ),
            (
                "../other.git",
                None,
                "names a repo next to this one on the server",
            ),
            (
                "../../../x.git",
                Some("git://h/a.git"),
                "leaves the parent submodule's server",
            ),
            (
                "ext::sh -c touch% /tmp/pwned",
                None,
                "ext:: transport runs commands",
            ),
            ("ssh://git@h/x.git", None, "the server's own keys"),
            ("git@github.com:org/x.git", None, "the server's own keys"),
        ] {
            let e = submodule_url("vendor/lib", url, parent)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("submodule vendor/lib: "), "{e}");
            assert!(e.contains(why), "{url}: {e}");
            assert!(
                e.contains("from https://, http:// and git:// URLs only"),
                "{e}"
            );
        }
        assert_eq!(redact("https://u:secret@h/x.git"), "https://h/x.git");
        assert_eq!(redact("https://h/x@y.git"), "https://h/x@y.git");
    }

    /// `git` in `dir` with an identity; stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.email=a@b", "-c", "user.name=a"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A work tree at `dir` with `files` and `links` (path, commit) committed; its HEAD.
    fn repo_with(dir: &Path, files: &[(&str, &str)], links: &[(&str, &str)]) -> String {
        std::fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        for (path, content) in files {
            std::fs::write(dir.join(path), content).unwrap();
            git(dir, &["add", path]);
        }
        for (path, commit) in links {
            let info = format!("160000,{commit},{path}");
            git(dir, &["update-index", "--add", "--cacheinfo", &info]);
        }
        git(dir, &["commit", "-qm", "c"]);
        git(dir, &["rev-parse", "HEAD"])
    }

    #[test]
    fn a_stalled_fetch_stops_at_the_deadline_and_a_big_one_at_the_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        // A "git daemon" that accepts and never answers.
        let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = stalled.local_addr().unwrap().port();
        let mut f = Fetcher {
            scratch: tmp.path(),
            timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(1),
            max_bytes: 1 << 30,
            fetched: 0,
            count: 0,
        };
        let t0 = Instant::now();
        let url = format!("git://127.0.0.1:{port}/x.git");
        let e = f.fetch("vendor/x", &url, &"a".repeat(40)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let want = format!(
            "fetching submodule vendor/x from {url} took too long: submodules may take 1 s in all"
        );
        assert_eq!(e.to_string(), want);

        let base = tmp.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let head = repo_with(&tmp.path().join("w"), &[("f", "some bytes\n")], &[]);
        git(tmp.path(), &["init", "-q", "--bare", "base/big.git"]);
        git(
            &tmp.path().join("w"),
            &["push", "-q", "../base/big.git", "main"],
        );
        let daemon = GitDaemon::start(&base);
        let mut f = Fetcher {
            scratch: tmp.path(),
            timeout: Duration::from_secs(60),
            deadline: Instant::now() + Duration::from_secs(60),
            max_bytes: 100,
            fetched: 0,
            count: 0,
        };
        let url = daemon.url("big.git");
        let e = f.fetch("vendor/big", &url, &head).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "submodule vendor/big from {url} is over the 100 B limit for fetched submodules"
            )),
            "{e}"
        );
        drop(stalled);
    }

    #[test]
    fn nested_submodules_are_fetched_at_their_pinned_commits_and_file_urls_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let daemon = GitDaemon::start(&base);
        let url = |name: &str| daemon.url(name);
        let publish = |work: &Path, name: &str| {
            let bare = base.join(name);
            git(
                tmp.path(),
                &["init", "-q", "--bare", bare.to_str().unwrap()],
            );
            git(work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        };
        // inner.git ← lib.git (by a relative URL) ← the pushed repo.
        let inner = repo_with(&tmp.path().join("inner"), &[("inner.txt", "inner\n")], &[]);
        publish(&tmp.path().join("inner"), "inner.git");
        let lib_dir = tmp.path().join("lib");
        let modules = "[submodule \"inner\"]\n\tpath = inner\n\turl = ../inner.git\n";
        let lib_tip = repo_with(
            &lib_dir,
            &[("lib.txt", "v2\n"), (".gitmodules", modules)],
            &[("inner", &inner)],
        );
        // The superproject pins that commit, which is no longer lib's branch tip, and has an
        // embedded repo without a .gitmodules entry.
        repo_with(&lib_dir, &[("lib.txt", "v3\n")], &[]);
        publish(&lib_dir, "lib.git");
        let modules = format!(
            "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = {}\n",
            url("lib.git")
        );
        let app = tmp.path().join("app");
        let head = repo_with(
            &app,
            &[("Procfile", "web: x\n"), (".gitmodules", &modules)],
            &[("vendor/lib", &lib_tip), ("embedded", &"1".repeat(40))],
        );
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut lines = Vec::new();
        let repo = app.join(".git");
        let total = super::super::source::checkout(&repo, None, &head, &dest, 1 << 20, &mut |l| {
            lines.push(l)
        })
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("vendor/lib/lib.txt"), "v2\n");
        assert_eq!(read("vendor/lib/inner/inner.txt"), "inner\n");
        assert!(dest.join("embedded").is_dir());
        assert_eq!(
            total,
            std::fs::metadata(dest.join("Procfile")).unwrap().len()
                + std::fs::metadata(dest.join(".gitmodules")).unwrap().len()
                + 3
                + 6
                + std::fs::metadata(dest.join("vendor/lib/.gitmodules"))
                    .unwrap()
                    .len()
        );
        let joined = lines.join("\n");
        assert!(
            joined.contains(&format!(
                "-----> Fetching submodule vendor/lib ({}) at {}",
                url("lib.git"),
                &lib_tip[..12]
            )),
            "{joined}"
        );
        assert!(
            joined.contains(&format!(
                "-----> Fetching submodule vendor/lib/inner ({}) at",
                url("inner.git")
            )),
            "{joined}"
        );
        assert!(
            joined.contains("embedded is a submodule without a URL in .gitmodules"),
            "{joined}"
        );
        // Nothing of the fetch is left next to the checkout.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("submodules-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // The source limit counts submodule files: the error names the one over it.
        let dest2 = tmp.path().join("dest2");
        std::fs::create_dir(&dest2).unwrap();
        let e = super::super::source::checkout(&repo, None, &head, &dest2, total - 1, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("the pushed source is over the"), "{e}");
        assert!(e.contains("vendor/lib/"), "{e}");

        // A commit the URL does not have.
        let missing = format!(
            "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = {}\n",
            url("inner.git")
        );
        let head = repo_with(&app, &[(".gitmodules", &missing)], &[]);
        let dest3 = tmp.path().join("dest3");
        std::fs::create_dir(&dest3).unwrap();
        let e = super::super::source::checkout(&repo, None, &head, &dest3, 1 << 20, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("submodule vendor/lib: commit {lib_tip} is not in")),
            "{e}"
        );

        // file:// is never fetched, even though git could read it.
        let file = format!(
            "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = file://{}\n",
            base.join("lib.git").display()
        );
        let head = repo_with(&app, &[(".gitmodules", &file)], &[]);
        let dest4 = tmp.path().join("dest4");
        std::fs::create_dir(&dest4).unwrap();
        let e = super::super::source::checkout(&repo, None, &head, &dest4, 1 << 20, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("submodule vendor/lib: file://"), "{e}");
        assert!(e.contains("would read the server's own files"), "{e}");
        assert!(!dest4.join("vendor/lib/lib.txt").exists());
    }
}
