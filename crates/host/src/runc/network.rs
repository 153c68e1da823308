//! Job networking: a bridge, one veth + IP per job in the job's own netns, outbound NAT.
//!
//! Done with `ip`/`nft` subprocesses: they are on every host, the agent needs them only at setup
//! and per job start (two short commands, run by the shim between `runc create` and `runc
//! start`), and the netns belongs to the container, so it — and the veth pair — disappear with it.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Host-wide network settings. Everything is unique per agent so parallel agents (tests) coexist.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Bridge name (≤ 15 characters).
    pub bridge: String,
    /// Job subnet; the bridge gets the first address, jobs the rest.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// nftables table (family `ip`) holding the masquerade rule.
    pub nft_table: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "slipway0".into(),
            subnet: Ipv4Addr::new(100, 100, 0, 0),
            prefix: 16,
            nft_table: "slipway".into(),
        }
    }
}

impl NetworkConfig {
    /// Parses `100.100.0.0/16`.
    pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8)> {
        let (ip, p) = s
            .split_once('/')
            .with_context(|| format!("subnet {s:?} must look like 100.100.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("bad subnet address {ip:?}"))?;
        let p: u8 = p
            .parse()
            .with_context(|| format!("bad prefix length {p:?}"))?;
        if !(8..=30).contains(&p) {
            bail!("subnet prefix /{p} must be between /8 and /30");
        }
        let mask = u32::MAX << (32 - p);
        Ok((Ipv4Addr::from(u32::from(ip) & mask), p))
    }
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix)
    }
    fn first_host(&self) -> u32 {
        u32::from(self.subnet) + 2
    }
    fn last_host(&self) -> u32 {
        (u32::from(self.subnet) | !self.mask()) - 1
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.subnet)
    }
}

/// Docker's rule: `02:42` + the four IP bytes. A reused IP then keeps its MAC, so neighbours'
/// stale ARP entries stay right (random MACs made time-to-HTTP 8–15 s here).
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// FNV-1a: names derived from ids, stable across versions (never `DefaultHasher`).
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

/// The job's part of its interface names: 10 hex digits of its id's hash.
fn job_hash(job_id: &str) -> String {
    format!("{:010x}", fnv(job_id) & 0xff_ffff_ffff)
}

/// The agent's part of its veths' names: 4 hex digits of its bridge's name, so that an agent's
/// start-up sweep ([`super::sweep`]) tells its own veths from another agent's on the same host.
pub fn veth_prefix(cfg: &NetworkConfig) -> String {
    format!("v{:04x}", fnv(&cfg.bridge) & 0xffff)
}

/// Host-side veth name for a job (15 characters, Linux's limit): [`veth_prefix`] (its agent)
/// and the job id's hash.
pub fn veth_name(cfg: &NetworkConfig, job_id: &str) -> String {
    format!("{}{}", veth_prefix(cfg), job_hash(job_id))
}

/// The veth name of jobs started before names carried their agent (`vsw` + the job's hash):
/// re-adopted jobs of an upgraded agent still have it.
pub fn legacy_veth_name(job_id: &str) -> String {
    format!("vsw{}", job_hash(job_id))
}

/// Next-fit allocator: freed addresses are reused last, which keeps ARP caches calm — and,
/// with its cursor kept on disk ([`IpAllocator::persistent`]), across agent restarts too: a
/// router holds a dead job's address as a backend for a while after a restart (20 s), so a new
/// job of another app given that address at once would get the first app's requests.
#[derive(Debug)]
pub struct IpAllocator {
    used: BTreeSet<u32>,
    next: u32,
    first: u32,
    last: u32,
    /// Where `next` is kept (one address, as text), if anywhere.
    cursor_file: Option<std::path::PathBuf>,
}

impl IpAllocator {
    pub fn new(cfg: &NetworkConfig) -> Self {
        IpAllocator {
            used: BTreeSet::new(),
            next: cfg.first_host(),
            first: cfg.first_host(),
            last: cfg.last_host(),
            cursor_file: None,
        }
    }

