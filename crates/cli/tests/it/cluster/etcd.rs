//! The cluster on etcd, end to end (issue 16, "Done when"): a real 3-member etcd, one real
//! PostgreSQL, real runc, and three `slipway server` processes, each a host and a router with
//! its own data dir, bridge, subnet, nft table, cgroup parent and ports; two of them also run
//! the controller and the scheduler (every role, in fact). All are given `--etcd`: hosts
//! register there, schedulers elect their leader there, routers read their backends there —
//! no `--discovery-url` anywhere.
//!
//! In order: 2 jobs per host, every router serves; `kill -9` of the scheduler leader's process
//! (a host too: its containers are removed with it) → takeover, a scale issued meanwhile
//! completes, replacements, no job started twice; it restarts and gets jobs again; the same for
//! the host-only process; one etcd member down → changes work; two → refused with a clear
//! error while every router serves; members back → changes resume by themselves.
//!
//! Measured and printed (`--no-capture`): the scheduler takeover after `kill -9` of the
//! leader's process, the time until a dead host's jobs run elsewhere, and the resumption after
//! etcd's quorum is back.

use crate::support::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `n` range of this file: 3500-3599 (bridge, nft table, subnet and cgroup parent names).
const N_BASE: u32 = 3500;

/// The flags that give a server of the cluster its own host network, cgroup parent and
/// loopback ports, and put it on etcd.
fn node_flags(n: u32, etcd: &str) -> Vec<String> {
    let mut f: Vec<String> = vec![
        "--etcd".into(),
        etcd.into(),
        "--host-listen".into(),
        "127.0.0.1:0".into(),
        "--bridge".into(),
        format!("slws{n}"),
        "--nft-table".into(),
        format!("slws{n}"),
        "--subnet".into(),
        format!("100.{}.{}.0/24", 220 + n / 256, n % 256),
        "--cgroup-parent".into(),
        format!("slipway-srvtest-{n}"),
        "--stacks-dir".into(),
        std::env::temp_dir()
            .join("slipway-test-stacks")
            .display()
            .to_string(),
    ];
    f.extend(loopback_router(&[]));
    f
}

