//! Joining a machine (issue 18): `slipway cluster token` prints the cluster's token, and
//! `slipway host join --etcd URL --token-file FILE --listen ADDR` runs a host that checks it
//! against the verifier the controllers publish in etcd: with another token it refuses to
//! start and says what to do; with the right one it registers, is followed and gets jobs.
//! Test numbers `n`: 4275-4299.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `slipway host join` process, killed on drop with what its jobs left.
struct Joined {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    n: u32,
}

impl Joined {
    fn start(dir: &Path, n: u32, etcd: &str, token_file: &Path) -> Joined {
        let log = dir.join(format!("join-{n}.log"));
        let data = dir.join(format!("join-{n}"));
        let child = std::process::Command::new(BIN)
            .args(["host", "join", "--etcd", etcd, "--roles", "host"])
            .args(["--listen", "127.0.0.1:0"])
            // Hosts of one network namespace (join's default is vxlan, for separate machines).
            .args(["--overlay", "none"])
            .arg("--token-file")
            .arg(token_file)
            .arg("--data-dir")
            .arg(&data)
            .arg("--")
            .args(["--bridge", &format!("slws{n}")])
            .args(["--nft-table", &format!("slws{n}")])
            .args([
                "--subnet",
                &format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
            ])
            .args(["--cgroup-parent", &format!("slipway-srvtest-{n}")])
            .arg("--stacks-dir")
            .arg(std::env::temp_dir().join("slipway-test-stacks"))
            .env("HOME", dir)
            .env_remove("SLIPWAY_CLUSTER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn slipway host join");
        Joined {
            child,
            data,
            log,
            n,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_host_leftovers(
            &self.data.join("host"),
            &format!("slipway-srvtest-{}", self.n),
            &format!("slws{}", self.n),
        );
    }
}

#[test]
fn a_host_joins_with_the_clusters_token_and_is_refused_with_another() {
    if skip_unless_root("a_host_joins_with_the_clusters_token_and_is_refused_with_another") {
        return;
    }
    let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
        return;
    };
    let n = 4275 + (std::process::id() % 12) * 2;
    let mut args = vec![
        "--etcd".to_string(),
        etcd.client_urls(),
        "--no-host".into(),
        "--discovery-listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(loopback_router(&[]));
    let s = TestServer::start_with(&args);
    let token = s.ok(&["cluster", "token"]).trim().to_string();
    let stored = std::fs::read_to_string(s.dir.path().join("data/cluster-token")).unwrap();
    assert_eq!(token, stored.trim());

    // No token at all: refused, saying which one to give (it used to say "not the cluster's").
    let none = std::process::Command::new(BIN)
        .args(["server", "--roles", "host", "--etcd", &etcd.client_urls()])
        .args(["--host-listen", "127.0.0.1:0", "--no-register"])
        .arg("--data-dir")
        .arg(s.dir.path().join("no-token"))
        .arg("--stacks-dir")
        .arg(std::env::temp_dir().join("slipway-test-stacks"))
        .env("HOME", s.dir.path())
        .env_remove("SLIPWAY_CLUSTER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success(), "{err}");
    assert!(
        err.contains("no cluster token") && err.contains("slipway cluster token"),
        "{err}"
    );

    // Another token: refused before it registers, saying what to do.
    let wrong = s.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-clusters-token").unwrap();
    let mut refused = Joined::start(s.dir.path(), n, &etcd.client_urls(), &wrong);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = refused.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "a host with another token kept running:\n{}",
            refused.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = refused.log();
    assert!(
        log.contains("not the cluster's") && log.contains("slipway cluster token"),
        "{log}"
    );
    assert!(!log.contains("registered in discovery"), "{log}");
    drop(refused);

    // The cluster's token: it joins, is followed and runs the app's job.
    let right = s.dir.path().join("token");
    std::fs::write(&right, &token).unwrap();
    let joined = Joined::start(s.dir.path(), n + 1, &etcd.client_urls(), &right);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !joined.log().contains("registered in discovery") {
        assert!(
            Instant::now() < deadline,
            "never registered:\n{}",
            joined.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let host_id = std::fs::read_to_string(joined.data.join("host/host-id"))
        .unwrap()
        .trim()
        .to_string();
    s.create_app("jn");
    let c = s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec!["sh".into(), "-c".into(), "exec sleep 3600".into()],
                ..Default::default()
            },
        );
        let r = c.create_release("jn", &r).await.unwrap();
        c.set_app_release("jn", r.id).await.unwrap();
    });
    s.ok(&["-a", "jn", "scale", "web=1"]);
    let c = s.client();
    let jobs = block_on(async move { c.jobs("jn").await.unwrap() });
    let up: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == slipway_types::JobState::Up)
        .collect();
    assert_eq!(up.len(), 1, "{jobs:#?}");
    assert_eq!(up[0].host_id.as_deref(), Some(host_id.as_str()));
    eprintln!(
        "joined host {host_id} runs {}; the refused one said: {}",
        up[0].id,
        log.lines().last().unwrap_or_default()
    );
}
