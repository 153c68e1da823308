//! `git push` of an app with submodules: the server fetches them (from a real `git daemon`
//! the test starts) at their pinned commits and builds them in; a `file://` one is refused.

use crate::push::{app_repo, commit, create_in, http, push, until};
use crate::support::*;
use slipway_testkit::GitDaemon;
use std::path::Path;
use std::time::Duration;

/// Commits the staged files plus a submodule at `path` pinned to `pinned`, with `.gitmodules`
/// giving it `url`.
fn commit_submodule(dir: &Path, path: &str, url: &str, pinned: &str, message: &str) {
    let modules = format!("[submodule \"lib\"]\n\tpath = {path}\n\turl = {url}\n");
    std::fs::write(dir.join(".gitmodules"), modules).unwrap();
    git(dir, &["add", ".gitmodules"]);
    let info = format!("160000,{pinned},{path}");
    git(dir, &["update-index", "--add", "--cacheinfo", &info]);
    git(
        dir,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-qm",
            message,
        ],
    );
}

#[test]
fn submodules_are_fetched_from_their_git_urls_and_file_urls_are_refused() {
    if skip_unless_root("submodules_are_fetched_from_their_git_urls_and_file_urls_are_refused") {
        return;
    }
    // Host numbers 2800-2819.
    let n = 2800 + std::process::id() % 20;
    let host = HostServer::start(n, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "subs";
    let vhost = format!("{app}.{DOMAIN}");
    let get = |path: &str| http(&router, path, &vhost, None);

    // The submodule: a repo that `git daemon` serves; the app pins its first commit.
    let base = server.dir.path().join("daemon");
    std::fs::create_dir_all(&base).unwrap();
    let lib = app_repo(server, "lib", &[("page.html", "from the submodule\n")]);
    let pinned = git(&lib, &["rev-parse", "HEAD"]).trim().to_string();
    commit(&lib, &[("page.html", "a later commit\n")], "later");
    let bare = base.join("lib.git");
    git(&base, &["init", "-q", "--bare", "lib.git"]);
    git(&lib, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let daemon = GitDaemon::start(&base);
    let url = daemon.url("lib.git");

    let dir = app_repo(
        server,
        app,
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "app v1\n"),
        ],
    );
    commit_submodule(&dir, "www/lib", &url, &pinned, "with a submodule");
    create_in(server, &dir, app);
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    let want = format!(
        "remote: -----> Fetching submodule www/lib ({url}) at {}",
        &pinned[..12]
    );
    assert!(err.contains(&want), "{err}");
    let resp = until(
        "the submodule's file",
        Duration::from_secs(10),
        || get("/lib/page.html"),
        "from the submodule",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // The same submodule by a file:// URL (git itself would read it from the server's disk):
    // refused with the reason before anything is built; the first release keeps serving.
    std::fs::write(dir.join("www/index.html"), "app v2\n").unwrap();
    git(&dir, &["add", "www/index.html"]);
    let file_url = format!("file://{}", bare.display());
    commit_submodule(&dir, "www/lib", &file_url, &pinned, "by file://");
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    let want = format!(
        "remote: error: submodule www/lib: {file_url} is refused: file:// URLs and paths would \
         read the server's own files"
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("Creating release"), "{err}");
    assert!(get("/").contains("app v1"));
    assert!(get("/lib/page.html").contains("from the submodule"));
}