    /// An allocator that goes on where the last one with the same `cursor_file` stopped (an
    /// unreadable or out-of-range cursor starts at the subnet's first address).
    pub fn persistent(cfg: &NetworkConfig, cursor_file: std::path::PathBuf) -> Self {
        let mut a = IpAllocator::new(cfg);
        let saved = std::fs::read_to_string(&cursor_file)
            .ok()
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|n| (a.first..=a.last).contains(n));
        if let Some(n) = saved {
            a.next = n;
        }
        a.cursor_file = Some(cursor_file);
        a
    }

    fn save_cursor(&self) {
        let Some(path) = &self.cursor_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let text = format!("{}\n", Ipv4Addr::from(self.next));
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(
                "cannot keep the IP allocator's cursor in {}: {e}",
                path.display()
            );
        }
    }
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        self.used.insert(ip.into());
    }
    pub fn allocate(&mut self) -> Result<Ipv4Addr> {
        let span = self.last - self.first + 1;
        for i in 0..span {
            let c = self.first + (self.next - self.first + i) % span;
            if self.used.insert(c) {
                self.next = if c == self.last { self.first } else { c + 1 };
                self.save_cursor();
                return Ok(c.into());
            }
        }
        bail!(
            "no free IP address left in the job subnet ({} in use); configure a larger subnet",
            self.used.len()
        )
    }
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("could not run {cmd}; is it installed? (scripts/install-deps)"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates (or repairs) the bridge, enables forwarding and installs the NAT table and the
/// bridge filter ([`super::filter`]), with only DNS open to jobs on the host. Idempotent: safe
/// to run on every agent start, including after a crash that left state behind.
pub fn setup_host(cfg: &NetworkConfig) -> Result<()> {
    setup_host_with(cfg, &[])
}

/// [`setup_host`], with TCP port ranges of the host that jobs may connect to (the router's
/// HTTP, HTTPS and TCP-route ports: an app calls another by its public name through the router,
/// as on Heroku). Everything else the host listens on is closed to jobs.
pub fn setup_host_with(cfg: &NetworkConfig, published_tcp: &[(u16, u16)]) -> Result<()> {
    setup_host_overlay(cfg, published_tcp, None)
}

/// [`setup_host_with`] on a host of an overlay network ([`super::overlay`]): the bridge gets
/// the overlay's MTU, jobs' traffic to the cluster subnet is not NATed, and the other hosts'
/// jobs are held to the same rules as this host's own (see [`host_rules`]).
pub fn setup_host_overlay(
    cfg: &NetworkConfig,
    published_tcp: &[(u16, u16)],
    overlay: Option<&super::overlay::OverlayConfig>,
) -> Result<()> {
    let br = cfg.bridge.as_str();
    if br.len() > 15 {
        bail!("bridge name {br:?} is longer than Linux's 15 characters");
    }
    if run("ip", &["link", "show", br], None).is_err() {
        run("ip", &["link", "add", br, "type", "bridge"], None)
            .with_context(|| format!("creating bridge {br}"))?;
    }
    // A fixed MAC: otherwise the bridge takes the lowest MAC of its ports, which changes as
    // jobs' veths come and go, and jobs keep sending to the gateway's old MAC (their ARP entry)
    // until it goes stale: replies to the router vanished for ~10 s during deploys.
    run(
        "ip",
        &["link", "set", br, "address", &mac_for(cfg.gateway())],
        None,
    )?;
    if let Some(o) = overlay {
        run("ip", &["link", "set", br, "mtu", &o.mtu.to_string()], None)?;
    }
    let gw = format!("{}/{}", cfg.gateway(), cfg.prefix);
    run("ip", &["addr", "replace", &gw, "dev", br], None)?;
    // Any other address is a former subnet's (an overlay host whose /24 went to another host,
    // a changed --subnet): its route would keep that subnet's traffic on this bridge.
    let shown = run("ip", &["-j", "-4", "addr", "show", "dev", br], None)?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&shown).unwrap_or_default();
    for a in links
        .iter()
        .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
    {
        let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
            continue;
        };
        let old = format!("{ip}/{len}");
        if old != gw && ip.parse::<Ipv4Addr>().is_ok() {
            tracing::info!(bridge = br, "removing the bridge's former address {old}");
            let _ = run("ip", &["addr", "del", &old, "dev", br], None);
        }
    }
    run("ip", &["link", "set", br, "up"], None)?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .context("enabling IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)")?;
    let rules = host_rules(cfg, published_tcp, overlay) + &super::filter::table_rules(cfg, overlay);
    run("nft", &["-f", "-"], Some(&rules))
        .context("installing the NAT and filter rules with nft")?;
    Ok(())
}

