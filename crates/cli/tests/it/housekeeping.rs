//! Housekeeping and build logs, end to end (as root: real builds and jobs on runc, busybox
//! stack): `slug.keep` trims old slug releases *and* their artifacts, whose blobs the GC then
//! deletes; rollback to a kept release works; `release delete` refuses the current release;
//! every build's transcript is kept (`slipway build log`), failed ones too.

use crate::push::{app_repo, commit, create_in, push};
use crate::support::*;
use std::time::{Duration, Instant};

/// Polls `f` until it returns true, or fails with `what`.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The blob file of the (only) slug artifact of `release`.
fn slug_blob(server: &TestServer, release: &str) -> (String, std::path::PathBuf) {
    let client = server.client();
    let (artifact, digest) = block_on(async {
        let r = client.release(release.parse().unwrap()).await.unwrap();
        let a = client.artifact(r.artifacts[0]).await.unwrap();
        (a.id.to_string(), a.digest.unwrap())
    });
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    (
        artifact,
        server.dir.path().join("data/blobs/sha256").join(hex),
    )
}

#[test]
fn slug_keep_trims_slugs_and_their_blobs_and_build_logs_stay_readable() {
    if skip_unless_root("slug_keep_trims_slugs_and_their_blobs_and_build_logs_stay_readable") {
        return;
    }
    let n = 2700 + std::process::id() % 100;
    // The GC every second, for blobs unnamed for 5 s (more than a build needs between putting
    // its slug and creating the artifact).
    let flags: Vec<String> = ["--blob-gc-interval", "1s", "--blob-gc-grace", "5s"]
        .map(String::from)
        .to_vec();
    let host = HostServer::start(n, &flags);
    let s = &host.s;
    let app = "keeper";
    let procfile = ("Procfile", "web: httpd -f -p $PORT -h /app\n");
    let dir = app_repo(s, app, &[procfile, ("page.txt", "v1\n")]);
    create_in(s, &dir, app);
    s.ok(&["-a", app, "meta", "set", "slug.keep=1"]);

    let mut releases = Vec::new();
    // Each release's slug artifact and blob file, read while they exist.
    let mut slugs = Vec::new();
    for v in 1..=3 {
        if v > 1 {
            commit(&dir, &[("page.txt", &format!("v{v}\n"))], &format!("v{v}"));
        }
        let (ok, err) = push(s, &dir, "main");
        assert!(ok, "push v{v}: {err}");
        let current = s.json(&["-a", app, "release", "show", "--json"]);
        releases.push(current["id"].as_str().unwrap().to_string());
        slugs.push(slug_blob(s, &releases[v - 1]));
        if v == 1 {
            // The build's transcript, as the pusher saw it, is there once the push returns.
            let log = s.ok(&["-a", app, "build", "log"]);
            for want in [
                "-----> Building keeper...",
                "-----> Procfile app detected",
                "-----> Compiled slug size is ",
                "-----> Creating release...",
                "=====> Application deployed",
            ] {
                assert!(log.contains(want), "no {want:?} in the build log:\n{log}");
            }
            let remote: Vec<&str> = err
                .lines()
                .filter_map(|l| l.strip_prefix("remote: "))
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect();
            let logged: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(
                logged, remote,
                "the log is what git showed as remote: lines"
            );
            // ... and the build job's own lines are in the app's log (type `build`).
            wait_for(
                "the build job's lines in `log -t build`",
                Duration::from_secs(10),
                || {
                    s.ok(&["-a", app, "log", "-t", "build"])
                        .contains("-----> Procfile app detected")
                },
            );
        }
    }
    let [(v1_artifact, v1_blob), (_, v2_blob), (_, v3_blob)] = &slugs[..] else {
        panic!("three slugs: {slugs:?}")
    };

    // slug.keep=1: the current release and one inactive one are left, v1's slug artifact is
    // deleted, and the GC then deletes its blob.
    let left = s.ok(&["-a", app, "release", "-q"]);
    assert_eq!(left, format!("{}\n{}\n", releases[2], releases[1]));
    let err = block_on(s.client().artifact(v1_artifact.parse().unwrap())).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    wait_for(
        "v1's slug blob deleted by the GC",
        Duration::from_secs(20),
        || !v1_blob.exists(),
    );
    assert!(
        v2_blob.exists() && v3_blob.exists(),
        "kept slugs keep their blobs"
    );
    // The trimmed release's build log went with it; the kept ones' are there by release ID.
    let err = s.fails(&["-a", app, "build", "log", &releases[0]]);
    assert!(err.contains("no build or release"), "{err}");
    let v2_log = s.ok(&["-a", app, "build", "log", &releases[1][..8]]);
    assert!(v2_log.contains("=====> Application deployed"), "{v2_log}");

    // The current release cannot be deleted, and the message says what to do.
    let err = s.fails(&["-a", app, "release", "delete", "-y", &releases[2]]);
    assert!(
        err.contains("is the current release") && err.contains("slipway release rollback"),
        "{err}"
    );
    // Rollback to the kept release deploys it (its slug is still there).
    let out = s.ok(&["-a", app, "release", "rollback", "-y"]);
    assert!(
        out.ends_with(&format!("Rolled back to release {}.\n", releases[1])),
        "{out}"
    );
    let jobs = s.json(&["-a", app, "ps", "--json"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["release_id"] == releases[1].as_str()
                && j["process_type"] == "web"
                && j["state"] == "up"),
        "{jobs}"
    );

    // A failing build is recorded too, and is what `build log` shows by default.
    std::fs::remove_file(dir.join("Procfile")).unwrap();
    std::fs::remove_file(dir.join("page.txt")).unwrap();
    commit(&dir, &[("README", "nothing to build\n")], "broken");
    let (ok, err) = push(s, &dir, "main");
    assert!(!ok, "{err}");
    let log = s.ok(&["-a", app, "build", "log"]);
    assert!(log.contains("-----> Building keeper..."), "{log}");
    assert!(log.contains("Unable to select a buildpack"), "{log}");
    assert!(!log.contains("Creating release"), "{log}");
    let builds = s.json(&["-a", app, "build", "list", "--json"]);
    let builds = builds.as_array().unwrap();
    assert_eq!(builds.len(), 3, "v2, v3 and the failed one: {builds:#?}");
    assert_eq!(builds[0]["status"], "failed");
    assert!(builds[0].get("release_id").is_none(), "{:?}", builds[0]);
    assert!(
        builds[0]["error"]
            .as_str()
            .unwrap()
            .contains("Unable to select a buildpack")
    );
    let head = git(&dir, &["rev-parse", "HEAD"]);
    assert_eq!(builds[0]["commit"], head.trim());
    assert_eq!(builds[1]["status"], "succeeded");
    assert_eq!(builds[1]["release_id"], releases[2].as_str());
    let table = s.ok(&["-a", app, "build"]);
    assert!(
        table.lines().nth(1).unwrap().contains(" failed "),
        "{table}"
    );
}
