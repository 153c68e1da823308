//! `git push` deploys: the real binary, real git over smart HTTP, the pre-receive hook, and (as
//! root) real builds and jobs on runc with the busybox stack.

use crate::support::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// A git work tree in a new dir under the server's temp dir, with `files` committed on `main`.
pub(crate) fn app_repo(server: &TestServer, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = server.dir.path().join(format!("src-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    commit(&dir, files, "first");
    dir
}

/// Writes `files` and commits everything in `dir`.
pub(crate) fn commit(dir: &Path, files: &[(&str, &str)], message: &str) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=dev",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ],
    );
}

/// `git ARGS` in `dir` as the user would run it (the CLI config of `server`, no terminal to
/// prompt on: a missing credential fails instead of hanging).
pub(crate) fn git_as_user(server: &TestServer, dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("SLIPWAY_CONFIG", &server.config)
        .env("HOME", server.dir.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .output()
        .expect("run git")
}

/// `git ARGS` in `dir` with `input` on stdin, which must succeed; its stdout, trimmed.
fn git_stdin(dir: &Path, args: &[&str], input: &str) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `git push slipway REFSPEC`; (success, stderr — where git prints the `remote:` lines).
pub(crate) fn push(server: &TestServer, dir: &Path, refspec: &str) -> (bool, String) {
    let out = git_as_user(server, dir, &["push", "slipway", refspec]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- git push slipway {refspec}:\n{stderr}");
    (out.status.success(), stderr)
}

pub(crate) fn create_in(server: &TestServer, dir: &Path, app: &str) {
    let out = ok(server.cmd_in(dir).args(["create", app]));
    assert_eq!(out, format!("Created {app}\n"));
}

/// One HTTP/1.1 request on a new connection; the whole response as text.
pub(crate) fn http(addr: &str, path: &str, host: &str, auth: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pushes_of_other_branches_big_files_and_bad_trees_are_refused() {
    let server = TestServer::start();
    let dir = app_repo(
        &server,
        "refuse",
        &[("Procfile", "web: httpd -f -p $PORT\n")],
    );
    create_in(&server, &dir, "refuse");
    // The credential helper is set on the remote's URL: no prompt (GIT_TERMINAL_PROMPT=0 would
    // fail the push before the hook ran otherwise).
    let helper = git(
        &dir,
        &["config", "--get-regexp", r"^credential\..*\.helper$"],
    );
    assert!(helper.contains("git-credentials"), "{helper}");

    let (ok, err) = push(&server, &dir, "main:feature");
    assert!(!ok);
    assert!(
        err.contains("remote: error: refs/heads/feature is not deployed: refuse deploys the main or master branch"),
        "{err}"
    );
    assert!(err.contains("pre-receive hook declined"), "{err}");

    // 100 MiB of source: over the source limit, refused with the file named, nothing built.
    let big = vec![0u8; 100 << 20];
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    commit(&dir, &[], "big");
    let (ok, err) = push(&server, &dir, "main");
    assert!(!ok);
    assert!(err.contains("remote: -----> Building refuse..."), "{err}");
    assert!(
        err.contains("remote: error: the pushed source is over the ")
            && err.contains(" limit (big.bin is 100.0 MiB): keep large files out of git"),
        "{err}"
    );
    assert!(!err.contains("Creating release"), "{err}");
    // Rejected pushes update no ref.
    let refs = git_as_user(&server, &dir, &["ls-remote", "slipway"]);
    assert!(refs.status.success());
    assert_eq!(String::from_utf8_lossy(&refs.stdout), "");

    // A tree entry named `..`: git's own object checks refuse it before the hook runs.
    let blob = git(&dir, &["hash-object", "-w", "Procfile"]);
    let tree = std::process::Command::new("git")
        .args(["mktree"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("100644 blob {}\t..\n", blob.trim()).as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let tree = String::from_utf8(tree.stdout).unwrap();
    let evil = git(
        &dir,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit-tree",
            tree.trim(),
            "-m",
            "evil",
        ],
    );
    let (ok, err) = push(&server, &dir, &format!("{}:refs/heads/main", evil.trim()));
    assert!(!ok);
    assert!(err.contains("contains '..'"), "{err}");
    assert!(!server.dir.path().join("data/evil").exists());

    // A symlink to a directory outside and a tree of the same name (`l -> OUTSIDE`, then
    // `l/evil`), which a checkout could write through: git's checks refuse the duplicate name
    // before the hook runs, and nothing appears outside.
    let outside = server.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let link = git_stdin(
        &dir,
        &["hash-object", "-w", "--stdin"],
        outside.to_str().unwrap(),
    );
    let sub = git_stdin(
        &dir,
        &["mktree"],
        &format!("100644 blob {}\tevil\n", blob.trim()),
    );
    let tree = git_stdin(
        &dir,
        &["mktree"],
        &format!("120000 blob {link}\tl\n040000 tree {sub}\tl\n"),
    );
    let evil = git(
        &dir,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit-tree",
            &tree,
            "-m",
            "evil",
        ],
    );
    let (ok, err) = push(&server, &dir, &format!("{}:refs/heads/main", evil.trim()));
    assert!(!ok);
    assert!(err.contains("duplicateEntries"), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // Each app has one repo, named by its id, and nothing else is in the repos dir.
    let repos: Vec<String> = std::fs::read_dir(server.dir.path().join("data/repos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos.len(), 1, "{repos:?}");
}

#[test]
fn git_urls_name_apps_only_and_cannot_leave_the_repos_dir() {
    let mut server = TestServer::start();
    let key = server.key();
    let addr = server.url.trim_start_matches("http://").to_string();
    server.create_app("real");
    for (path, want) in [
        (
            "/nope.git/info/refs?service=git-upload-pack",
            "app \"nope\" not found: create it with `slipway create nope`",
        ),
        (
            "/..%2f..%2fetc.git/info/refs?service=git-receive-pack",
            "no app named \"../../etc\"",
        ),
        (
            "/%2e%2e.git/info/refs?service=git-upload-pack",
            "no app named \"..\"",
        ),
        (
            "/real/info/refs?service=git-upload-pack",
            "is not a Slipway git URL: use <server>/APP.git",
        ),
        (
            "/real.git.git/info/refs?service=git-upload-pack",
            "no app named \"real.git\"",
        ),
    ] {
        let resp = http(&addr, path, "x", Some(&key));
        assert!(resp.starts_with("HTTP/1.1 404"), "{path}: {resp}");
        assert!(resp.contains(want), "{path}: {resp}");
    }
    // Dumb HTTP is not served; no key → 401 with the Basic challenge git answers.
    let resp = http(&addr, "/real.git/info/refs", "x", Some(&key));
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let resp = http(
        &addr,
        "/real.git/info/refs?service=git-upload-pack",
        "x",
        None,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("WWW-Authenticate: Basic") || resp.contains("www-authenticate: Basic"));
    let resp = http(
        &addr,
        "/real.git/info/refs?service=git-upload-pack",
        "x",
        Some(&key),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("# service=git-upload-pack"), "{resp}");

    // git shows the reason for an unknown app.
    let dir = server.dir.path().join("clone");
    std::fs::create_dir(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    let url = format!("{}/nope.git", server.url);
    git(&dir, &["remote", "add", "slipway", &url]);
    git(
        &dir,
        &[
            "config",
            &format!("credential.{}.helper", server.url),
            &format!("!'{BIN}' git-credentials"),
        ],
    );
    let out = git_as_user(&server, &dir, &["ls-remote", "slipway"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app \"nope\" not found"), "{err}");

    let repos_dir = server.dir.path().join("data/repos");
    let repos = || -> Vec<String> {
        std::fs::read_dir(&repos_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = repos();
    assert_eq!(before.len(), 1, "only the real app's repo: {before:?}");
    assert!(before[0].ends_with(".git") && uuid::Uuid::parse_str(&before[0][..36]).is_ok());

    // A deleted app's repo goes at the next sweep (at start, then hourly).
    server.ok(&["-a", "real", "delete", "-y"]);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !repos().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deleted app's repo stayed: {:?}",
            repos()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `f` returns a response containing `want`.
pub(crate) fn until(what: &str, timeout: Duration, f: impl Fn() -> String, want: &str) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = f();
        if resp.contains(want) {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected {want:?}, got: {resp}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn git_push_builds_deploys_and_keeps_the_old_release_on_failure() {
    if skip_unless_root("git_push_builds_deploys_and_keeps_the_old_release_on_failure") {
        return;
    }
    let n = 800 + std::process::id() % 100;
    let host = HostServer::start(n, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "pushed";
    let vhost = format!("{app}.{DOMAIN}");
    let get = || http(&router, "/", &vhost, None);
    let dir = app_repo(
        server,
        app,
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "hello v1\n"),
        ],
    );
    // 3 MiB that do not compress: git sends the pack chunked (over its 1 MiB post buffer).
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("www/noise.bin"), &noise).unwrap();
    commit(&dir, &[], "noise");
    create_in(server, &dir, app);

    // First push: Flynn's lines, web=1, served through the router.
    let t0 = Instant::now();
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    eprintln!("first push took {:?}", t0.elapsed());
    let lines: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(str::trim_end)
        .collect();
    let pos = |want: &str| {
        lines
            .iter()
            .position(|l| *l == want)
            .unwrap_or_else(|| panic!("no line {want:?} in {lines:#?}"))
    };
    let order = [
        pos(&format!("-----> Building {app}...")),
        pos("-----> Creating release..."),
        pos("=====> Scaling initial release to web=1"),
        pos("=====> Application deployed"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{lines:#?}");
    let resp = until("first release", Duration::from_secs(10), get, "hello v1");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = http(&router, "/noise.bin", &vhost, None);
    let head: String = resp.chars().take(300).collect();
    assert!(resp.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", 3 << 20)),
        "{head}"
    );
    let releases = server.json(&["-a", app, "release", "--json"]);
    let release = &releases.as_array().unwrap()[0];
    assert_eq!(release["processes"]["web"].get("args"), None, "{release}");

    // Second push with a change: served, and no second "initial" scaling. It also carries a
    // symlink to a file of the host: the link is kept as a link, never followed by the
    // checkout, the build or the slug, so the host's file is not served.
    let secret = server.dir.path().join("host-secret");
    std::fs::write(&secret, "HOST-SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("www/leak")).unwrap();
    commit(&dir, &[("www/index.html", "hello v2\n")], "v2");
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    assert!(!err.contains("Scaling initial release"), "{err}");
    assert!(err.contains("=====> Application deployed"), "{err}");
    until("second release", Duration::from_secs(10), get, "hello v2");
    let leak = http(&router, "/leak", &vhost, None);
    assert!(!leak.contains("HOST-SECRET"), "{leak}");
    assert!(leak.starts_with("HTTP/1.1 404"), "{leak}");
    // Clone (upload-pack, with git's gzip-encoded negotiation) gets what was pushed.
    let helper = format!("credential.{}.helper=!'{BIN}' git-credentials", server.url);
    let out = git_as_user(
        server,
        server.dir.path(),
        &[
            "-c",
            &helper,
            "clone",
            "-q",
            &format!("{}/{app}.git", server.url),
            "cloned",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cloned = std::fs::read_to_string(server.dir.path().join("cloned/www/index.html"));
    assert_eq!(cloned.unwrap(), "hello v2\n");

    // A failing build: the push fails with the reason, the ref stays, v2 keeps serving.
    std::fs::remove_file(dir.join("Procfile")).unwrap();
    std::fs::remove_dir_all(dir.join("www")).unwrap();
    commit(&dir, &[("README", "nothing to build\n")], "broken");
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    assert!(err.contains("Unable to select a buildpack"), "{err}");
    assert!(!err.contains("Creating release"), "{err}");
    assert!(get().contains("hello v2"));

    // A web process that crashes: the deployment fails, v2 keeps serving.
    commit(
        &dir,
        &[
            ("Procfile", "web: echo crashing; exit 3\n"),
            ("www/index.html", "v3\n"),
        ],
        "crash",
    );
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    assert!(err.contains("-----> Creating release..."), "{err}");
    assert!(err.contains("deployment failed"), "{err}");
    assert!(err.contains("the previous release keeps serving"), "{err}");
    assert!(get().contains("hello v2"));
    let refs = git_as_user(server, &dir, &["ls-remote", "slipway", "main"]);
    let v2 = git(&dir, &["rev-parse", "HEAD~2"]);
    assert!(
        String::from_utf8_lossy(&refs.stdout).starts_with(v2.trim()),
        "the remote main is still v2"
    );
}

/// A buildpack (in a git repo served by `daemon`, used through `.buildpacks` as a `git://`
/// URL) whose compile prints a tick every 0.2 s for `ticks` ticks: a build that takes a while
/// and talks.
fn slow_buildpack(server: &TestServer, ticks: u32) -> (String, slipway_testkit::GitDaemon) {
    let base = server.dir.path().join("bp-base");
    let dir = base.join("slow-bp");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let files = [
        ("bin/detect", "#!/bin/sh\necho Slow\n".to_string()),
        (
            "bin/compile",
            format!("#!/bin/sh\nfor i in $(seq {ticks}); do echo \"       tick $i\"; sleep 0.2; done\n"),
        ),
        (
            "bin/release",
            "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: httpd -f -p $PORT -h /app'\n".to_string(),
        ),
    ];
    for (path, content) in &files {
        std::fs::write(dir.join(path), content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(&dir, &["init", "-q", "-b", "main"]);
    commit(&dir, &[], "buildpack");
    let daemon = slipway_testkit::GitDaemon::start(&base);
    (daemon.url("slow-bp"), daemon)
}

/// Starts `git push slipway main` in `dir` in its own process group; returns the child and a
/// receiver of its stderr lines.
pub(crate) fn spawn_push(
    server: &TestServer,
    dir: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("git")
        .args(["push", "slipway", "main"])
        .current_dir(dir)
        .env("SLIPWAY_CONFIG", &server.config)
        .env("HOME", server.dir.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // git ends progress lines with \r at times: split on both.
        let mut buf = Vec::new();
        let mut r = std::io::BufReader::new(stderr);
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    for l in String::from_utf8_lossy(&buf).split('\r') {
                        let _ = tx.send(l.trim_end().to_string());
                    }
                }
            }
        }
    });
    (child, rx)
}

/// Lines from `rx` until one contains `want` (all of them, for messages).
pub(crate) fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    want: &str,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(want);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {want:?} within {timeout:?}; saw {seen:#?}"),
        }
    }
}

fn running_build_jobs(server: &TestServer, app: &str) -> usize {
    let jobs = server.json(&["-a", app, "ps", "--json"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["process_type"] == "build")
        .count()
}

#[test]
fn a_second_push_waits_for_the_first_and_ctrl_c_stops_the_build() {
    if skip_unless_root("a_second_push_waits_for_the_first_and_ctrl_c_stops_the_build") {
        return;
    }
    let n = 900 + std::process::id() % 50;
    let host = HostServer::start(n, &[]);
    let server = &host.s;
    let app = "queue";
    let (bp, _daemon) = slow_buildpack(server, 15);
    let a = app_repo(
        server,
        "a",
        &[(".buildpacks", &format!("{bp}\n")), ("index.html", "a\n")],
    );
    create_in(server, &a, app);
    // A second work tree of the same app with another commit on the same parent-less history.
    let b = app_repo(
        server,
        "b",
        &[(".buildpacks", &format!("{bp}\n")), ("index.html", "b\n")],
    );
    git(
        &b,
        &[
            "remote",
            "add",
            "slipway",
            &format!("{}/{app}.git", server.url),
        ],
    );
    let helper = git(&a, &["config", "--get-regexp", r"^credential\..*\.helper$"]);
    for line in helper.lines().filter(|l| l.contains("git-credentials")) {
        let (k, v) = line.split_once(' ').unwrap();
        git(&b, &["config", k, v]);
    }

    let (mut first, first_rx) = spawn_push(server, &a);
    wait_line(&first_rx, "tick 1", Duration::from_secs(60));
    let (mut second, second_rx) = spawn_push(server, &b);
    wait_line(
        &second_rx,
        &format!("Another push to {app} is in progress; waiting for it to finish..."),
        Duration::from_secs(30),
    );
    assert!(first.wait().unwrap().success(), "the first push deploys");
    let rest = wait_line(
        &second_rx,
        "changed while this push waited",
        Duration::from_secs(60),
    );
    assert!(!second.wait().unwrap().success(), "{rest:#?}");

    // Ctrl-C on a push (SIGINT to git's process group) stops its build job within 10 s.
    commit(&a, &[("index.html", "c\n")], "c");
    let (mut third, third_rx) = spawn_push(server, &a);
    wait_line(&third_rx, "tick 2", Duration::from_secs(60));
    assert_eq!(running_build_jobs(server, app), 1);
    // SAFETY: kill(2) on the process group we created.
    unsafe { libc::kill(-(third.id() as i32), libc::SIGINT) };
    let t0 = Instant::now();
    let _ = third.wait();
    while running_build_jobs(server, app) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the build job outlived Ctrl-C by 10 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("build job gone {:?} after Ctrl-C", t0.elapsed());
    // The interrupted push changed nothing: the app still runs the first push's commit.
    let refs = git_as_user(server, &a, &["ls-remote", "slipway", "main"]);
    let head1 = git(&a, &["rev-parse", "HEAD~1"]);
    assert!(String::from_utf8_lossy(&refs.stdout).starts_with(head1.trim()));
}

#[test]
fn a_first_push_whose_web_process_crashes_fails_and_the_next_good_push_scales_web_to_1() {
    let name =
        "a_first_push_whose_web_process_crashes_fails_and_the_next_good_push_scales_web_to_1";
    if skip_unless_root(name) {
        return;
    }
    // Host numbers 2820-2839.
    let n = 2820 + std::process::id() % 20;
    let host = HostServer::start(n, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "crashy";
    let vhost = format!("{app}.{DOMAIN}");
    let get = || http(&router, "/", &vhost, None);
    let dir = app_repo(
        server,
        app,
        &[
            ("Procfile", "web: echo crashing; exit 3\n"),
            ("www/index.html", "good\n"),
        ],
    );
    create_in(server, &dir, app);

    // The very first push: the build works, the web process does not.
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "{err}");
    assert!(
        err.contains("remote: =====> Scaling initial release to web=1"),
        "{err}"
    );
    assert!(
        err.contains(
            "remote: error: Initial web job failed to start: the web process exited with status 3"
        ),
        "{err}"
    );
    assert!(err.contains("push again"), "{err}");
    // Flynn's behaviour: the release stays (it is what `slipway release` shows), scaled to
    // web=0, so nothing restarts in a loop; git's ref did not move.
    let releases = server.json(&["-a", app, "release", "--json"]);
    assert_eq!(releases.as_array().unwrap().len(), 1, "{releases}");
    let ps = server.json(&["-a", app, "ps", "--json"]);
    let web_up = |ps: &serde_json::Value| {
        ps.as_array()
            .unwrap()
            .iter()
            .filter(|j| j["process_type"] == "web" && j["state"] == "up")
            .count()
    };
    assert_eq!(web_up(&ps), 0, "{ps}");
    let refs = git_as_user(server, &dir, &["ls-remote", "slipway"]);
    assert_eq!(String::from_utf8_lossy(&refs.stdout), "");

    // A fixed push is again a first deploy: web=1 and it serves.
    commit(
        &dir,
        &[("Procfile", "web: httpd -f -p $PORT -h /app/www\n")],
        "fixed",
    );
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    assert!(
        err.contains("remote: =====> Scaling initial release to web=1"),
        "{err}"
    );
    assert!(err.contains("remote: =====> Application deployed"), "{err}");
    let resp = until("the fixed release", Duration::from_secs(10), get, "good");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let ps = server.json(&["-a", app, "ps", "--json"]);
    assert_eq!(web_up(&ps), 1, "{ps}");
}

#[test]
fn create_writes_a_credential_helper_that_runs_slipway_from_path_when_it_is_this_binary() {
    let server = TestServer::start();
    let dir = app_repo(&server, "pathy", &[("Procfile", "web: x\n")]);
    // `slipway` in PATH is this binary (a link to it, as an install script would make).
    let bin = server.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("slipway")).unwrap();
    // The PATH of the test without any other slipway in it, and with the link first.
    let system: Vec<_> = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .filter(|d| !d.join("slipway").exists())
        .collect();
    let without = std::env::join_paths(&system).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(system)).unwrap();
    let out = ok(server
        .cmd_in(&dir)
        .env("PATH", &path)
        .args(["create", "pathy"]));
    assert_eq!(out, "Created pathy\n");
    let helper = git(
        &dir,
        &["config", "--get-regexp", r"^credential\..*\.helper$"],
    );
    assert!(helper.contains(" !'slipway' git-credentials"), "{helper}");
    // git finds it through PATH when it pushes: the push gets past auth to the hook.
    let push_with = |path: &std::ffi::OsStr| {
        let out = std::process::Command::new("git")
            .args(["push", "slipway", "main"])
            .current_dir(&dir)
            .env("PATH", path)
            .env("SLIPWAY_CONFIG", &server.config)
            .env("HOME", server.dir.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = push_with(&path);
    assert!(err.contains("remote: -----> Building pathy..."), "{err}");
    // Without it in PATH there is no key to send.
    let err = push_with(&without);
    assert!(!err.contains("remote: -----> Building"), "{err}");
    assert!(err.contains("could not read Username"), "{err}");
}