/// The `ip` table: masquerade for jobs' outbound traffic, and what jobs may reach on the host
/// itself (the `input` chain; its policy stays accept for every other interface, like a host
/// without a firewall): replies to connections the host opened (router, health checks), the
/// gateway's DNS (port 53, UDP and TCP), `published_tcp`, ping; the rest is rejected at once
/// (a TCP reset: connecting fails fast instead of hanging). A host whose own input filter drops
/// by default needs the DNS and published ports there too (docs/host.md).
///
/// On an overlay: no NAT to the cluster subnet (jobs keep their IP across hosts); other hosts'
/// jobs (a source in the cluster subnet arriving on any other interface than the bridge and
/// `lo`) get the same input rules as this host's, but no DNS; and jobs cannot reach the other
/// hosts' LAN addresses (the set `peers`, filled by [`super::overlay::sync`]) except on the
/// published ports, so no host agent API, etcd or SSH of another host.
/// `add` then `delete` makes the replacement idempotent whether or not the table existed.
fn host_rules(
    cfg: &NetworkConfig,
    published_tcp: &[(u16, u16)],
    overlay: Option<&super::overlay::OverlayConfig>,
) -> String {
    let (t, br, cidr, gw_ip) = (&cfg.nft_table, &cfg.bridge, cfg.cidr(), cfg.gateway());
    let ports = (!published_tcp.is_empty()).then(|| {
        let ports: Vec<String> = published_tcp
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("tcp dport {{ {} }} accept", ports.join(", "))
    });
    let published = ports
        .as_ref()
        .map(|p| format!("iifname \"{br}\" {p}\n"))
        .unwrap_or_default();
    let (nat_to, remote_in, to_peers) = match overlay {
        None => (format!("ip daddr != {cidr}"), String::new(), String::new()),
        Some(o) => {
            let cluster = o.cluster_cidr();
            let from = format!("iifname != {{ \"{br}\", \"lo\" }} ip saddr {cluster}");
            let published = ports
                .as_ref()
                .map(|p| format!("{from} {p}\n"))
                .unwrap_or_default();
            let peers_published = ports
                .as_ref()
                .map(|p| format!("iifname \"{br}\" ip daddr @peers {p}\n"))
                .unwrap_or_default();
            // VXLAN from anywhere but another host's VTEP to this host's, dropped: a job that
            // reached this host's UDP 4789 on another of its addresses (masqueraded by its own
            // host, a peer) would inject frames with any source of the cluster, past isolation.
            let vxlan_in = match o.backend {
                super::overlay::Backend::Vxlan => format!(
                    "udp dport {port} ip daddr != {local} drop\n\
                     udp dport {port} ip saddr != @peers drop\n",
                    port = o.port,
                    local = o.local_ip
                ),
                super::overlay::Backend::HostGw => String::new(),
            };
            (
                format!("ip daddr != {cluster}"),
                format!(
                    "{vxlan_in}\
                     {from} ct state established,related accept\n\
                     {published}\
                     {from} icmp type echo-request accept\n\
                     {from} meta l4proto tcp reject with tcp reset\n\
                     {from} reject\n"
                ),
                // Replies first: with host-gw, other hosts' routers reach jobs from their LAN
                // addresses, which are in `peers`.
                format!(
                    "iifname \"{br}\" ip daddr @peers ct state established,related accept\n\
                     {peers_published}\
                     iifname \"{br}\" ip daddr @peers meta l4proto tcp reject with tcp reset\n\
                     iifname \"{br}\" ip daddr @peers reject\n"
                ),
            )
        }
    };
    let peers = match overlay.map(|o| &o.initial_peers) {
        Some(ips) if !ips.is_empty() => {
            let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
            format!(" elements = {{ {} }};", ips.join(", "))
        }
        _ => String::new(),
    };
    format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n\
         set peers {{ type ipv4_addr;{peers} }}\n\
         chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
           ip saddr {cidr} {nat_to} masquerade\n}}\n\
         chain forward {{ type filter hook forward priority filter; policy accept;\n\
           {to_peers}\
           ip saddr {cidr} accept\n  ip daddr {cidr} accept\n}}\n\
         chain input {{ type filter hook input priority filter; policy accept;\n\
           iifname \"{br}\" ct state established,related accept\n\
           iifname \"{br}\" ip daddr {gw_ip} udp dport 53 accept\n\
           iifname \"{br}\" ip daddr {gw_ip} tcp dport 53 accept\n\
           {published}\
           iifname \"{br}\" icmp type echo-request accept\n\
           iifname \"{br}\" meta l4proto tcp reject with tcp reset\n\
           iifname \"{br}\" reject\n\
           {remote_in}}}\n}}\n"
    )
}

