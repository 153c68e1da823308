//! A LAN of real hosts on one machine, for cluster tests: [`NetnsLan::new`]`(n, hosts)` makes
//! `hosts` network namespaces joined by a bridge in the root namespace that plays the LAN.
//!
//! ```text
//!   root netns:  bridge slan<n>br  100.127.X.1/24   (etcd listens here; the test talks to
//!                 │        │        │                 the hosts through it)
//!            slan<n>v0  slan<n>v1  slan<n>v2        (root ends of the veths)
//!                 │        │        │
//!   netns slipway-lan<n>-h0  -h1   -h2              lan0 = 100.127.X.2, .3, .4 (host i = .i+2),
//!                                                    lo up, default route via 100.127.X.1
//! ```
//!
//! X is `n % 256`: two LANs alive at once need numbers that differ modulo 256. Everything is
//! named after `n`, so a test's resources are found again: by its [`Drop`] (also when the test
//! panics), by the next [`NetnsLan::new`] with the same `n` or by any [`NetnsLan::new`] once the
//! process that made the LAN is gone (what a crashed or killed run left is removed first), and
//! by [`NetnsLan::finish`] / [`leftovers`], which a test calls at its end to assert that nothing
//! is left.
//!
//! What is per host, and why it is named uniquely although the host has its own netns:
//! - the network (links, routes, nft tables, ports): isolated by the netns, so a host's
//!   programs may use fixed ports (a router on 80, an API on 7070) and default nft names;
//! - the mount namespace is shared (the hosts' data dirs, `/run/netns`, cgroups and PostgreSQL's
//!   Unix socket are the machine's). So each host gets its own dir ([`LanHost::dir`]), cgroup
//!   parent ([`LanHost::cgroup_parent`]) and a job bridge name ([`LanHost::bridge`]) that is
//!   unique on the machine: a host agent names its jobs' netns in `/run/netns` after its bridge
//!   (`slw-<bridge>-<hash>`) and sweeps every such name it does not know, so two agents with
//!   the same bridge name would remove each other's jobs' netns.
//! - `/sys/class/net` is the root namespace's view (sysfs is not remounted, which would need a
//!   mount namespace and hide the cgroup v1 mounts below `/sys/fs/cgroup`): an agent's checks
//!   there find none of its veths. Those go with the host's netns at teardown.
//!
//! Processes are started in a host with [`NetnsLan::command`] (a `Command` whose child joins
//! the netns with `setns` before `exec`) and [`NetnsLan::spawn`], which keeps them to kill at
//! teardown. Teardown also kills every process still in a host's netns (a host agent's shims),
//! every process in the hosts' cgroup parents (its containers), unmounts what is mounted below
//! the LAN's dir, removes job netns named after the hosts' bridges, the namespaces, veths,
//! bridge, root nft tables named `slan<n>…`, cgroups and the dir.
//!
//! [`NetnsLan::cut_link`] / [`NetnsLan::restore_link`] take the root end of a host's veth down
//! and up: a pulled cable. The host keeps its address and routes; its packets go nowhere.
//!
//! [`NetnsLan::route_host_gw`] is a harness shortcut, not the product: it routes each host's
//! job subnet via that host's LAN address in every other host, so that jobs are reachable
//! across hosts before (or without) an overlay network.
//!
//! PostgreSQL: the test run's server listens on 127.0.0.1, which a host's netns does not
//! reach. A [`TcpForwarder`] on the gateway does, and a pulled cable cuts it off; its Unix
//! socket does too, whatever happens to the LAN ([`unix_socket_url`]). See `db.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod db;
pub use db::{TcpForwarder, unix_socket_url, url_addr, url_with_addr};

/// One host of a [`NetnsLan`].
#[derive(Clone, Debug)]
pub struct LanHost {
    pub index: usize,
    /// Its name in `/run/netns` (`ip -n NAME …`).
    pub netns: String,
    /// Its address on the LAN (on its `lan0`).
    pub ip: Ipv4Addr,
    /// The root end of its veth (what [`NetnsLan::cut_link`] takes down).
    pub veth: String,
    /// A bridge name for its host agent's jobs, unique on the machine (`slan<n>h<i>`).
    pub bridge: String,
    /// A cgroup parent for its jobs, unique on the machine (`slipway-lan<n>-h<i>`).
    pub cgroup_parent: String,
    /// Its own directory (data dir, logs), below the LAN's.
    pub dir: PathBuf,
}