/// The third server: host and router only (`--controller-url` for its routes), killed on drop
/// with what its jobs left.
struct HostRouter {
    child: Option<Child>,
    dir: PathBuf,
    n: u32,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl HostRouter {
    fn start(dir: &Path, n: u32, args: Vec<String>, env: Vec<(String, String)>) -> HostRouter {
        let mut h = HostRouter {
            child: None,
            dir: dir.to_path_buf(),
            n,
            args,
            env,
        };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = std::process::Command::new(BIN)
            .args(["server", "--roles", "host,router", "--no-register"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the host+router server");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for HostRouter {
    fn drop(&mut self) {
        self.kill();
        leftovers(&self.dir, self.n);
    }
}

/// Removes what a killed server's host agent left: its containers (and so their shims'
/// work), mounts, netns, cgroups, bridge and nft tables.
fn leftovers(dir: &Path, n: u32) {
    remove_host_leftovers(
        &dir.join("data/host"),
        &format!("slipway-srvtest-{n}"),
        &format!("slws{n}"),
    );
}

/// A controller server of the cluster, cleaned up like [`HostRouter`] on drop.
struct Controller {
    s: TestServer,
    n: u32,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.s.kill();
        leftovers(self.s.dir.path(), self.n);
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// The address after `marker` in a log, once it is there.
fn addr_after(log: impl Fn() -> String, marker: &str) -> String {
    let mut found = String::new();
    wait_for(marker, Duration::from_secs(60), || {
        if let Some(rest) = log().split(marker).nth(1) {
            found = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return true;
        }
        false
    });
    found
}

/// `GET /` for `host` through the router at `addr`: the status line and body, or the error.
fn get(addr: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
    else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return "write failed".into();
    }
    let mut out = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn serves(router: &str) -> bool {
    let r = get(router, &format!("web.{DOMAIN}"));
    r.starts_with("HTTP/1.1 200") && r.contains("hello-from-cluster")
}

/// The app's job rows: id → (state, host).
fn rows(s: &TestServer) -> Vec<(String, String, String)> {
    let c = s.client();
    block_on(async move { c.jobs("web").await })
        .map(|jobs| {
            jobs.into_iter()
                .map(|j| {
                    (
                        j.id,
                        j.state.as_str().to_string(),
                        j.host_id.unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Up jobs per host.
fn up_per_host(s: &TestServer) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, state, host) in rows(s) {
        if state == "up" {
            *m.entry(host).or_default() += 1;
        }
    }
    m
}

/// Every job id each reachable host agent was ever asked to start (finished ones included):
/// host API URL → ids.
fn started(hosts: &[String], token: &str) -> HashMap<String, Vec<String>> {
    hosts
        .iter()
        .filter_map(|url| {
            let api = slipway_host::client::HttpHost::new(url, token);
            let ids = block_on(async move {
                use slipway_host::HostApi;
                api.list_jobs().await
            })
            .ok()?;
            Some((url.clone(), ids.into_iter().map(|j| j.job.id).collect()))
        })
        .collect()
}

/// No job id was started on two hosts, nor twice on one.
fn assert_started_once(hosts: &[String], token: &str) {
    let mut seen: HashMap<String, String> = HashMap::new();
    for (host, ids) in started(hosts, token) {
        for id in ids {
            if let Some(other) = seen.insert(id.clone(), host.clone()) {
                panic!("job {id} was started on {other} and on {host}");
            }
        }
    }
}

fn scale(s: &TestServer, n: usize) {
    s.ok(&["-a", "web", "scale", "--no-wait", &format!("web={n}")]);
}

#[test]
fn a_cluster_on_etcd_places_fails_over_and_survives_the_loss_of_an_etcd_member() {
    if skip_unless_root(
        "a_cluster_on_etcd_places_fails_over_and_survives_the_loss_of_an_etcd_member",
    ) {
        return;
    }
    let Some(mut etcd) = slipway_testkit::etcd::etcd_cluster(3) else {
        return;
    };
    let Some(db) = block_on(slipway_testkit::postgres_database()) else {
        return;
    };
    let urls = etcd.client_urls();
    let n = N_BASE + (std::process::id() % 33) * 3;
    let dir = tempfile::tempdir().unwrap();
    let key = "k".repeat(24) + &std::process::id().to_string();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, &key).unwrap();
    let controller = |i: u32| {
        let mut args = node_flags(n + i, &urls);
        args.extend(
            [
                "--database-url",
                &db.url,
                "--api-key-file",
                &key_file.display().to_string(),
                "--discovery-listen",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        Controller {
            s: TestServer::start_with(&args),
            n: n + i,
        }
    };
    let t_start = Instant::now();
    let mut a = controller(0);
    wait_for("a leader", Duration::from_secs(30), || {
        log_of(a.s.dir.path()).contains("acting as the scheduler leader")
    });
    let b = controller(1);
    let token = std::fs::read_to_string(a.s.dir.path().join("data/cluster-token"))
        .unwrap()
        .trim()
        .to_string();
    let c_dir = tempfile::tempdir().unwrap();
    let mut c_args = node_flags(n + 2, &urls);
    c_args.extend(["--controller-url".to_string(), b.s.url.clone()]);
    let mut c = HostRouter::start(
        c_dir.path(),
        n + 2,
        c_args,
        vec![
            ("SLIPWAY_API_KEY".into(), key.clone()),
            ("SLIPWAY_CLUSTER_TOKEN".into(), token.clone()),
        ],
    );
    let host_api =
        |log: &dyn Fn() -> String| format!("http://{}", addr_after(log, "host API on http://"));
    let a_dir = a.s.dir.path().to_path_buf();
    let b_dir = b.s.dir.path().to_path_buf();
    let hosts = [
        host_api(&|| log_of(&a_dir)),
        host_api(&|| log_of(&b_dir)),
        host_api(&|| c.log()),
    ];
    let routers = [
        addr_after(|| log_of(&a_dir), "router: HTTP on "),
        addr_after(|| log_of(&b_dir), "router: HTTP on "),
        addr_after(|| c.log(), "router: HTTP on "),
    ];
    // The leader follows all three hosts (its own in-process, the others through etcd).
    wait_for(
        "the leader to follow both other hosts",
        Duration::from_secs(30),
        || {
            log_of(&a_dir)
                .matches("following a registered host")
                .count()
                >= 2
        },
    );
    eprintln!("cluster up after {:?}", t_start.elapsed());

    a.s.create_app("web");
    let client = a.s.client();
    block_on(async move {
        let mut r = slipway_types::NewRelease::default();
        r.processes.insert(
            "web".into(),
            slipway_types::ProcessType {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "mkdir -p /tmp/www && echo hello-from-cluster > /tmp/www/index.html; \
                     trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait"
                        .into(),
                ],
                ..Default::default()
            },
        );
        let r = client.create_release("web", &r).await.unwrap();
        client.set_app_release("web", r.id).await.unwrap();
    });

    // 1. Six jobs, two per host; every router serves the app.
    scale(&a.s, 6);
    wait_for("6 jobs up", Duration::from_secs(60), || {
        up_per_host(&a.s).values().sum::<usize>() == 6
    });
    let per_host = up_per_host(&a.s);
    assert!(
        per_host.len() == 3 && per_host.values().all(|n| *n == 2),
        "not 2 per host: {per_host:?}"
    );
    for r in &routers {
        wait_for(
            &format!("router {r} to serve the app"),
            Duration::from_secs(20),
            || serves(r),
        );
    }
    assert_started_once(&hosts, &token);

    // 2. kill -9 of the leader's process (a host too, so its jobs go with it: its containers
    // are removed as well). The other controller takes over; a scale issued meanwhile
    // completes on the two hosts left.
    let a_host = std::fs::read_to_string(a_dir.join("data/host/host-id"))
        .unwrap()
        .trim()
        .to_string();
    a.s.kill();
    let killed = Instant::now();
    leftovers(&a_dir, n);
    scale(&b.s, 8);
    let takeover = wait_for(
        "the other scheduler to take over",
        Duration::from_secs(20),
        || log_of(&b_dir).contains("acting as the scheduler leader"),
    );
    eprintln!("scheduler takeover after kill -9 of the leader: {takeover:?}");
    assert!(
        takeover < Duration::from_secs(10),
        "took over after {takeover:?}"
    );
    let replaced = wait_for(
        "8 jobs up on the two hosts left",
        Duration::from_secs(30),
        || {
            let m = up_per_host(&b.s);
            m.values().sum::<usize>() == 8 && !m.contains_key(&a_host)
        },
    );
    let replaced = killed.elapsed().min(replaced + takeover);
    eprintln!("the dead host's jobs replaced (and the scale done) after {replaced:?}");
    assert!(
        replaced < Duration::from_secs(15),
        "replaced after {replaced:?}; rows: {:#?}\nthe new leader since it took over:\n{}",
        rows(&b.s),
        log_of(&b_dir)
            .split("taking over as the scheduler leader")
            .nth(1)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("cannot follow the host's jobs"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let t0 = Instant::now();
    for r in &routers[1..] {
        wait_for(
            &format!("router {r} to recover"),
            Duration::from_secs(15),
            || serves(r),
        );
    }
    eprintln!(
        "traffic through the other routers after {:?} more",
        t0.elapsed()
    );
    assert_started_once(&hosts[1..], &token);

    // 3. The lost host comes back (its process restarted) and gets jobs again.
    let logged = log_of(&a_dir).len();
    a.s.restart();
    let followed = |log: &str| {
        log.lines()
            .filter(|l| l.contains("following a registered host") && l.contains(&a_host))
            .count()
    };
    wait_for(
        "the restarted host to be followed",
        Duration::from_secs(40),
        || followed(&log_of(&b_dir)) >= 2,
    );
    scale(&b.s, 9);
    wait_for(
        "a job on the host that came back",
        Duration::from_secs(40),
        || {
            let m = up_per_host(&b.s);
            m.values().sum::<usize>() == 9 && m.get(&a_host).is_some_and(|n| *n >= 1)
        },
    );
    let hosts_now = [
        host_api(&|| log_of(&a_dir)[logged..].to_string()),
        hosts[1].clone(),
        hosts[2].clone(),
    ];
    assert_started_once(&hosts_now, &token);

    // 4. kill -9 of a host-only process and of its jobs: they are replaced on the other two
    // hosts, traffic through the other routers recovers; restarted, it rejoins and gets jobs.
    let c_host = std::fs::read_to_string(c_dir.path().join("data/host/host-id"))
        .unwrap()
        .trim()
        .to_string();
    c.kill();
    let killed = Instant::now();
    leftovers(c_dir.path(), n + 2);
    let replaced = wait_for(
        "the host-only process's jobs replaced",
        Duration::from_secs(30),
        || {
            let m = up_per_host(&b.s);
            m.values().sum::<usize>() == 9 && !m.contains_key(&c_host)
        },
    );
    eprintln!("a killed host's jobs replaced after {replaced:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "replaced after {:?}",
        killed.elapsed()
    );
    // The restarted A's router listens on a new port.
    let a_router = addr_after(|| log_of(&a_dir)[logged..].to_string(), "router: HTTP on ");
    for r in [&a_router, &routers[1]] {
        wait_for(
            &format!("router {r} to recover"),
            Duration::from_secs(15),
            || serves(r),
        );
    }
    assert_started_once(&hosts_now[..2], &token);
    let logged_c = c.log().len();
    c.spawn();
    let t0 = Instant::now();
    while log_of(&b_dir)
        .lines()
        .filter(|l| l.contains("following a registered host") && l.contains(&c_host))
        .count()
        < 2
    {
        // What the restarted process said, when it is not followed (seen once in CI, under
        // load): the test's wait_for would say only that it timed out.
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "timed out waiting for the restarted host-only process to be followed; its log:\n{}",
            &c.log()[logged_c..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    scale(&b.s, 10);
    wait_for(
        "a job on the host-only process that came back",
        Duration::from_secs(40),
        || {
            let m = up_per_host(&b.s);
            m.values().sum::<usize>() == 10 && m.get(&c_host).is_some_and(|n| *n >= 1)
        },
    );
    let c_router = addr_after(|| c.log()[logged_c..].to_string(), "router: HTTP on ");
    wait_for(
        "the restarted router to serve",
        Duration::from_secs(20),
        || serves(&c_router),
    );
    let routers = [a_router, routers[1].clone(), c_router];

    // 5. One etcd member of three stopped: changes still go through.
    etcd.stop_member(0);
    scale(&b.s, 6);
    wait_for(
        "6 up with one etcd member down",
        Duration::from_secs(30),
        || up_per_host(&b.s).values().sum::<usize>() == 6,
    );
    // Two stopped: no quorum. A change is refused, saying why; routers keep serving.
    etcd.stop_member(1);
    std::thread::sleep(Duration::from_secs(12));
    let refused =
        b.s.cmd()
            .args(["-a", "web", "scale", "web=7"])
            .timeout(Duration::from_secs(40))
            .assert()
            .failure();
    let err = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    eprintln!("scale without an etcd quorum: {err}");
    assert!(
        err.contains("changes are refused") && err.contains("etcd"),
        "{err}"
    );
    // Nothing was written: the formation is still 6.
    let formation = b.s.ok(&["-a", "web", "scale"]);
    assert!(formation.contains("web=6"), "{formation}");
    for r in &routers {
        assert!(serves(r), "router {r} stopped serving without etcd");
    }
    // Members back: it resumes by itself.
    etcd.start_member(0).unwrap();
    etcd.start_member(1).unwrap();
    let resumed = Instant::now();
    let accepted = wait_for(
        "a change accepted once etcd is back",
        Duration::from_secs(40),
        || {
            b.s.cmd()
                .args(["-a", "web", "scale", "--no-wait", "web=7"])
                .output()
                .unwrap()
                .status
                .success()
        },
    );
    eprintln!("changes accepted {accepted:?} after etcd's quorum came back");
    wait_for("7 up once etcd is back", Duration::from_secs(40), || {
        up_per_host(&b.s).values().sum::<usize>() == 7
    });
    eprintln!("and 7 jobs up after {:?}", resumed.elapsed());
    c.kill();
    drop(c);
    drop(b);
    drop(a);
    eprintln!("whole test: {:?}", t_start.elapsed());
}
