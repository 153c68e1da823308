//! Hostile tests: build (see mod.rs). Pushes and builds against a live server with real runc:
//! a tree deep enough to overflow a recursive walk, buildpack URLs and refs that reach for the
//! host's files, a `.slugignore` pattern that backtracks exponentially, a stack that is a path,
//! a Procfile over its limit, and what an app's deletion leaves behind.

use crate::push::{app_repo, commit, create_in, git_as_user, http, push, until};
use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `git ARGS` in `dir` with `input` on stdin, which must succeed; its stdout, trimmed.
fn git_in(dir: &Path, args: &[&str], input: &str) -> String {
    let mut child = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Commits, on top of HEAD, a chain of `depth` directories `d/d/…/d/f.txt` next to what HEAD
/// has, with `git fast-import` (no work tree could hold it: the path nears `PATH_MAX`); moves
/// `main` to it.
fn commit_deep_tree(dir: &Path, depth: usize) {
    let head = git(dir, &["rev-parse", "HEAD"]);
    let path = format!("{}f.txt", "d/".repeat(depth - 1));
    let stream = format!(
        "commit refs/heads/main\ncommitter dev <dev@example.com> 0 +0000\ndata 10\ndeep tree\n\
         from {}\nM 100644 inline {path}\ndata 5\ndeep\n\n",
        head.trim()
    );
    git_in(dir, &["fast-import", "--quiet", "--force"], &stream);
}

/// The entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to 15 s for `dir` to be empty (or gone); its entries if it never was.
fn until_empty(dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = entries(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn api_addr(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// A pushed app `app` serving `www/index.html` ("v1 of APP") through the router.
fn deployed_app(server: &TestServer, router: &str, app: &str) -> PathBuf {
    let dir = app_repo(
        server,
        app,
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", &format!("v1 of {app}\n")),
        ],
    );
    create_in(server, &dir, app);
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    let vhost = format!("{app}.{DOMAIN}");
    until(
        "the first release",
        Duration::from_secs(15),
        || http(router, "/", &vhost, None),
        &format!("v1 of {app}"),
    );
    dir
}

#[test]
fn a_push_of_a_tree_2000_levels_deep_does_not_take_the_server_down() {
    if skip_unless_root("a_push_of_a_tree_2000_levels_deep_does_not_take_the_server_down") {
        return;
    }
    let host = HostServer::start(3000 + std::process::id() % 10, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "deep";
    let dir = deployed_app(server, &router, app);

    commit_deep_tree(&dir, 2000);
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    assert!(
        err.contains("remote: error: the pushed tree is deeper than 1000 levels (at d/d/d/"),
        "{err}"
    );
    assert!(err.contains("pre-receive hook declined"), "{err}");

    // The platform is still up: the API, and the router serving the old release.
    let ping = http(&api_addr(server), "/ping", "localhost", None);
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    let vhost = format!("{app}.{DOMAIN}");
    let resp = http(&router, "/", &vhost, None);
    assert!(resp.contains("v1 of deep"), "{resp}");
    // And no scratch dir of the build is left.
    let build = server.dir.path().join("data/build");
    for sub in ["sources", "builds"] {
        let left = until_empty(&build.join(sub));
        assert!(left.is_empty(), "{sub}: {left:?}");
    }

    // A tree 500 levels deep still builds and deploys.
    git(&dir, &["reset", "-q", "--hard", "HEAD~1"]);
    commit_deep_tree(&dir, 500);
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    assert!(err.contains("=====> Application deployed"), "{err}");
}

#[test]
fn buildpack_urls_and_refs_cannot_read_the_hosts_files() {
    if skip_unless_root("buildpack_urls_and_refs_cannot_read_the_hosts_files") {
        return;
    }
    let host = HostServer::start(3010 + std::process::id() % 10, &[]);
    let server = &host.s;
    let secret = server.dir.path().join("root-only");
    std::fs::write(&secret, "ROOT-ONLY-SECRET\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A buildpack repo, on the host's disk and served by a git daemon.
    let base = server.dir.path().join("git-base");
    let bp_work = server.dir.path().join("bp-work");
    std::fs::create_dir_all(bp_work.join("bin")).unwrap();
    for (name, body) in [
        ("detect", "#!/bin/sh\necho Custom\n"),
        ("compile", "#!/bin/sh\necho custom buildpack compiled\n"),
        (
            "release",
            "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: httpd -f -p $PORT -h /app\\n'\n",
        ),
    ] {
        let p = bp_work.join("bin").join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(&bp_work, &["init", "-q", "-b", "main"]);
    commit(&bp_work, &[], "buildpack");
    std::fs::create_dir_all(&base).unwrap();
    let bare = base.join("bp.git");
    git(
        server.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            bp_work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let daemon = slipway_testkit::GitDaemon::start(&base);

    let app = "bpinject";
    let dir = app_repo(server, app, &[("index.html", "hi\n")]);
    create_in(server, &dir, app);
    let pathspec = format!("--pathspec-from-file={}", secret.display());
    let cases = [
        // The reviewer's line: a repo on the server's disk, a ref that is an option.
        (
            format!("file://{}#{pathspec}", bare.display()),
            "file:// URLs and paths would read the server's own files",
        ),
        (
            bare.display().to_string(),
            "file:// URLs and paths would read the server's own files",
        ),
        // An allowed URL with a ref that is an option.
        (
            format!("{}#{pathspec}", daemon.url("bp.git")),
            "is not a branch, tag or commit name",
        ),
        (
            "ext::sh -c cat% /etc/shadow".to_string(),
            "the ext:: transport runs commands on the server",
        ),
    ];
    for (i, (line, why)) in cases.iter().enumerate() {
        commit(
            &dir,
            &[(".buildpacks", &format!("{line}\n"))],
            &format!("bp {i}"),
        );
        let (ok, err) = push(server, &dir, "main");
        assert!(!ok, "{line}: {err}");
        assert!(!err.contains("ROOT-ONLY-SECRET"), "{line}: {err}");
        assert!(err.contains(why), "{line}: wanted {why:?} in {err}");
        assert!(!err.contains("Fetching buildpack"), "{line}: {err}");
    }
    // A git:// buildpack with a real ref is fetched and runs.
    let good = format!("{}#main", daemon.url("bp.git"));
    commit(&dir, &[(".buildpacks", &format!("{good}\n"))], "good bp");
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    assert!(err.contains("custom buildpack compiled"), "{err}");
}

#[test]
fn a_slugignore_pattern_that_backtracks_costs_linear_time() {
    if skip_unless_root("a_slugignore_pattern_that_backtracks_costs_linear_time") {
        return;
    }
    let host = HostServer::start(3020 + std::process::id() % 10, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "globbing";
    let name = "a".repeat(40);
    // 13 stars: 6.9 s × 3⁴ ≈ 9 min of CPU with the backtracking matcher.
    let pattern = format!("{}b", "*a".repeat(13));
    let dir = app_repo(
        server,
        app,
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            (".slugignore", &format!("{pattern}\n*.psd\n")),
            (&format!("www/{name}"), "kept\n"),
            ("www/big.psd", "ignored\n"),
        ],
    );
    create_in(server, &dir, app);
    let t0 = Instant::now();
    let (ok, err) = push(server, &dir, "main");
    let took = t0.elapsed();
    assert!(ok, "{err}");
    assert!(
        err.contains("-----> Deleting 1 files matching .slugignore patterns."),
        "{err}"
    );
    // Generous: a push of this app takes a few seconds; the old matcher took minutes.
    assert!(took < Duration::from_secs(60), "the push took {took:?}");
    let vhost = format!("{app}.{DOMAIN}");
    until(
        "the kept file",
        Duration::from_secs(15),
        || http(&router, &format!("/{name}"), &vhost, None),
        "kept",
    );
    let resp = http(&router, "/big.psd", &vhost, None);
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

#[test]
fn a_stack_that_is_not_a_name_is_refused_by_the_api() {
    let server = TestServer::start();
    let app = "stacky";
    server.create_app(app);
    let client = server.client();
    for bad in [
        "/usr/local",
        "../../usr",
        "Busybox",
        "-x",
        "a b",
        &"s".repeat(64),
    ] {
        let new: slipway_types::NewArtifact = serde_json::from_value(serde_json::json!({
            "type": "slug",
            "uri": "blob:sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "meta": {"stack": bad},
        }))
        .unwrap();
        let e = block_on(client.create_artifact(&new))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid stack"), "{bad}: {e}");
        assert!(e.contains("like busybox or bookworm"), "{bad}: {e}");
        // Through the CLI, on the app and on a release: the same words, nothing stored.
        let err = server.fails(&["-a", app, "meta", "set", &format!("stack={bad}")]);
        assert!(err.contains("invalid stack"), "{bad}: {err}");
    }
    let meta = server.ok(&["-a", app, "meta"]);
    assert!(!meta.contains("stack"), "{meta}");
    server.ok(&["-a", app, "meta", "set", "stack=bookworm"]);
}

#[test]
fn a_procfile_over_1_mib_fails_the_push_and_deleting_the_app_removes_its_repo_cache_and_logs() {
    let name =
        "a_procfile_over_1_mib_fails_the_push_and_deleting_the_app_removes_its_repo_cache_and_logs";
    if skip_unless_root(name) {
        return;
    }
    let host = HostServer::start(3040 + std::process::id() % 10, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "bigproc";
    let dir = deployed_app(server, &router, app);

    // A valid Procfile padded past 1 MiB with comment lines.
    let mut procfile = String::from("web: httpd -f -p $PORT -h /app/www\n");
    while procfile.len() <= 1 << 20 {
        procfile.push_str("# padding padding padding padding padding padding padding\n");
    }
    commit(
        &dir,
        &[("Procfile", &procfile), ("www/index.html", "v2\n")],
        "big procfile",
    );
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    assert!(
        err.contains("remote: error: The Procfile is larger than the limit of 1.0M"),
        "{err}"
    );
    assert!(!err.contains("Application deployed"), "{err}");
    let vhost = format!("{app}.{DOMAIN}");
    let resp = http(&router, "/", &vhost, None);
    assert!(resp.contains("v1 of bigproc"), "{resp}");

    // Deleting the app removes its repo, build cache and log history.
    let id = block_on(server.client().app(app)).unwrap().id.to_string();
    let data = server.dir.path().join("data");
    let repo = data.join(format!("repos/{id}.git"));
    let cache = data.join(format!("build/build-cache/{id}.img"));
    let logs = data.join(format!("logs/{id}"));
    for p in [&repo, &cache, &logs] {
        assert!(p.exists(), "{} before the deletion", p.display());
    }
    server.ok(&["-a", app, "delete", "-y", "-r", ""]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while [&repo, &cache, &logs].iter().any(|p| p.exists()) {
        assert!(
            Instant::now() < deadline,
            "left after the deletion: repo {} cache {} logs {}",
            repo.exists(),
            cache.exists(),
            logs.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let helper = format!("credential.{}.helper=!'{BIN}' git-credentials", server.url);
    let out = git_as_user(
        server,
        server.dir.path(),
        &[
            "-c",
            &helper,
            "clone",
            "-q",
            &format!("{}/{id}.git", server.url),
            "cloned-after-delete",
        ],
    );
    assert!(!out.status.success(), "the deleted app's repo was cloned");
    assert!(!server.dir.path().join("cloned-after-delete/www").exists());
}

/// VmHWM (peak resident memory, kB) of the `slipway server` whose command line names `dir`.
fn server_peak_kb(dir: &Path) -> u64 {
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" server") && cmdline.contains(&needle) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap();
        }
    }
    panic!("no server process for {needle}");
}

/// git gzips a push's request body when it fits its post buffer, and the receiver un-gzipped
/// the whole body into memory before git got a byte: up to MAX_PUSH_BYTES (1 GiB) per request,
/// from at most 16 MiB of gzip. Here 512 MiB of zeros (~0.5 MB of gzip). Before: the server's
/// peak memory grew by 512 MB or more; now the body reaches git 64 KiB at a time.
#[test]
fn a_gzip_push_body_is_not_unpacked_into_the_servers_memory() {
    let server = TestServer::start();
    server.create_app("gzbomb");
    let out = std::process::Command::new("sh")
        .args(["-c", "head -c 536870912 /dev/zero | gzip -c"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let body = out.stdout;
    assert!(body.len() < 2 << 20, "{} bytes of gzip", body.len());
    let before = server_peak_kb(server.dir.path());
    let mut c = std::net::TcpStream::connect(api_addr(&server)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST /gzbomb.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-git-receive-pack-request\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.key(),
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    let mut resp = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The body is fed to git after the response starts: wait for the server to be done with it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = server_peak_kb(server.dir.path());
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = server_peak_kb(server.dir.path());
        if now == after || Instant::now() > deadline {
            break;
        }
        after = now;
    }
    let growth_mb = after.saturating_sub(before) / 1024;
    eprintln!("server peak RSS: {before} kB before, {after} kB after (+{growth_mb} MB)");
    assert!(
        growth_mb < 64,
        "a 512 MiB gzip push body grew the server's peak memory by {growth_mb} MB"
    );
    // The server still answers.
    let apps = server.ok(&["apps"]);
    assert!(apps.contains("gzbomb"), "{apps}");
}