/// The resolv.conf of an agent's containers when discovery's DNS serves its bridge:
/// `nameserver` the gateway (the only resolver; it forwards other names to the host's),
/// `search discover` first so `APP-web` alone resolves, then the host's own search domains (as
/// containers had them with the host's file), and `ndots:1` (glibc's default, said out loud):
/// `pypi.org` and `APP-web.discover` are asked as they are, before any search domain.
pub fn container_resolv_conf(nameserver: Ipv4Addr, host_conf: &str) -> String {
    let mut search = vec!["discover".to_string()];
    for line in host_conf.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            for d in words.map(|d| d.trim_end_matches('.')) {
                if !d.is_empty() && !search.iter().any(|s| s == d) {
                    search.push(d.to_string());
                }
            }
        }
    }
    format!(
        "# Written by the Slipway host agent: discovery's DNS on the jobs' bridge answers\n\
         # SERVICE.discover and forwards other names to the host's resolver.\n\
         nameserver {nameserver}\nsearch {}\noptions ndots:1\n",
        search.join(" ")
    )
}

/// Writes [`container_resolv_conf`] to `<data_dir>/resolv.conf` (read-only in every container)
/// and returns its path. Rewritten only when it changes, through a rename, so running jobs keep
/// a whole file.
pub fn write_resolv_conf(
    data_dir: &std::path::Path,
    nameserver: Ipv4Addr,
) -> Result<std::path::PathBuf> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let text = container_resolv_conf(nameserver, &host);
    let path = data_dir.join("resolv.conf");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = data_dir.join("resolv.conf.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing the containers' resolv.conf {}", path.display()))?;
    }
    Ok(path)
}

/// Removes the bridge and NAT table (used by tests and `slipway host daemon --teardown`).
pub fn teardown_host(cfg: &NetworkConfig) {
    let _ = run("ip", &["link", "del", &cfg.bridge], None);
    let _ = run("nft", &["delete", "table", "ip", &cfg.nft_table], None);
    super::filter::teardown(cfg);
}

/// Where network namespaces are named (`ip netns` and ours).
pub const NETNS_DIR: &str = "/run/netns";

/// The start of every netns name of the agent with this bridge: `slw-<bridge>-`.
pub fn netns_prefix(cfg: &NetworkConfig) -> String {
    format!("slw-{}-", cfg.bridge)
}

/// Name of a job's network namespace in `/run/netns`: [`netns_prefix`] (its agent) and the job
/// id's hash, e.g. `slw-slipway0-3f09a1c2d4`.
pub fn netns_name(cfg: &NetworkConfig, job_id: &str) -> String {
    format!("{}{}", netns_prefix(cfg), job_hash(job_id))
}

pub fn netns_path(cfg: &NetworkConfig, job_id: &str) -> std::path::PathBuf {
    std::path::Path::new(NETNS_DIR).join(netns_name(cfg, job_id))
}

