//! Hostile tests: disk (see mod.rs). The finding: a job's writes to `/app` and `/var` (200 MB
//! each) both landed on the host's disk, unbounded (`/var` as root: the host test covers it). Now every job's writable layer is a
//! filesystem of its `disk` limit (`slipway limit set TYPE disk=…`, default 1 GiB): past it, the
//! job gets ENOSPC and the host holds no more than the limit for it; a build likewise.

use crate::push::{app_repo, commit, create_in, push};
use crate::support::{HostServer, TestServer, skip_unless_root};
use slipway_types::{NewRelease, ProcessType};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn n() -> u32 {
    3150 + std::process::id() % 25
}

/// The jobs' disk images of the server's host agent.
fn images(s: &TestServer) -> Vec<PathBuf> {
    std::fs::read_dir(s.dir.path().join("data/host/containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("disk.img"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes the host's disk holds for a file (its allocated blocks: the images are sparse).
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

#[test]
fn a_job_writing_past_its_disk_limit_gets_enospc_and_the_host_holds_the_limit() {
    if skip_unless_root(
        "a_job_writing_past_its_disk_limit_gets_enospc_and_the_host_holds_the_limit",
    ) {
        return;
    }
    let hs = HostServer::start(n(), &[]);
    let s = &hs.s;
    let app = "filler";
    s.create_app(app);
    // 40 MB into /app fits in 64 MB; 40 more do not. (A slug's processes run as uid 1000 and
    // can write only /app and the /tmp tmpfs; the host test `disk.rs` writes /var as root.)
    let script = "mkdir -p /app; dd if=/dev/zero of=/app/a bs=1M count=40 2>&1; echo app=$?; \
                  dd if=/dev/zero of=/app/b bs=1M count=40 2>&1; echo var=$?; echo written; \
                  trap 'exit 0' TERM; sleep 1000 & wait";
    let mut r = NewRelease::default();
    r.processes.insert(
        "web".into(),
        ProcessType {
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
    );
    crate::support::block_on(async {
        let c = s.client();
        let rel = c.create_release(app, &r).await.unwrap();
        c.set_app_release(app, rel.id).await.unwrap();
    });
    s.ok(&["-a", app, "limit", "set", "web", "disk=64MB"]);
    let shown = s.json(&["-a", app, "limit", "--json"]);
    assert_eq!(shown["web"]["disk"], 64u64 << 20);
    s.ok(&["-a", app, "scale", "web=1"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = s.ok(&["-a", app, "log"]);
        // (The command itself, which the log shows first, says `echo written` too.)
        if log.lines().any(|l| l.ends_with(": written")) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the job never finished writing:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = |what: &str| log.lines().any(|l| l.ends_with(&format!(": {what}")));
    assert!(said("app=0"), "40 MB into /app should fit:\n{log}");
    assert!(said("var=1"), "the second 40 MB should fail:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("/app/b") && l.contains("No space left on device")),
        "the second dd did not get ENOSPC:\n{log}"
    );
    let imgs = images(s);
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    let used = allocated(&imgs[0]);
    assert!(
        (40 << 20..=64 << 20).contains(&used),
        "the host holds {used} bytes for the job (limit 64 MiB)"
    );

    // One-off jobs get the default limit (1 GiB): the root filesystem says how big it is.
    let out = s.ok(&["-a", app, "run", "--", "sh", "-c", "df -k / | tail -1"]);
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("df said {out:?}"));
    assert!(
        (900 << 10..=1 << 20).contains(&kib),
        "a one-off job's disk is {kib} KiB, not about 1 GiB: {out}"
    );

    s.ok(&["-a", app, "scale", "web=0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !images(s).is_empty() {
        assert!(Instant::now() < deadline, "the job's image stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_build_writing_past_its_disk_limit_fails_with_the_limit_named() {
    if skip_unless_root("a_build_writing_past_its_disk_limit_fails_with_the_limit_named") {
        return;
    }
    let hs = HostServer::start(n() + 25, &[]);
    let server = &hs.s;
    // A buildpack whose compile writes 1.2 GB into the app (the build's default limit: 1 GiB),
    // served by a git daemon (file:// buildpacks are refused).
    let base = server.dir.path().join("bp-base");
    let bp = base.join("filler-bp");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    let files = [
        ("bin/detect", "#!/bin/sh\necho Filler\n"),
        (
            "bin/compile",
            "#!/bin/sh\ndd if=/dev/zero of=\"$1/big\" bs=4M count=300 2>&1 || exit 1\n",
        ),
        ("bin/release", "#!/bin/sh\necho '---'\n"),
    ];
    for (path, content) in files {
        std::fs::write(bp.join(path), content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bp.join(path), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    crate::support::git(&bp, &["init", "-q", "-b", "main"]);
    commit(&bp, &[], "buildpack");
    let daemon = slipway_testkit::GitDaemon::start(&base);
    let app = "bigbuild";
    let dir = app_repo(
        server,
        app,
        &[
            (".buildpacks", &format!("{}\n", daemon.url("filler-bp"))),
            ("index.html", "a\n"),
        ],
    );
    create_in(server, &dir, app);
    let (ok, err) = push(server, &dir, "main");
    assert!(!ok, "the push should fail:\n{err}");
    assert!(
        err.contains("No space left on device"),
        "the build's write did not get ENOSPC:\n{err}"
    );
    assert!(
        err.contains("The build ran out of disk space (limit 1.0G)"),
        "no clear error:\n{err}"
    );
    // Nothing of the build stays mounted.
    let builds = server.dir.path().join("data/build/builds");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&builds.display().to_string()),
        "a build dir stayed mounted"
    );
}