/// The LAN and its hosts; torn down on drop (see the module doc).
pub struct NetnsLan {
    pub n: u32,
    /// The bridge's address: the LAN's gateway, where etcd listens.
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub hosts: Vec<LanHost>,
    dir: PathBuf,
    children: Mutex<HashMap<u32, Child>>,
    torn_down: bool,
}

/// The file in a LAN's dir that names the pid of the process that made it.
const OWNER: &str = "owner";

/// Removes every LAN whose owner (the test process that made it) is gone: one killed before
/// its teardown (a test binary killed on a timeout), whatever its `n`.
fn remove_orphans() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("slipway-lan")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(owner) = std::fs::read_to_string(e.path().join(OWNER)) else {
            continue;
        };
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            remove_everything(n);
        }
    }
}

/// The LAN's dir: fixed by `n`, so that a crashed run's is found again.
fn lan_dir(n: u32) -> PathBuf {
    std::env::temp_dir().join(format!("slipway-lan{n}"))
}

/// [`lan_dir`] with a trailing `/`: what names something inside it (and not LAN 4000's dir
/// for LAN 400).
fn inside_lan_dir(n: u32) -> PathBuf {
    lan_dir(n).join("")
}

/// The prefix of every link, bridge and nft table name of LAN `n` in the root netns.
fn link_prefix(n: u32) -> String {
    format!("slan{n}")
}