/// Creates the job's network namespace with its veth (on the bridge, MAC derived from the IP),
/// address, loopback and default route, before the container exists: then the shim can use a
/// single `runc run -d`, which is ~25 ms faster here than `runc create` + `runc start`. Done with
/// rtnetlink ([`super::netlink`]); two `ip -b` runs if that fails. The agent does this while it
/// mounts the rootfs and writes the spec.
///
/// The job's bridge filter ([`super::filter`]: its MAC and IP, its isolation `group`) is
/// installed by one `nft` run started first and awaited last, so it overlaps with the netns
/// setup; the job is not started unless it is in.
pub fn prepare_netns(
    cfg: &NetworkConfig,
    job_id: &str,
    ip: Ipv4Addr,
    group: Option<String>,
    mtu: Option<u32>,
) -> Result<std::path::PathBuf> {
    let rules = super::filter::PortRules {
        veth: veth_name(cfg, job_id),
        ip,
        group,
    };
    let filter = super::filter::spawn_add(cfg, &rules)?;
    let res = create_netns(cfg, job_id, ip, mtu);
    let res = super::filter::wait(filter).and(res);
    if res.is_err() {
        super::filter::remove(cfg, &rules);
        remove_job_netns(cfg, job_id);
    }
    res
}

fn create_netns(
    cfg: &NetworkConfig,
    job_id: &str,
    ip: Ipv4Addr,
    mtu: Option<u32>,
) -> Result<std::path::PathBuf> {
    let (ns, veth, mac) = (netns_name(cfg, job_id), veth_name(cfg, job_id), mac_for(ip));
    remove_job_netns(cfg, job_id); // a leftover from a crashed agent with the same job id
    let path = netns_path(cfg, job_id);
    let native = super::netlink::create(&super::netlink::NetnsSpec {
        netns_path: &path,
        bridge: &cfg.bridge,
        veth: &veth,
        mac: &mac,
        ip,
        prefix: cfg.prefix,
        gateway: cfg.gateway(),
        mtu,
    });
    match native {
        Ok(()) => return Ok(path),
        Err(e) => {
            tracing::warn!(
                job = job_id,
                "netlink setup failed ({e:#}); falling back to `ip`"
            );
            remove_job_netns(cfg, job_id);
        }
    }
    let mtu = mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    let host_side = format!(
        "netns add {ns}\nlink add name {veth}{mtu} master {br} up type veth peer name eth0{mtu} \
         address {mac} netns {ns}\n",
        br = cfg.bridge
    );
    let inside = format!(
        "addr add {ip}/{p} dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {gw}\n",
        p = cfg.prefix,
        gw = cfg.gateway()
    );
    let res = run("ip", &["-b", "-"], Some(&host_side))
        .and_then(|_| run("ip", &["-n", &ns, "-b", "-"], Some(&inside)));
    if let Err(e) = res {
        remove_job_netns(cfg, job_id);
        return Err(e.context(format!("setting up the network of job {job_id}")));
    }
    Ok(path)
}

/// Removes a job's netns (its veth pair goes with it once no process is left inside) and, if
/// it is still there, its host-side veth, under its agent's names and the legacy ones. No
/// process spawned for the netns: unmount and unlink.
pub fn remove_job_netns(cfg: &NetworkConfig, job_id: &str) {
    let legacy = std::path::Path::new(NETNS_DIR).join(format!("slw-{}", job_hash(job_id)));
    for p in [netns_path(cfg, job_id), legacy] {
        remove_netns_file(&p);
    }
    for v in [veth_name(cfg, job_id), legacy_veth_name(job_id)] {
        remove_link(&v);
    }
}

/// Removes a job's netns and veth whatever agent named them (any `slw-*-<hash>` and
/// `v*<hash>`): test harnesses' clean-up, which knows the job ids but not always the bridge.
pub fn remove_netns(job_id: &str) {
    let hash = job_hash(job_id);
    if let Ok(rd) = std::fs::read_dir(NETNS_DIR) {
        for e in rd.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("slw-") && name.ends_with(&hash) {
                remove_netns_file(&e.path());
            }
        }
    }
    remove_veth(job_id);
}

