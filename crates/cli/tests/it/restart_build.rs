//! Issue 17: nothing leaks across crashes, a build included. A `slipway server` with its host
//! agent on real runc deploys an app by `git push`, then is `kill -9`'d while a second push's
//! build job is running (a buildpack that ticks for two minutes), and started again on its data
//! dir. Within a bound: the build's scratch dirs (`<data>/build/builds/<id>`, a loop-mounted
//! filesystem with the app's cache image loop-mounted inside, `<id>.xfer`, `sources/`), their
//! mounts and loop devices, and the build job's container, runc state, netns and cgroups are
//! gone; the first release still serves; the next push deploys. `n` range 3850-3899.

use crate::push::{app_repo, commit, create_in, http, push, spawn_push, until, wait_line};
use crate::support::*;
use slipway_host::runc::network::{NetworkConfig, netns_name};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A buildpack (a git repo served by the returned daemon, used through `.buildpacks`) whose
/// compile ticks every 0.2 s for two minutes when the app has a file `SLOW`, and is quick
/// otherwise; its release runs `httpd` on `/app/www`.
fn buildpack(s: &TestServer) -> (String, slipway_testkit::GitDaemon) {
    let base = s.dir.path().join("bp-base");
    let dir = base.join("bp");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let files = [
        ("bin/detect", "#!/bin/sh\necho Ticking\n"),
        (
            "bin/compile",
            "#!/bin/sh\nif [ -f \"$1/SLOW\" ]; then\n  for i in $(seq 600); do echo \"       tick $i\"; \
             sleep 0.2; done\nfi\necho '       compiled'\n",
        ),
        (
            "bin/release",
            "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: httpd -f -p $PORT -h /app/www'\n",
        ),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(&dir, &["init", "-q", "-b", "main"]);
    commit(&dir, &[], "buildpack");
    let daemon = slipway_testkit::GitDaemon::start(&base);
    (daemon.url("bp"), daemon)
}

/// Mount points below `dir`.
fn mounts_under(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(String::from)
        .collect()
}

/// Loop devices whose backing file is below `dir` (`/dev/loopN → file`).
fn loops_under(dir: &Path) -> BTreeSet<String> {
    let d = dir.display().to_string();
    dir_entries(Path::new("/sys/block"))
        .into_iter()
        .filter(|b| b.starts_with("loop"))
        .filter_map(|b| {
            let f = std::fs::read_to_string(format!("/sys/block/{b}/loop/backing_file")).ok()?;
            f.trim()
                .starts_with(&d)
                .then(|| format!("/dev/{b} → {}", f.trim()))
        })
        .collect()
}

/// What of the build's and of its job's is on the machine.
#[derive(Debug, Default)]
struct BuildTrace {
    /// Entries of `<data>/build/builds` and `<data>/build/sources`.
    scratch: BTreeSet<String>,
    /// Mount points below `<data>/build`.
    mounts: BTreeSet<String>,
    /// Loop devices backed by a file below `<data>/build`.
    loops: BTreeSet<String>,
    /// The build job's container dir, runc state dir, netns and cgroups that exist.
    job: BTreeSet<String>,
}

impl BuildTrace {
    fn take(s: &TestServer, n: u32, job: &str) -> BuildTrace {
        let data = s.dir.path().join("data");
        let build = data.join("build");
        let mut scratch = BTreeSet::new();
        for sub in ["builds", "sources"] {
            for e in dir_entries(&build.join(sub)) {
                scratch.insert(format!("{sub}/{e}"));
            }
        }
        let host = data.join("host");
        let net = NetworkConfig {
            bridge: format!("slws{n}"),
            ..Default::default()
        };
        let mut things: Vec<(String, PathBuf)> = vec![
            ("container dir".into(), host.join("containers").join(job)),
            ("runc state".into(), host.join("runc").join(job)),
            (
                "netns".into(),
                Path::new("/run/netns").join(netns_name(&net, job)),
            ),
        ];
        for ctrl in ["memory", "pids", "cpu"] {
            things.push((
                format!("{ctrl} cgroup"),
                Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join(format!("slipway-srvtest-{n}"))
                    .join(job),
            ));
        }
        BuildTrace {
            scratch,
            mounts: mounts_under(&build),
            loops: loops_under(&build),
            job: things
                .into_iter()
                .filter(|(_, p)| p.exists())
                .map(|(what, _)| what)
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.scratch.is_empty()
            && self.mounts.is_empty()
            && self.loops.is_empty()
            && self.job.is_empty()
    }
}

/// A loop device attached (without autoclear) to a new image at `image`; detached on drop if
/// it still is.
struct PlantedLoop(String);

impl PlantedLoop {
    fn attach(image: &Path) -> PlantedLoop {
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::File::create(image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        PlantedLoop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for PlantedLoop {
    fn drop(&mut self) {
        let f = format!(
            "/sys/block/{}/loop/backing_file",
            self.0.trim_start_matches("/dev/")
        );
        if std::fs::read_to_string(f).is_ok_and(|b| b.contains("planted.img")) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .output();
        }
    }
}

/// The app's build jobs `ps` lists (any state but finished): their ids.
fn build_jobs(s: &TestServer, app: &str) -> Vec<String> {
    let jobs = s.json(&["-a", app, "ps", "--json"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["process_type"] == "build")
        .filter_map(|j| j["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn kill_9_during_a_build_leaves_no_build_dir_mount_loop_device_or_build_job() {
    let test = "kill_9_during_a_build_leaves_no_build_dir_mount_loop_device_or_build_job";
    if skip_unless_root(test) {
        return;
    }
    let n = 3850 + std::process::id() % 50;
    let mut host = HostServer::start(n, &loopback_router(&[]));
    let app = "bcrash";
    let vhost = format!("{app}.{DOMAIN}");
    let (bp, _daemon) = buildpack(&host.s);
    let dir = app_repo(
        &host.s,
        app,
        &[
            (".buildpacks", &format!("{bp}\n")),
            ("www/index.html", "v1\n"),
        ],
    );
    create_in(&host.s, &dir, app);
    let (ok, err) = push(&host.s, &dir, "main");
    assert!(ok, "{err}");
    let router = logged_addr_nth(&host.s, "router: HTTP on ", 1);
    until(
        "v1",
        Duration::from_secs(10),
        || http(&router, "/", &vhost, None),
        "v1",
    );

    // A slow build: killed once its job's container runs and its dirs are mounted.
    commit(&dir, &[("SLOW", "1\n"), ("www/index.html", "v2\n")], "slow");
    let (mut pushing, rx) = spawn_push(&host.s, &dir);
    wait_line(&rx, "tick 2", Duration::from_secs(60));
    let jobs = build_jobs(&host.s, app);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0].clone();
    let before = BuildTrace::take(&host.s, n, &job);
    eprintln!("during the build: {before:#?}");
    assert!(
        before.scratch.iter().any(|e| e.ends_with(".xfer"))
            && before
                .scratch
                .iter()
                .filter(|e| e.starts_with("builds/"))
                .count()
                >= 2,
        "a build dir and its transfer dir: {:?}",
        before.scratch
    );
    // The build dir's own filesystem and the app's cache inside it, each on a loop device.
    assert!(before.mounts.len() >= 2, "{:?}", before.mounts);
    assert!(before.loops.len() >= 2, "{:?}", before.loops);
    assert!(
        ["container dir", "runc state", "netns", "memory cgroup"]
            .iter()
            .all(|w| before.job.contains(*w)),
        "{:?}",
        before.job
    );

    host.s.kill();
    // The server's death ends the push (its hook's stream is cut): rejected, nothing deployed.
    let t = Instant::now();
    let status = loop {
        if let Some(st) = pushing.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "git push outlived the server by 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the push of a killed server failed");
    let killed = BuildTrace::take(&host.s, n, &job);
    eprintln!("after kill -9: {killed:#?}");
    // Nothing goes by itself: the job runs on in its shim, the dirs stay mounted.
    assert_eq!(killed.mounts, before.mounts);
    assert!(killed.job.contains("container dir") && killed.job.contains("netns"));

    // A loop device left attached to an image of the build data dir without a mount (as a
    // crash between attaching and mounting could, were it not for autoclear).
    let planted =
        PlantedLoop::attach(&host.s.dir.path().join("data/build/build-cache/planted.img"));
    assert_eq!(
        loops_under(&host.s.dir.path().join("data/build")).len(),
        before.loops.len() + 1
    );

    let t0 = Instant::now();
    host.s.restart();
    let started = t0.elapsed();
    // The scratch dirs, mounts and loop devices go before the builder serves: by the time the
    // server answers /ping.
    let at_ping = BuildTrace::take(&host.s, n, &job);
    assert!(
        at_ping.scratch.is_empty() && at_ping.mounts.is_empty() && at_ping.loops.is_empty(),
        "build scratch left when the server answered (after {started:?}): {at_ping:#?}"
    );
    // The build job, re-adopted by the new server's host agent, is stopped and its container,
    // netns and cgroups removed.
    loop {
        let now = BuildTrace::take(&host.s, n, &job);
        let listed = build_jobs(&host.s, app);
        if now.is_empty() && listed.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "30 s after the start: {now:#?}, build jobs listed: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = t0.elapsed();
    eprintln!(
        "server answered {started:?} after its start; build job and its traces gone after {gone:?}"
    );
    // The builder did both: its sweep, and the stop of its dead build's job (the scheduler
    // adopts a build job as a one-off and leaves it to its builder).
    let log = std::fs::read_to_string(host.s.dir.path().join("server.log")).unwrap();
    for want in [
        "build start-up sweep removed what no build uses: 1 build dirs, 1 checkouts, 2 mounts, \
         1 loop devices",
        "stopping a build job whose build no longer runs",
    ] {
        let line = log.lines().find(|l| l.contains(want));
        eprintln!(
            "{}",
            line.unwrap_or_else(|| panic!("no {want:?} in the server log"))
        );
    }

    // The release of the first push serves (through the new server's router, on a new port);
    // the interrupted one left no trace there.
    let router = logged_addr_nth(&host.s, "router: HTTP on ", 2);
    until(
        "v1 after the crash",
        Duration::from_secs(30),
        || http(&router, "/", &vhost, None),
        "v1",
    );
    // And the next push deploys.
    let t1 = Instant::now();
    commit(&dir, &[("www/index.html", "v3\n")], "fast");
    std::fs::remove_file(dir.join("SLOW")).unwrap();
    commit(&dir, &[], "not slow");
    let (ok, err) = push(&host.s, &dir, "main");
    assert!(ok, "{err}");
    // The dead push's lease on the app was released at the start, not left to run out (30 s).
    assert!(!err.contains("Another push"), "{err}");
    eprintln!("the next push took {:?}", t1.elapsed());
    until(
        "v3",
        Duration::from_secs(10),
        || http(&router, "/", &vhost, None),
        "v3",
    );
    let after = BuildTrace::take(&host.s, n, &job);
    assert!(
        after.mounts.is_empty() && after.loops.is_empty(),
        "{after:#?}"
    );
    drop(planted);
}