/// Whether a root-netns name (link, nft table) is LAN `n`'s: `slan<n>` and a letter (so that
/// LAN 400 does not take LAN 4000's).
fn is_ours(n: u32, name: &str) -> bool {
    name.strip_prefix(&link_prefix(n))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

fn netns_name(n: u32, i: usize) -> String {
    format!("slipway-lan{n}-h{i}")
}

fn cgroup_prefix(n: u32) -> String {
    format!("slipway-lan{n}-")
}

/// `ip -b -` (or `ip -n NS -b -`) with `script` on stdin.
fn ip_batch(netns: Option<&str>, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run ip: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|e| format!("write to ip: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -b ({script:?}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NetnsLan {
    /// A LAN of `hosts` hosts for the test numbered `n` (needs root and `ip`). What an earlier
    /// run with the same `n` left is removed first.
    pub fn new(n: u32, hosts: usize) -> Result<NetnsLan, String> {
        assert!(
            (1..=200).contains(&hosts),
            "a LAN has 1 to 200 hosts, not {hosts}"
        );
        remove_everything(n);
        remove_orphans();
        let x = (n % 256) as u8;
        let prefix = link_prefix(n);
        let dir = lan_dir(n);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        std::fs::write(dir.join(OWNER), std::process::id().to_string())
            .map_err(|e| format!("write {}: {e}", dir.join(OWNER).display()))?;
        let lan = NetnsLan {
            n,
            gateway: Ipv4Addr::new(100, 127, x, 1),
            bridge: format!("{prefix}br"),
            hosts: (0..hosts)
                .map(|i| LanHost {
                    index: i,
                    netns: netns_name(n, i),
                    ip: Ipv4Addr::new(100, 127, x, i as u8 + 2),
                    veth: format!("{prefix}v{i}"),
                    bridge: format!("{prefix}h{i}"),
                    cgroup_parent: format!("{}h{i}", cgroup_prefix(n)),
                    dir: dir.join(format!("h{i}")),
                })
                .collect(),
            dir,
            children: Mutex::new(HashMap::new()),
            torn_down: false,
        };
        // From here on, a failure tears down what was made (Drop).
        let mut root = format!(
            "link add {br} type bridge\naddr add {gw}/24 dev {br}\nlink set {br} up\n",
            br = lan.bridge,
            gw = lan.gateway
        );
        for h in &lan.hosts {
            std::fs::create_dir_all(&h.dir).map_err(|e| e.to_string())?;
            root.push_str(&format!(
                "netns add {ns}\nlink add {v} type veth peer name lan0 netns {ns}\n\
                 link set {v} master {br} up\n",
                ns = h.netns,
                v = h.veth,
                br = lan.bridge
            ));
        }
        ip_batch(None, &root)?;
        for h in &lan.hosts {
            ip_batch(
                Some(&h.netns),
                &format!(
                    "link set lo up\naddr add {ip}/24 dev lan0\nlink set lan0 up\n\
                     route add default via {gw}\n",
                    ip = h.ip,
                    gw = lan.gateway
                ),
            )?;
        }
        // The bridge forwards at once (no STP), but a port is up only once the veth is.
        let deadline = Instant::now() + Duration::from_secs(10);
        for h in &lan.hosts {
            while !lan.ping_from(h.index, lan.gateway) {
                if Instant::now() > deadline {
                    return Err(format!("host {} cannot reach the LAN's gateway", h.index));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(lan)
    }

    /// Whether host `i` reaches `ip` within a second: a TCP connection to its port 1 is
    /// accepted or refused (an answer, so the path is there) rather than timing out or
    /// unreachable.
    pub fn ping_from(&self, i: usize, ip: Ipv4Addr) -> bool {
        self.in_netns(i, move || {
            match std::net::TcpStream::connect_timeout(&(ip, 1).into(), Duration::from_secs(1)) {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
            }
        })
    }

    /// Runs `f` on a thread that has joined host `i`'s network namespace (setns affects only
    /// the calling thread): sockets it opens are the host's, and stay so when handed back.
    pub fn in_netns<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = Path::new("/run/netns").join(&self.hosts[i].netns);
        let ns = File::open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e} (torn down?)", path.display()));
        std::thread::spawn(move || {
            // SAFETY: setns(2) on this thread only, with a valid netns file descriptor.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// The LAN's own dir (the hosts' dirs are below it); removed at teardown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command whose process runs in host `i`'s network namespace (the child joins it with
    /// `setns` before `exec`). Run it with [`Command::status`]/[`Command::output`] for short
    /// programs, or with [`NetnsLan::spawn`] for those that must be killed at teardown.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.hosts[i].netns, program)
    }

    /// The etcd members' command for [`crate::etcd::EtcdCluster::start_in`]: member i runs in
    /// host i (so `ips` = the first hosts' addresses).
    pub fn etcd_in_hosts(&self) -> crate::etcd::MemberCommand {
        let names: Vec<String> = self.hosts.iter().map(|h| h.netns.clone()).collect();
        Box::new(move |i, bin| command_in(&names[i], bin))
    }

    /// Spawns `cmd` (from [`NetnsLan::command`]) in a process group of its own; the LAN kills
    /// it (and its group) at teardown unless [`NetnsLan::kill`] did first. Returns its pid.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<u32> {
        let child = cmd.process_group(0).spawn()?;
        let pid = child.id();
        self.children.lock().unwrap().insert(pid, child);
        Ok(pid)
    }

    /// SIGKILLs process `pid` (spawned by [`NetnsLan::spawn`]) and its process group, and
    /// reaps it.
    pub fn kill(&self, pid: u32) {
        let child = self.children.lock().unwrap().remove(&pid);
        if let Some(mut c) = child {
            // SAFETY: plain kill(2) of the group this child leads.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether process `pid` (spawned by [`NetnsLan::spawn`]) is still running.
    pub fn is_running(&self, pid: u32) -> bool {
        self.children
            .lock()
            .unwrap()
            .get_mut(&pid)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Pulls host `i`'s cable: the root end of its veth goes down. Its address and routes stay;
    /// nothing it sends arrives, nothing reaches it.
    pub fn cut_link(&self, i: usize) {
        let ok = quiet(Command::new("ip").args(["link", "set", &self.hosts[i].veth, "down"]));
        assert!(ok, "cut host {i}'s link");
    }

    /// Plugs host `i`'s cable back in (see [`NetnsLan::cut_link`]) and waits (up to 10 s)
    /// until it reaches the gateway. Neighbour entries that failed while the cable was out are
    /// flushed everywhere on the LAN first: until they expire the kernel would answer "no route
    /// to host" at once instead of asking again.
    pub fn restore_link(&self, i: usize) {
        let ok = quiet(Command::new("ip").args(["link", "set", &self.hosts[i].veth, "up"]));
        assert!(ok, "restore host {i}'s link");
        let _ = quiet(Command::new("ip").args(["neigh", "flush", "dev", &self.bridge]));
        for h in &self.hosts {
            let _ =
                quiet(Command::new("ip").args(["-n", &h.netns, "neigh", "flush", "dev", "lan0"]));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping_from(i, self.gateway) {
            assert!(
                Instant::now() < deadline,
                "host {i} does not reach the gateway 10 s after its link was restored"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Harness shortcut (not the product's networking): in every host, a route to each other
    /// host's job subnet via that host's LAN address (`subnets[i]` is host i's, e.g.
    /// `100.100.1.0/24`), as a "host-gw" network would. Lets a router reach jobs on every host
    /// before the overlay network exists.
    pub fn route_host_gw(&self, subnets: &[&str]) -> Result<(), String> {
        assert_eq!(subnets.len(), self.hosts.len(), "one subnet per host");
        for h in &self.hosts {
            let mut script = String::new();
            for (j, other) in self.hosts.iter().enumerate() {
                if j != h.index {
                    script.push_str(&format!("route replace {} via {}\n", subnets[j], other.ip));
                }
            }
            if !script.is_empty() {
                ip_batch(Some(&h.netns), &script)?;
            }
        }
        Ok(())
    }

    /// Tears everything down and returns what is left of it (empty when all is gone): what a
    /// test asserts at its end.
    pub fn finish(mut self) -> Vec<String> {
        self.shut_down()
    }

    /// [`NetnsLan::finish`] for an owner that cannot give the LAN away (it has a `Drop`).
    /// The LAN is gone afterwards: only dropping it is left.
    pub fn shut_down(&mut self) -> Vec<String> {
        self.teardown();
        leftovers(self.n)
    }

    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let children: Vec<u32> = self.children.lock().unwrap().keys().copied().collect();
        for pid in children {
            self.kill(pid);
        }
        remove_everything(self.n);
    }
}

impl Drop for NetnsLan {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A command whose process runs in the network namespace named `netns` in `/run/netns` (the
/// child joins it with `setns` before `exec`).
pub fn command_in(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let path = Path::new("/run/netns").join(netns);
    let ns =
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e} (torn down?)", path.display()));
    let mut cmd = Command::new(program);
    // SAFETY: only setns(2) runs between fork and exec, an async-signal-safe system call; the
    // file (opened close-on-exec) is kept alive by the closure, owned by the Command.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The netns inode of every host namespace of LAN `n` still named in `/run/netns`.
fn host_netns(n: u32) -> Vec<(PathBuf, u64)> {
    let prefix = format!("slipway-lan{n}-h");
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let ino = std::fs::metadata(e.path()).ok()?.ino();
            Some((e.path(), ino))
        })
        .collect()
}

/// Pids of processes whose netns is one of `inodes` or whose command line names `dir`.
fn processes_of(inodes: &[u64], dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let dir = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let in_ns =
            std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        let names_dir = std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir));
        if in_ns || names_dir {
            pids.push(pid);
        }
    }
    pids
}

/// The cgroup dirs of LAN `n` (its hosts' cgroup parents) in every hierarchy.
fn cgroups_of(n: u32) -> Vec<PathBuf> {
    let prefix = cgroup_prefix(n);
    crate::runc::cgroup_controllers()
        .into_iter()
        .flat_map(|c| std::fs::read_dir(c).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Every dir below `dir` (itself included), the deepest first.
fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Job netns files named after LAN `n`'s hosts' bridges (`slw-slan<n>h<i>-…`).
fn job_netns(n: u32) -> Vec<PathBuf> {
    let prefix = format!("slw-{}h", link_prefix(n));
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn root_links(n: u32) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| is_ours(n, name))
        .collect()
}

/// Root-namespace nft tables of LAN `n`: `FAMILY NAME`.
fn root_nft_tables(n: u32) -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.strip_prefix("table "))
        .filter(|t| t.split(' ').nth(1).is_some_and(|name| is_ours(n, name)))
        .map(String::from)
        .collect()
}

/// Loop devices (`/dev/loopN`) whose backing file is below LAN `n`'s dir (job disk images).
fn loop_devices_of(n: u32) -> Vec<String> {
    let inside = inside_lan_dir(n).to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|f| f.starts_with(&inside))
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect()
}

fn unmount_netns_file(p: &Path) {
    if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid C string; umount2 does not keep the pointer.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(p);
}

/// Removes everything of LAN `n` (best effort; [`leftovers`] says what stayed).
fn remove_everything(n: u32) {
    let dir = lan_dir(n);
    let inodes: Vec<u64> = host_netns(n).into_iter().map(|(_, ino)| ino).collect();
    // Processes first (they would recreate what is removed), then what they held. A host
    // agent's containers are in its cgroup parent, not in the host's netns.
    for _ in 0..20 {
        let mut pids = processes_of(&inodes, &inside_lan_dir(n));
        for cg in cgroups_of(n) {
            for d in dirs_deepest_first(&cg) {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.retain(|p| *p > 1 && *p != std::process::id() as i32);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mounts = crate::runc::mounts_under(&inside_lan_dir(n));
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(m).output();
    }
    // A loop device lets go of its file on the last close after the unmount (autoclear); one
    // not set so, or still held, is detached.
    for dev in loop_devices_of(n) {
        let _ = quiet(Command::new("losetup").arg("-d").arg(&dev));
    }
    for p in job_netns(n) {
        unmount_netns_file(&p);
    }
    for (p, _) in host_netns(n) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !quiet(Command::new("ip").args(["netns", "del", &name])) {
            unmount_netns_file(&p);
        }
    }
    for link in root_links(n) {
        let _ = quiet(Command::new("ip").args(["link", "del", &link]));
    }
    for table in root_nft_tables(n) {
        let mut args = vec!["delete", "table"];
        args.extend(table.split(' '));
        let _ = quiet(Command::new("nft").args(args));
    }
    for cg in cgroups_of(n) {
        for d in dirs_deepest_first(&cg) {
            let _ = std::fs::remove_dir(d);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What is left of LAN `n` on the machine, one line each: namespaces (hosts' and their
/// jobs'), links and nft tables in the root netns named `slan<n>…`, cgroups, mounts below the
/// LAN's dir and loop devices of files there, the dir itself, and processes in its namespaces
/// or naming its dir.
pub fn leftovers(n: u32) -> Vec<String> {
    let dir = lan_dir(n);
    let hosts = host_netns(n);
    let inodes: Vec<u64> = hosts.iter().map(|(_, ino)| *ino).collect();
    let mut left = Vec::new();
    left.extend(hosts.iter().map(|(p, _)| format!("netns {}", p.display())));
    left.extend(
        job_netns(n)
            .iter()
            .map(|p| format!("job netns {}", p.display())),
    );
    left.extend(root_links(n).into_iter().map(|l| format!("link {l}")));
    left.extend(
        root_nft_tables(n)
            .into_iter()
            .map(|t| format!("nft table {t}")),
    );
    left.extend(
        cgroups_of(n)
            .iter()
            .map(|p| format!("cgroup {}", p.display())),
    );
    left.extend(
        crate::runc::mounts_under(&inside_lan_dir(n))
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    left.extend(
        loop_devices_of(n)
            .into_iter()
            .map(|d| format!("loop device {d}")),
    );
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    left.extend(
        processes_of(&inodes, &inside_lan_dir(n))
            .into_iter()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!(
                    "process {p}: {}",
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                )
            }),
    );
    left
}