/// Deletes a job's host-side veth if it is still there (any agent's name for it).
pub fn remove_veth(job_id: &str) {
    let hash = job_hash(job_id);
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('v') && name.ends_with(&hash) && matches!(name.len(), 13 | 15) {
                remove_link(&name);
            }
        }
    }
}

/// Unmounts and unlinks a netns file (the namespace ends when no process is left in it).
pub(super) fn remove_netns_file(p: &std::path::Path) {
    if std::fs::symlink_metadata(p).is_ok() {
        if let Ok(c) = std::ffi::CString::new(p.display().to_string()) {
            // SAFETY: valid C string; umount2 does not keep the pointer.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(p);
    }
}

/// Deletes a network interface if it exists.
pub(super) fn remove_link(name: &str) {
    if std::path::Path::new("/sys/class/net").join(name).exists() {
        let _ = run("ip", &["link", "del", name], None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math_and_mac() {
        let (ip, p) = NetworkConfig::parse_subnet("100.100.7.9/16").unwrap();
        let cfg = NetworkConfig {
            subnet: ip,
            prefix: p,
            ..Default::default()
        };
        assert_eq!(cfg.cidr(), "100.100.0.0/16");
        assert_eq!(cfg.gateway(), Ipv4Addr::new(100, 100, 0, 1));
        assert_eq!(mac_for(Ipv4Addr::new(100, 100, 0, 2)), "02:42:64:64:00:02");
        let v = veth_name(&cfg, "some-very-long-job-id-1234567890");
        assert_eq!(v.len(), 15);
        assert!(v.starts_with(&veth_prefix(&cfg)));
        let other = NetworkConfig {
            bridge: "slws3801".into(),
            ..cfg.clone()
        };
        assert_ne!(veth_prefix(&cfg), veth_prefix(&other));
        assert_eq!(
            netns_name(&other, "j1"),
            format!("slw-slws3801-{}", job_hash("j1"))
        );
        assert!(NetworkConfig::parse_subnet("10.0.0.0/31").is_err());
    }

    #[test]
    fn on_an_overlay_the_cluster_is_not_natted_and_other_hosts_are_closed_to_jobs() {
        let cfg = NetworkConfig {
            bridge: "slw1".into(),
            subnet: Ipv4Addr::new(100, 100, 3, 0),
            prefix: 24,
            nft_table: "slw1".into(),
        };
        let o = crate::runc::overlay::OverlayConfig {
            backend: crate::runc::overlay::Backend::Vxlan,
            cluster_subnet: Ipv4Addr::new(100, 100, 0, 0),
            cluster_prefix: 16,
            subnet: cfg.subnet,
            prefix: 24,
            device: "vx-slw1".into(),
            vni: 1,
            port: 4789,
            local_ip: Ipv4Addr::new(10, 0, 0, 3),
            lan_dev: "eth0".into(),
            mtu: 1450,
            nft_table: "slw1".into(),
            initial_peers: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
        };
        let alone = host_rules(&cfg, &[(80, 80)], None);
        assert!(alone.contains("set peers { type ipv4_addr; }"), "{alone}");
        assert!(alone.contains("ip saddr 100.100.3.0/24 ip daddr != 100.100.3.0/24 masquerade"));
        assert!(!alone.contains("@peers ct") && !alone.contains("ip saddr 100.100.0.0/16"));
        let r = host_rules(&cfg, &[(80, 80)], Some(&o));
        assert!(
            r.contains("ip saddr 100.100.3.0/24 ip daddr != 100.100.0.0/16 masquerade"),
            "{r}"
        );
        assert!(
            r.contains("set peers { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 }; }"),
            "{r}"
        );
        // In the forward chain, before the accepts: replies, the published ports, then reject.
        let at = |needle: &str| r.find(needle).unwrap_or_else(|| panic!("{needle}: {r}"));
        let reply = at("iifname \"slw1\" ip daddr @peers ct state established,related accept");
        let published = at("iifname \"slw1\" ip daddr @peers tcp dport { 80 } accept");
        let reject = at("iifname \"slw1\" ip daddr @peers reject\n");
        assert!(
            reply < published
                && published < reject
                && reject < at("ip saddr 100.100.3.0/24 accept")
        );
        // Other hosts' jobs at this host's input: the same rules as its own jobs, no DNS.
        let from = "iifname != { \"slw1\", \"lo\" } ip saddr 100.100.0.0/16";
        assert!(
            r.contains(&format!("{from} tcp dport {{ 80 }} accept")),
            "{r}"
        );
        assert!(r.contains(&format!("{from} reject\n")), "{r}");
        assert!(!r.contains(&format!("{from} udp dport 53")), "{r}");
        // VXLAN only from the other hosts, to this host's VTEP address.
        assert!(
            r.contains("udp dport 4789 ip daddr != 10.0.0.3 drop\n"),
            "{r}"
        );
        assert!(
            r.contains("udp dport 4789 ip saddr != @peers drop\n"),
            "{r}"
        );
        assert!(at("udp dport 4789 ip saddr") > at("iifname \"slw1\" reject\n"));
        let gw = crate::runc::overlay::OverlayConfig {
            backend: crate::runc::overlay::Backend::HostGw,
            ..o.clone()
        };
        assert!(!host_rules(&cfg, &[], Some(&gw)).contains("4789"));
        // The bridge table keeps other hosts' jobs (not hosts' .0/.1) from isolated apps.
        let b = super::super::filter::table_rules(&cfg, Some(&o));
        assert!(
            b.contains(
                "ip saddr 100.100.0.0/16 ip saddr != 100.100.3.0/24 ip saddr & 0.0.0.254 != \
                 0.0.0.0 ip daddr vmap @isolated"
            ),
            "{b}"
        );
    }

    #[test]
    fn container_resolv_conf_points_at_the_gateway_and_keeps_the_host_search_domains() {
        let host = "# generated\nnameserver 127.0.0.53\nsearch corp.example lab.example.\n\
                    options edns0 trust-ad\n";
        let conf = container_resolv_conf(Ipv4Addr::new(100, 100, 0, 1), host);
        let lines: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "nameserver 100.100.0.1",
                "search discover corp.example lab.example",
                "options ndots:1"
            ]
        );
        let conf = container_resolv_conf(Ipv4Addr::new(10, 9, 0, 1), "");
        assert!(conf.contains("\nsearch discover\n"), "{conf}");
    }

    #[test]
    fn allocator_is_next_fit_and_bounded() {
        let (subnet, prefix) = NetworkConfig::parse_subnet("10.9.0.0/29").unwrap();
        let cfg = NetworkConfig {
            subnet,
            prefix,
            ..Default::default()
        };
        let mut a = IpAllocator::new(&cfg);
        let ips: Vec<_> = (0..5).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ips[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(ips[4], Ipv4Addr::new(10, 9, 0, 6));
        assert!(a.allocate().is_err());
        a.release(ips[1]);
        assert_eq!(a.allocate().unwrap(), ips[1]);
    }

    #[test]
    fn a_persistent_allocator_goes_on_where_the_last_one_stopped() {
        let (subnet, prefix) = NetworkConfig::parse_subnet("10.9.0.0/28").unwrap();
        let cfg = NetworkConfig {
            subnet,
            prefix,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join("ip-next");
        let mut a = IpAllocator::persistent(&cfg, cursor.clone());
        let first: Vec<_> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first[0], Ipv4Addr::new(10, 9, 0, 2));
        // A restart: the dead jobs' addresses are free, but not handed out first.
        let mut b = IpAllocator::persistent(&cfg, cursor.clone());
        assert_eq!(b.allocate().unwrap(), Ipv4Addr::new(10, 9, 0, 5));
        std::fs::write(&cursor, "10.9.1.1\n").unwrap();
        let mut c = IpAllocator::persistent(&cfg, cursor);
        assert_eq!(
            c.allocate().unwrap(),
            Ipv4Addr::new(10, 9, 0, 2),
            "out of range"
        );
    }
}
