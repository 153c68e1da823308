//! `slipway server` processes on a LAN of network namespaces ([`slipway_testkit::netns`]): one
//! process per host, each with its own network (so fixed ports on its LAN address: the API on
//! 7070, the host API on 7071, the router's admin endpoint on 1112, the router on 80 and 443),
//! data dir, job bridge name, job subnet and cgroup parent; a real etcd, its members in the
//! hosts or on the LAN's gateway ([`Etcd`]); one PostgreSQL, reached through a forwarder on the
//! gateway (a host cut off the LAN loses it, as it would a database on another machine).
//! Reused by the cluster tests that need real hosts (partitions, fencing, the overlay network).
//!
//! ```ignore
//! let Some(mut c) = LanCluster::new(n, 3, Etcd::OnHosts(3)) else { return };
//! c.start_controller(0, &[]);              // every role, the cluster's database
//! c.start_host(1, "host,router", 0, &[]);  // follows host 0's controller
//! c.route_host_gw();                       // jobs reachable across hosts (harness shortcut)
//! c.ok(0, &["create", "web"]);             // the CLI, from the root netns, against host 0
//! c.kill(1); c.restart(1);                 // SIGKILL, and the same flags again
//! c.lan.cut_link(2);                       // a pulled cable (restore_link plugs it back)
//! let left = c.finish();                   // teardown; assert!(left.is_empty())
//! ```
//!
//! Host `i`'s job subnet is `100.100.<i+1>.0/24` ([`LanCluster::subnet`]) until the overlay
//! network allocates them; [`LanCluster::route_host_gw`] (a harness shortcut) routes them between
//! hosts.

use crate::support::{BIN, DOMAIN};
use slipway_testkit::netns::NetnsLan;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The controller API's port on a host's LAN address.
pub const API_PORT: u16 = 7070;
/// The host agent API's port.
pub const HOST_API_PORT: u16 = 7071;
/// The router's admin (metrics) port.
pub const ROUTER_ADMIN_PORT: u16 = 1112;

/// The LAN, its etcd and database, and the `slipway server` of each host (if started).
/// Field order is drop order: the LAN (and every process on it) goes before etcd.
pub struct LanCluster {
    pub lan: NetnsLan,
    pub etcd: slipway_testkit::etcd::EtcdCluster,
    /// The database URL every host reaches: through a forwarder on the LAN's gateway, so a
    /// host whose cable is pulled loses its database too.
    pub db_url: String,
    _forwarder: Option<slipway_testkit::netns::TcpForwarder>,
    _db: slipway_testkit::TestDatabase,
    /// The API key of the cluster (written to a file the servers read).
    pub key: String,
    key_file: PathBuf,
    servers: Vec<Option<Server>>,
}

/// Where the cluster's etcd members run.
#[derive(Clone, Copy, Debug)]
pub enum Etcd {
    /// `k` members in the root netns, on the LAN's gateway address (free ports): always
    /// reachable, whatever happens to the hosts' links.
    Gateway(usize),
    /// One member in each of hosts 0..k, on its LAN address (ports 2379/2380): as on real
    /// machines, a host whose cable is pulled takes its member with it.
    OnHosts(usize),
}

struct Server {
    pid: u32,
    args: Vec<String>,
}

impl LanCluster {
    /// A LAN of `hosts` hosts for test number `n` (see [`NetnsLan`]), an etcd placed as `etcd`
    /// says and a fresh database; no server started yet. `None` when the test is skipped (not
    /// root, no etcd, no PostgreSQL: counted, a failure under CI).
    pub fn new(n: u32, hosts: usize, etcd: Etcd) -> Option<LanCluster> {
        if slipway_testkit::skip_unless_root(&slipway_testkit::current_test()) {
            return None;
        }
        let lan = NetnsLan::new(n, hosts).unwrap_or_else(|e| panic!("the test LAN: {e}"));
        let etcd = match etcd {
            Etcd::Gateway(k) => slipway_testkit::etcd::etcd_cluster_on(k, lan.gateway)?,
            Etcd::OnHosts(k) => {
                assert!(k <= hosts, "{k} etcd members on {hosts} hosts");
                if slipway_testkit::etcd::etcd_bin().is_none()
                    && slipway_testkit::skip(
                        &slipway_testkit::current_test(),
                        "etcd (apt-get install etcd-server; scripts/install-deps installs it)",
                    )
                {
                    return None;
                }
                let ips: Vec<_> = lan.hosts[..k].iter().map(|h| h.ip).collect();
                slipway_testkit::etcd::EtcdCluster::start_in(&ips, lan.etcd_in_hosts())
                    .unwrap_or_else(|e| panic!("etcd in the hosts: {e}"))
            }
        };
        let db = crate::support::block_on(slipway_testkit::postgres_database())?;
        let (db_url, forwarder) = match slipway_testkit::netns::url_addr(&db.url) {
            Ok(addr) => {
                let f = slipway_testkit::netns::TcpForwarder::start(lan.gateway, addr)
                    .unwrap_or_else(|e| panic!("a forwarder to PostgreSQL: {e}"));
                let url = slipway_testkit::netns::url_with_addr(&db.url, f.addr()).unwrap();
                (url, Some(f))
            }
            // Not a TCP address (a socket URL in SLIPWAY_TEST_DATABASE_URL): its socket then.
            Err(_) => (
                crate::support::block_on(slipway_testkit::netns::unix_socket_url(&db.url))
                    .unwrap_or_else(|e| panic!("PostgreSQL's Unix socket: {e}")),
                None,
            ),
        };
        let key = format!("lan-cluster-key-{}-{n}", std::process::id());
        let key_file = lan.dir().join("api-key");
        std::fs::write(&key_file, &key).unwrap();
        Some(LanCluster {
            servers: (0..hosts).map(|_| None).collect(),
            lan,
            etcd,
            db_url,
            _forwarder: forwarder,
            _db: db,
            key,
            key_file,
        })
    }

