//! Real etcd for tests: [`EtcdCluster::start`] runs 1 or 3 members of the installed `etcd`
//! (Debian `etcd-server`) on free loopback ports, each with its own data dir, and kills them
//! on drop. [`etcd_cluster`] is the helper tests call: it skips (through [`crate::skip`]) when
//! etcd is not installed, which fails under CI instead. [`etcd_cluster_on`] / [`EtcdCluster::start_on`]
//! listen on another address than loopback, e.g. the bridge of a [`crate::netns::NetnsLan`], which
//! every host of that LAN reaches; [`EtcdCluster::start_in`] runs each member where a given
//! command runs it, e.g. member i in host i of a LAN, on that host's address.
//!
//! Data dirs live in `/dev/shm` when it exists: etcd fsyncs every write, and a test asserting
//! "an expired instance is reported within 10 % of its TTL" must not wait on a busy disk. Dirs
//! and processes left by a killed test run (named after the test process's pid) are removed
//! by the next start.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "slipway-etcd-";

/// The `etcd` binary, if installed.
pub fn etcd_bin() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// A cluster of `n` members for the running test, or `None` after recording the skip
/// (etcd not installed; under CI this panics instead). Panics if etcd is installed but does
/// not start: that is a failure, not a skip.
pub fn etcd_cluster(n: usize) -> Option<EtcdCluster> {
    etcd_cluster_on(n, Ipv4Addr::LOCALHOST)
}

/// [`etcd_cluster`] with every member listening (client and peer ports) on `ip`.
pub fn etcd_cluster_on(n: usize, ip: Ipv4Addr) -> Option<EtcdCluster> {
    if etcd_bin().is_none()
        && crate::skip(
            &crate::current_test(),
            "etcd (apt-get install etcd-server; scripts/install-deps installs it)",
        )
    {
        return None;
    }
    Some(EtcdCluster::start_on(n, ip).unwrap_or_else(|e| panic!("start etcd for the test: {e}")))
}

struct Member {
    name: String,
    /// The address it listens on.
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// Makes the command that runs member `i` with the etcd binary (what [`EtcdCluster::start_in`]
/// is given).
pub type MemberCommand = Box<dyn Fn(usize, &Path) -> Command + Send + Sync>;

/// etcd members this process started; killed (and their files removed) on drop.
pub struct EtcdCluster {
    bin: PathBuf,
    command: MemberCommand,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    root: PathBuf,
}

fn free_port(ip: Ipv4Addr) -> Result<u16, String> {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind a free port on {ip}: {e}"))
}

fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes dirs (and kills etcd processes) left by test processes that no longer run.
fn clean_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        // An etcd whose command line names this dir belongs to the dead run: kill it first.
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(epid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                    let _ = Command::new("kill")
                        .args(["-9", &epid.to_string()])
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl EtcdCluster {
    /// Starts `n` members (1 or 3 make sense) and waits until the cluster has a leader.
    pub fn start(n: usize) -> Result<EtcdCluster, String> {
        EtcdCluster::start_on(n, Ipv4Addr::LOCALHOST)
    }

    /// [`EtcdCluster::start`] with every member listening on `ip` (an address of this machine).
    pub fn start_on(n: usize, ip: Ipv4Addr) -> Result<EtcdCluster, String> {
        assert!(n >= 1, "an etcd cluster has at least one member");
        // Another test may take a port between our probe and etcd's bind: try again.
        let mut last = String::new();
        for _ in 0..3 {
            let ports = (0..n)
                .map(|_| Ok((ip, free_port(ip)?, free_port(ip)?)))
                .collect::<Result<Vec<_>, String>>()?;
            match EtcdCluster::try_start(ports, Box::new(|_, bin| Command::new(bin))) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One member per address of `ips`, on etcd's usual ports (2379 for clients, 2380 for
    /// peers), each run by `command(i, etcd_binary)` — e.g. a [`crate::netns`] host's command,
    /// so that member i lives in host i (its own address there: fixed ports are free). Waits
    /// until every member is healthy.
    pub fn start_in(ips: &[Ipv4Addr], command: MemberCommand) -> Result<EtcdCluster, String> {
        assert!(!ips.is_empty(), "an etcd cluster has at least one member");
        EtcdCluster::try_start(ips.iter().map(|ip| (*ip, 2379, 2380)).collect(), command)
    }

    /// Members listening on `(ip, client port, peer port)` each.
    fn try_start(
        addrs: Vec<(Ipv4Addr, u16, u16)>,
        command: MemberCommand,
    ) -> Result<EtcdCluster, String> {
        let bin = etcd_bin().ok_or("etcd is not installed (apt-get install etcd-server)")?;
        let base = base_dir();
        clean_stale(&base);
        let n = addrs.len();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let root = base.join(format!("{PREFIX}{unique}"));
        // Ours by name: one left here was made by a dead process that had our pid.
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let members: Vec<Member> = addrs
            .into_iter()
            .enumerate()
            .map(|(i, (ip, client_port, peer_port))| Member {
                name: format!("m{i}"),
                ip,
                client_port,
                peer_port,
                data: root.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.ip, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            bin,
            command,
            members,
            initial_cluster,
            token: format!("slipway-{unique}"),
            root,
        };
        for i in 0..n {
            c.spawn(i, "new")?;
        }
        for i in 0..n {
            c.wait_healthy(i, Duration::from_secs(20))?;
        }
        Ok(c)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let m = &self.members[i];
        let client = format!("http://{}:{}", m.ip, m.client_port);
        let peer = format!("http://{}:{}", m.ip, m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{}.log", m.name)))
            .map_err(|e| format!("open the etcd log: {e}"))?;
        let child = (self.command)(i, &self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("run {}: {e}", self.bin.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until member `i` answers `/health` with `true` (it has a leader).
    fn wait_healthy(&mut self, i: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let (ip, port) = (self.members[i].ip, self.members[i].client_port);
        loop {
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "etcd member {i} exited ({status}) before it was ready: {}",
                    self.log_tail(i)
                ));
            }
            if health(ip, port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd member {i} not healthy within {limit:?}: {}",
                    self.log_tail(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.root.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log.get(start..).unwrap_or_default().to_string()
    }

    /// Every member's client URL, comma-separated (what `--etcd` takes).
    pub fn client_urls(&self) -> String {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_url(&self, i: usize) -> String {
        format!(
            "http://{}:{}",
            self.members[i].ip, self.members[i].client_port
        )
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kills member `i` (SIGKILL: as a crash). Its data dir stays for [`Self::start_member`].
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir (it rejoins) and waits until it is healthy.
    pub fn start_member(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i, "existing")?;
        self.wait_healthy(i, Duration::from_secs(20))
    }
}

/// `GET /health` with a plain HTTP/1.0 request (the harness stays synchronous).
fn health(ip: Ipv4Addr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.starts_with("HTTP/1.") && text.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
