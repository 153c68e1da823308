//! Hostile tests: container privileges (see mod.rs). Every check reads the kernel's own view from
//! inside a real job: `/proc/self/status` (uid, seccomp mode, capability sets), what `unshare`,
//! `mount`, `ip`, `arping` and `ping` manage to do, and the pids cgroup.
//!
//! Jobs are one-off `slipway run` jobs: on a slug (the slug runner, uid 1000), on an image with
//! no `USER` (root in the container), and on the busybox stack alone.

use crate::push::{app_repo, create_in, push};
use crate::support::*;
use slipway_registry::testimage::{ImageBuilder, busybox_layer};
use std::process::Stdio;

/// CAP_NET_RAW's bit in the capability masks of `/proc/PID/status`.
const CAP_NET_RAW: u64 = 1 << 13;

/// `slipway -a APP run -- sh -c SCRIPT` with no stdin; (exit code, stdout + stderr).
fn run(s: &TestServer, app: &str, script: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .current_dir(s.dir.path())
        .env("SLIPWAY_CONFIG", &s.config)
        .env("HOME", s.dir.path())
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .args(["-a", app, "run", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- {app}: {script}\n{text}");
    (out.status.code(), text)
}

/// The value after `key:` in `/proc/self/status` text (first field only).
fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
        .split_whitespace()
        .next()
        .unwrap()
}

fn mask(status: &str, key: &str) -> u64 {
    u64::from_str_radix(field(status, key), 16).unwrap()
}

/// What a job may try to leave its box with. Each line says what it did, so a failure shows all.
const ESCAPES: &str = "\
mkdir -p /tmp/m; unshare -U -r -m -n sh -c 'mount -t tmpfs none /tmp/m && echo ESCAPE-MOUNTED; \
ip addr add 10.99.0.1/32 dev lo && echo ESCAPE-IP-ADDED' 2>&1; echo unshare-rc=$?; \
unshare -m sh -c 'echo ESCAPE-MOUNT-NS' 2>&1; \
arping -c 1 -w 1 -I eth0 10.99.0.2 2>&1; echo arping-rc=$?; \
ping -c 1 -W 1 127.0.0.1 2>&1; echo ping-rc=$?; \
mount -t tmpfs none /tmp/m 2>&1 && echo ESCAPE-MOUNTED-IN-JOB; true";

fn status_and_escapes(s: &TestServer, app: &str) -> String {
    let (code, out) = run(
        s,
        app,
        &format!(
            "grep -E '^(Uid|Gid|Seccomp|CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; \
             {ESCAPES}"
        ),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(field(&out, "Seccomp"), "2", "no seccomp filter:\n{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            mask(&out, set) & CAP_NET_RAW,
            0,
            "{set} has CAP_NET_RAW:\n{out}"
        );
    }
    for escaped in [
        "ESCAPE-MOUNTED",
        "ESCAPE-IP-ADDED",
        "ESCAPE-MOUNT-NS",
        "ESCAPE-MOUNTED-IN-JOB",
    ] {
        assert!(!out.contains(escaped), "{escaped}:\n{out}");
    }
    // unshare is refused by the seccomp filter (EPERM), not just by a missing capability.
    assert!(
        out.contains("unshare: unshare(") && out.contains("Operation not permitted"),
        "{out}"
    );
    assert!(!out.contains("unshare-rc=0"), "{out}");
    // No raw sockets: arping needs AF_PACKET, ping a raw ICMP socket.
    assert!(
        out.lines()
            .any(|l| l.starts_with("arping: socket") && l.ends_with("Operation not permitted")),
        "{out}"
    );
    assert!(!out.contains("arping-rc=0"), "{out}");
    assert!(!out.contains("ping-rc=0"), "{out}");
    assert!(!out.contains("1 packets received"), "{out}");
    out
}

#[test]
fn slug_and_image_jobs_run_confined_by_seccomp_without_net_raw_and_slugs_not_as_root() {
    if skip_unless_root(
        "slug_and_image_jobs_run_confined_by_seccomp_without_net_raw_and_slugs_not_as_root",
    ) {
        return;
    }
    let hs = HostServer::start(3050 + std::process::id() % 10, &[]);
    let s = &hs.s;

    // A slug: its jobs run as uid 1000, like its build, and /app is theirs to write.
    let dir = app_repo(
        s,
        "slugbox",
        &[
            ("Procfile", "web: httpd -f -p $PORT -h /app/www\n"),
            ("www/index.html", "hello\n"),
        ],
    );
    create_in(s, &dir, "slugbox");
    let (ok, err) = push(s, &dir, "main");
    assert!(
        ok,
        "the build (a job under the same confinement) failed:\n{err}"
    );
    let out = status_and_escapes(s, "slugbox");
    assert_eq!(
        field(&out, "Uid"),
        "1000",
        "a slug job runs as root:\n{out}"
    );
    assert_eq!(field(&out, "Gid"), "1000", "{out}");
    assert_eq!(mask(&out, "CapEff"), 0, "{out}");
    let (code, out) = run(
        s,
        "slugbox",
        "echo x > /app/written && echo APP-WRITABLE; echo x > $HOME/.h && echo HOME=$HOME; \
         echo x > /tmp/t && echo TMP-WRITABLE",
    );
    assert_eq!(code, Some(0), "{out}");
    for want in ["APP-WRITABLE", "HOME=/app", "TMP-WRITABLE"] {
        assert!(out.contains(want), "{want}:\n{out}");
    }

    // An image without USER runs as root in the container, but a root without the powers that
    // make it the host's root: the same filter, no NET_RAW, no new namespaces.
    s.create_app("imgbox");
    let archive = s.dir.path().join("imgbox.tar");
    ImageBuilder::new()
        .layer(busybox_layer().unwrap())
        .cmd(&["sh"])
        .env("PATH=/bin")
        .write_docker_archive(&archive, "imgbox:v1")
        .unwrap();
    s.ok(&["-a", "imgbox", "image", "push", archive.to_str().unwrap()]);
    let out = status_and_escapes(s, "imgbox");
    assert_eq!(
        field(&out, "Uid"),
        "0",
        "an image's default user is root:\n{out}"
    );
    assert_ne!(mask(&out, "CapEff"), 0, "{out}");
    // A forged clone with namespace flags is refused as well: busybox's `unshare` uses unshare(2),
    // `nsenter`… needs setns(2): both are off.
    let (_, out) = run(s, "imgbox", "nsenter -t 1 -n true 2>&1; echo nsenter-rc=$?");
    assert!(!out.contains("nsenter-rc=0"), "{out}");
}

#[test]
fn a_fork_bomb_stops_at_the_job_limit_and_all_jobs_share_a_capped_parent() {
    if skip_unless_root("a_fork_bomb_stops_at_the_job_limit_and_all_jobs_share_a_capped_parent") {
        return;
    }
    let n = 3060 + std::process::id() % 10;
    let hs = HostServer::start(n, &[]);
    let s = &hs.s;
    s.create_app("bomb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = s.client();
        let r = c
            .create_release("bomb", &slipway_types::NewRelease::default())
            .await
            .unwrap();
        c.set_app_release("bomb", r.id).await.unwrap();
    });
    // 1,000 sleepers: far above the default per-job limit, far below the old one (8,192).
    let (code, out) = run(
        s,
        "bomb",
        // The loop runs in a subshell (sh gives up at its first failed fork); the rest uses
        // builtins only, as the job has no pid left to fork with.
        "read m < /sys/fs/cgroup/pids/pids.max; echo max=$m; \
         (i=0; while [ $i -lt 1000 ]; do sleep 60 & i=$((i+1)); done) 2>/tmp/err; \
         read c < /sys/fs/cgroup/pids/pids.current; echo current=$c; read e < /tmp/err; \
         echo \"$e\"; true",
    );
    assert_eq!(code, Some(0), "{out}");
    let value = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .trim()
            .to_string()
    };
    assert_eq!(value("max="), "512", "{out}");
    let current: u64 = value("current=").parse().unwrap();
    assert!(current <= 512, "{current} tasks in the job:\n{out}");
    assert!(out.contains("can't fork"), "{out}");

    // The cgroup parent of every job is capped below the host's pid_max.
    let parent = format!("/sys/fs/cgroup/pids/slipway-srvtest-{n}/pids.max");
    let cap = std::fs::read_to_string(&parent).unwrap();
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cap: u64 = cap
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{parent} is {cap:?}, not a number"));
    assert!(cap < pid_max, "{cap} >= pid_max {pid_max}");
    drop(hs);

    // The agent's flag sets it.
    let hs = HostServer::start(n, &["--jobs-max-procs".into(), "3000".into()]);
    hs.s.create_app("probe");
    assert_eq!(std::fs::read_to_string(&parent).unwrap().trim(), "3000");
}