    /// Host `i`'s job subnet: `100.100.<i+1>.0/24`.
    pub fn subnet(&self, i: usize) -> String {
        format!("100.100.{}.0/24", i + 1)
    }

    /// Harness shortcut: routes every host's job subnet via its LAN address in the other
    /// hosts ([`NetnsLan::route_host_gw`]), so that routers reach jobs on every host.
    pub fn route_host_gw(&self) {
        let subnets: Vec<String> = (0..self.lan.hosts.len()).map(|i| self.subnet(i)).collect();
        let refs: Vec<&str> = subnets.iter().map(String::as_str).collect();
        self.lan.route_host_gw(&refs).unwrap();
    }

    /// Host `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.lan.hosts[i].dir.join("data")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.lan.hosts[i].dir.join("server.log")
    }

    /// Host `i`'s server log (every start appends to it).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The controller API of host `i` (where [`LanCluster::start_controller`] makes it listen).
    pub fn api_url(&self, i: usize) -> String {
        format!("http://{}:{API_PORT}", self.lan.hosts[i].ip)
    }

    /// Host `i`'s host agent API (cluster token: [`LanCluster::cluster_token`]).
    pub fn host_api_url(&self, i: usize) -> String {
        format!("http://{}:{HOST_API_PORT}", self.lan.hosts[i].ip)
    }

    /// The cluster token, from the data dir of the controller on host `controller`.
    pub fn cluster_token(&self, controller: usize) -> String {
        std::fs::read_to_string(self.data_dir(controller).join("cluster-token"))
            .expect("the controller's cluster-token file")
            .trim()
            .to_string()
    }

    /// Host `i`'s host id (once its agent has started).
    pub fn host_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.data_dir(i).join("host/host-id"))
            .expect("the host's host-id file")
            .trim()
            .to_string()
    }

    /// Host `i`'s router, HTTP.
    pub fn router_addr(&self, i: usize) -> String {
        format!("{}:80", self.lan.hosts[i].ip)
    }

    /// The flags every server of the cluster gets: its data dir, etcd, host network names,
    /// subnet, cgroup parent and host API on its LAN address.
    pub fn base_flags(&self, i: usize) -> Vec<String> {
        let h = &self.lan.hosts[i];
        [
            "--data-dir",
            &self.data_dir(i).display().to_string(),
            "--domain",
            DOMAIN,
            "--no-register",
            "--etcd",
            &self.etcd.client_urls(),
            "--host-listen",
            &format!("{}:{HOST_API_PORT}", h.ip),
            // Where the zero-downtime gate of another host asks this router.
            "--router-admin",
            &format!("{}:{ROUTER_ADMIN_PORT}", h.ip),
            "--bridge",
            &h.bridge,
            "--subnet",
            &self.subnet(i),
            "--cgroup-parent",
            &h.cgroup_parent,
            "--api-key-file",
            &self.key_file.display().to_string(),
            "--stacks-dir",
            &std::env::temp_dir()
                .join("slipway-test-stacks")
                .display()
                .to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts host `i`'s server with every role, the cluster's database and its API on
    /// `IP:7070`, plus `extra` flags; waits until it answers `/ping`.
    pub fn start_controller(&mut self, i: usize, extra: &[&str]) {
        let mut args = self.base_flags(i);
        args.extend(
            [
                "--database-url",
                &self.db_url,
                "--listen",
                &format!("{}:{API_PORT}", self.lan.hosts[i].ip),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_args(i, args);
        let url = self.api_url(i);
        self.wait(i, "its API to answer", Duration::from_secs(60), || {
            ping(&url)
        });
    }

    /// Starts host `i`'s server with `roles` (no controller), following the controller API of
    /// host `controller` (its cluster token file), plus `extra` flags.
    pub fn start_host(&mut self, i: usize, roles: &str, controller: usize, extra: &[&str]) {
        let token = self.data_dir(controller).join("cluster-token");
        self.wait(
            controller,
            "the cluster token",
            Duration::from_secs(30),
            || token.exists(),
        );
        let mut args = self.base_flags(i);
        args.extend(
            [
                "--roles",
                roles,
                "--controller-url",
                &self.api_url(controller),
                "--cluster-token-file",
                &token.display().to_string(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_args(i, args);
    }

    /// Starts `slipway server ARGS` in host `i` (its log in [`LanCluster::log_path`]), for a
    /// test that needs other flags than [`LanCluster::start_controller`] and
    /// [`LanCluster::start_host`] give: start from [`LanCluster::base_flags`] and change them
    /// (a flag given twice is refused by the server). Does not wait.
    pub fn start_args(&mut self, i: usize, args: Vec<String>) {
        assert!(self.servers[i].is_none(), "host {i} runs a server already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut cmd = self.lan.command(i, BIN);
        cmd.arg("server")
            .args(&args)
            .env("HOME", &self.lan.hosts[i].dir)
            .env_remove("SLIPWAY_URL")
            .env_remove("SLIPWAY_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let pid = self.lan.spawn(&mut cmd).expect("spawn slipway server");
        self.servers[i] = Some(Server { pid, args });
    }

    /// SIGKILLs host `i`'s server (as a crash: its jobs' containers keep running).
    pub fn kill(&mut self, i: usize) {
        if let Some(s) = self.servers[i].as_mut() {
            self.lan.kill(s.pid);
            s.pid = 0;
        }
    }

    /// Starts host `i`'s killed server again with the same flags.
    pub fn restart(&mut self, i: usize) {
        let s = self.servers[i].take().expect("a server started before");
        if s.pid != 0 {
            self.lan.kill(s.pid);
        }
        self.start_args(i, s.args);
    }

    /// Whether host `i`'s server process is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i]
            .as_ref()
            .is_some_and(|s| s.pid != 0 && self.lan.is_running(s.pid))
    }

    /// Waits for `ok`, failing with host `i`'s log (and whether its server still runs).
    pub fn wait(
        &self,
        i: usize,
        what: &str,
        limit: Duration,
        mut ok: impl FnMut() -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        while !ok() {
            assert!(
                t0.elapsed() < limit,
                "timed out ({limit:?}) waiting for {what} on host {i} (server running: {}); its log:\n{}",
                self.is_running(i),
                tail(&self.log(i), 6000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t0.elapsed()
    }

    /// `slipway` (the CLI, in the root netns) against host `controller`'s API.
    pub fn cli(&self, controller: usize) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(BIN);
        cmd.current_dir(self.lan.dir())
            .env("SLIPWAY_URL", self.api_url(controller))
            .env("SLIPWAY_KEY", &self.key)
            .env("SLIPWAY_CONFIG", self.lan.dir().join("cli-config.toml"))
            .env("HOME", self.lan.dir())
            .timeout(Duration::from_secs(60))
            .write_stdin("");
        cmd
    }

    /// Runs the CLI against host `controller`; it must succeed. Returns stdout.
    pub fn ok(&self, controller: usize, args: &[&str]) -> String {
        crate::support::ok(self.cli(controller).args(args))
    }

    pub fn client(&self, controller: usize) -> slipway_client::Client {
        slipway_client::Client::new(&self.api_url(controller), &self.key).unwrap()
    }

    /// Gives `app` a release (through controller 0) whose `web` jobs run the shell `setup`
    /// (which fills `/tmp/www`), then serve `/tmp/www` with busybox httpd on 8080, ending at
    /// once on SIGTERM. Returns the release's id.
    pub fn release_httpd(&self, app: &str, setup: &str) -> slipway_types::Id {
        let client = self.client(0);
        let app = app.to_string();
        let script = format!("{setup}; trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait");
        crate::support::block_on(async move {
            let mut r = slipway_types::NewRelease::default();
            r.processes.insert(
                "web".into(),
                slipway_types::ProcessType {
                    args: vec!["sh".into(), "-c".into(), script],
                    ..Default::default()
                },
            );
            let r = client.create_release(&app, &r).await.unwrap();
            client.set_app_release(&app, r.id).await.unwrap();
            r.id
        })
    }

    /// The overlay routes host `i` has (ours: `proto 83`), of `backend`'s form.
    pub fn overlay_routes(&self, i: usize, backend: &str) -> usize {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                &self.lan.hosts[i].netns,
                "route",
                "show",
                "proto",
                "83",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| match backend {
                "vxlan" => l.contains("dev vx-") && l.contains("onlink"),
                _ => l.contains("via 100.127."),
            })
            .count()
    }

    /// Tears the LAN down (every server, job and network of it) and returns what is left:
    /// a test asserts that it is empty.
    pub fn finish(mut self) -> Vec<String> {
        self.lan.shut_down()
    }
}

impl Drop for LanCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.servers.len() {
                if self.servers[i].is_some() {
                    eprintln!("--- host {i}'s server log:\n{}", tail(&self.log(i), 8000));
                }
            }
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `GET /ping` answered with 200.
pub fn ping(url: &str) -> bool {
    get(url.trim_start_matches("http://"), "/ping", "x").starts_with("HTTP/1.1 200")
}

/// `GET path` with `Host: host` at `addr` over a plain socket: the raw response, or why not.
pub fn get(addr: &str, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return format!("bad address {addr}");
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return "write failed".into();
    }
    let mut out = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
