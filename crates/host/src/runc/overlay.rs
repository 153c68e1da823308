//! The overlay network between hosts (cluster mode, `--overlay`): every host has its own /24
//! of the cluster subnet (allocated in etcd by the server, which the host crate knows nothing
//! of) and the kernel forwards between hosts. Flannel's two backends:
//!
//! - **vxlan**: one VXLAN device per host (VNI 1, UDP 4789, `nolearning`, `local` = the host's
//!   LAN address), holding the host's subnet address `.0/32` and a MAC derived from it; for
//!   every other host a route `<its /24> via <its .0> dev VX onlink`, a permanent neighbour entry
//!   `<its .0> lladdr <its VTEP MAC>` and an FDB entry `<its VTEP MAC> dst <its LAN IP>`: no
//!   multicast, no learning, every entry known from the host set. Jobs' MTU is the LAN's − 50.
//! - **host-gw**: a route `<its /24> via <its LAN IP>` per other host; only for hosts on one L2
//!   segment (the LAN must deliver to every host directly), no encapsulation, the LAN's MTU.
//!
//! Done with `ip`/`bridge` subprocesses (batches): the set changes only when hosts come and go,
//! so the ~5 ms a run costs does not matter, unlike the per-job path ([`super::netlink`]).
//! [`sync`] is level-triggered: it reads what the kernel has, computes what the host set asks
//! for ([`desired`]), and applies the difference ([`diff`]), so a missed change is repaired at
//! the next sync. Routes carry protocol [`ROUTE_PROTO`], so only ours are ever removed.

use super::network::{mac_for, run};
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// How packets reach other hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
    HostGw,
}

/// VXLAN's encapsulation: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The route protocol number marking the overlay's routes (`ip route … proto 83`).
pub const ROUTE_PROTO: u8 = 83;
/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;

/// One host's overlay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    pub backend: Backend,
    /// The whole cluster's subnet (jobs of every host are in it): traffic to it is not NATed.
    pub cluster_subnet: Ipv4Addr,
    pub cluster_prefix: u8,
    /// This host's share of it (the bridge's subnet).
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// The VXLAN device ([`device_name`]).
    pub device: String,
    pub vni: u32,
    pub port: u16,
    /// The address other hosts reach this one at (VXLAN's `local`).
    pub local_ip: Ipv4Addr,
    /// The interface holding `local_ip`.
    pub lan_dev: String,
    /// The jobs' MTU: the LAN's, less [`VXLAN_OVERHEAD`] for vxlan.
    pub mtu: u32,
    /// The agent's nftables table (family `ip`), whose set `peers` holds the other hosts' LAN
    /// addresses, which jobs may not reach ([`super::network::setup_host_overlay`]).
    pub nft_table: String,
    /// The other hosts' LAN addresses known at start: the host setup re-creates the nft table
    /// with them already in `peers`, so jobs that outlived a restarted agent get no window
    /// before the first [`sync`].
    pub initial_peers: Vec<Ipv4Addr>,
}

impl OverlayConfig {
    /// The settings for the agent with network `net` (its subnet being this host's share of
    /// `cluster`), reached at `local_ip`: finds its interface and MTU.
    pub fn new(
        backend: Backend,
        net: &super::network::NetworkConfig,
        cluster: (Ipv4Addr, u8),
        local_ip: Ipv4Addr,
    ) -> Result<OverlayConfig> {
        let (lan_dev, lan_mtu) = lan_device(local_ip)?;
        let mtu = match backend {
            Backend::Vxlan => lan_mtu.saturating_sub(VXLAN_OVERHEAD),
            Backend::HostGw => lan_mtu,
        };
        if mtu < 576 {
            bail!("the LAN interface {lan_dev} has MTU {lan_mtu}: too small for the overlay");
        }
        Ok(OverlayConfig {
            backend,
            cluster_subnet: cluster.0,
            cluster_prefix: cluster.1,
            subnet: net.subnet,
            prefix: net.prefix,
            device: device_name(&net.bridge),
            vni: 1,
            port: VXLAN_PORT,
            local_ip,
            lan_dev,
            mtu,
            nft_table: net.nft_table.clone(),
            initial_peers: Vec::new(),
        })
    }

    pub fn cluster_cidr(&self) -> String {
        format!("{}/{}", self.cluster_subnet, self.cluster_prefix)
    }

    /// This host's VTEP MAC: derived from its subnet's `.0`, so it survives restarts and peers'
    /// entries stay right.
    pub fn vtep_mac(&self) -> String {
        vtep_mac(self.subnet)
    }
}

/// The VXLAN device of the agent with this bridge: `vx-` + the bridge's name, cut to Linux's
/// 15 characters (`vx-slipway0`).
pub fn device_name(bridge: &str) -> String {
    format!("vx-{bridge}").chars().take(15).collect()
}

/// A host's VTEP MAC from its subnet (`02:42` + the four bytes of the subnet's `.0`, which no
/// job and no bridge has).
pub fn vtep_mac(subnet: Ipv4Addr) -> String {
    mac_for(subnet)
}

/// Another host, as the host set in etcd names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// Where it is reached (its LAN address).
    pub public_ip: Ipv4Addr,
    pub vtep_mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
}

/// Kernel state of the overlay: routes, neighbour and FDB entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub routes: BTreeSet<Route>,
    /// (IP, MAC) on the VXLAN device.
    pub neigh: BTreeSet<(Ipv4Addr, String)>,
    /// (MAC, LAN IP) on the VXLAN device.
    pub fdb: BTreeSet<(String, Ipv4Addr)>,
}

impl Entries {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neigh.is_empty() && self.fdb.is_empty()
    }
}

/// What the host set asks of this host's kernel. Itself, peers whose subnet is outside the
/// cluster's, overlaps this host's, or has a bad MAC or LAN address ([`usable_mac`],
/// [`usable_lan_ip`]) are left out (and logged): a stray key in etcd must not route this
/// host's own jobs away, nor the overlay into itself.
pub fn desired(cfg: &OverlayConfig, peers: &[Peer]) -> Entries {
    let mut e = Entries::default();
    let cluster_mask = mask(cfg.cluster_prefix);
    for p in peers {
        let net = u32::from(p.subnet) & mask(p.prefix);
        let own = u32::from(cfg.subnet);
        let overlaps = {
            let m = mask(p.prefix.min(cfg.prefix));
            net & m == own & m
        };
        let inside = p.prefix >= cfg.cluster_prefix
            && net & cluster_mask == u32::from(cfg.cluster_subnet) & cluster_mask;
        if overlaps
            || !inside
            || p.public_ip == cfg.local_ip
            || !usable_lan_ip(cfg, p.public_ip)
            || !usable_mac(&p.vtep_mac)
        {
            if !overlaps {
                // Debug, not warn: a sync runs every 30 s at least.
                tracing::debug!(
                    ?p,
                    "overlay: a host entry that cannot be routed is left out"
                );
            }
            continue;
        }
        let net = Ipv4Addr::from(net);
        match cfg.backend {
            Backend::Vxlan => {
                e.routes.insert(Route {
                    dst: net,
                    prefix: p.prefix,
                    via: net,
                });
                e.neigh.insert((net, p.vtep_mac.to_ascii_lowercase()));
                e.fdb.insert((p.vtep_mac.to_ascii_lowercase(), p.public_ip));
            }
            Backend::HostGw => {
                e.routes.insert(Route {
                    dst: net,
                    prefix: p.prefix,
                    via: p.public_ip,
                });
            }
        }
    }
    e
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    }
}

/// A VTEP MAC another host may have: six hex pairs (nothing else reaches the `ip`/`bridge`
/// batch), unicast (a multicast or broadcast neighbour would flood), not all zeros (the FDB's
/// all-zeros entry is the default destination of every unknown frame).
pub fn usable_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    let hex = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    hex && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
        && parts.iter().any(|p| *p != "00")
}

/// A LAN address another host may be reached at: a unicast address outside the cluster subnet
/// (inside it, VXLAN's packets would be routed into the overlay itself).
pub fn usable_lan_ip(cfg: &OverlayConfig, ip: Ipv4Addr) -> bool {
    let m = mask(cfg.cluster_prefix);
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
        && u32::from(ip) & m != u32::from(cfg.cluster_subnet) & m
}

/// What to add and what to remove to go from `current` to `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Entries,
    pub remove: Entries,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

pub fn diff(current: &Entries, desired: &Entries) -> Plan {
    fn d<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> BTreeSet<T> {
        a.difference(b).cloned().collect()
    }
    Plan {
        add: Entries {
            routes: d(&desired.routes, &current.routes),
            neigh: d(&desired.neigh, &current.neigh),
            fdb: d(&desired.fdb, &current.fdb),
        },
        remove: Entries {
            routes: d(&current.routes, &desired.routes),
            neigh: d(&current.neigh, &desired.neigh),
            fdb: d(&current.fdb, &desired.fdb),
        },
    }
}

/// The `ip -b` and `bridge -b` batches of a plan: removals first (a host whose subnet changed
/// gets its new entries after its old ones are gone), FDB and neighbour before the route.
fn batches(cfg: &OverlayConfig, plan: &Plan) -> (String, String) {
    let dev = &cfg.device;
    let (mut ip, mut bridge) = (String::new(), String::new());
    let route_dev = match cfg.backend {
        Backend::Vxlan => format!("dev {dev} onlink "),
        Backend::HostGw => String::new(),
    };
    for r in &plan.remove.routes {
        ip += &format!(
            "route del {}/{} via {} proto {ROUTE_PROTO}\n",
            r.dst, r.prefix, r.via
        );
    }
    for (i, _) in &plan.remove.neigh {
        ip += &format!("neigh del {i} dev {dev}\n");
    }
    for (m, d) in &plan.remove.fdb {
        bridge += &format!("fdb del {m} dev {dev} dst {d} self\n");
    }
    for (m, d) in &plan.add.fdb {
        bridge += &format!("fdb append {m} dev {dev} dst {d} self permanent\n");
    }
    for (i, m) in &plan.add.neigh {
        ip += &format!("neigh replace {i} lladdr {m} dev {dev} nud permanent\n");
    }
    for r in &plan.add.routes {
        ip += &format!(
            "route replace {}/{} via {} {route_dev}proto {ROUTE_PROTO}\n",
            r.dst, r.prefix, r.via
        );
    }
    (ip, bridge)
}

/// The interface holding `ip`, and its MTU.
pub fn lan_device(ip: Ipv4Addr) -> Result<(String, u32)> {
    let out = run("ip", &["-j", "-4", "addr", "show"], None)?;
    let links: Vec<serde_json::Value> =
        serde_json::from_str(&out).context("reading `ip -j addr show`")?;
    for l in &links {
        let has = l["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str() == Some(&ip.to_string()));
        if has {
            let name = l["ifname"].as_str().context("ifname")?.to_string();
            let mtu = l["mtu"].as_u64().context("mtu")? as u32;
            return Ok((name, mtu));
        }
    }
    bail!(
        "no interface of this host has the address {ip}: the overlay needs the address other \
         hosts reach this one at (--overlay-ip)"
    )
}

/// Creates (or re-creates, when its settings changed) the VXLAN device with the host's
/// subnet `.0/32` and VTEP MAC; removes it for host-gw. Idempotent.
pub fn setup(cfg: &OverlayConfig) -> Result<()> {
    let dev = cfg.device.as_str();
    if cfg.backend == Backend::HostGw {
        remove_device(dev);
        return Ok(());
    }
    let want = (cfg.vni as u64, cfg.local_ip.to_string(), cfg.port as u64);
    if let Ok(out) = run("ip", &["-j", "-d", "link", "show", dev], None) {
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let d = &v[0]["linkinfo"]["info_data"];
        let have = (
            d["id"].as_u64().unwrap_or(0),
            d["local"].as_str().unwrap_or("").to_string(),
            d["port"].as_u64().unwrap_or(0),
        );
        let mac_ok = v[0]["address"].as_str() == Some(cfg.vtep_mac().as_str());
        if have != want || !mac_ok || v[0]["linkinfo"]["info_kind"] != "vxlan" {
            tracing::info!(device = dev, "overlay: re-creating the VXLAN device");
            run("ip", &["link", "del", dev], None)?;
        }
    }
    if run("ip", &["link", "show", dev], None).is_err() {
        let (vni, port, local) = (
            cfg.vni.to_string(),
            cfg.port.to_string(),
            cfg.local_ip.to_string(),
        );
        run(
            "ip",
            &[
                "link",
                "add",
                dev,
                "address",
                &cfg.vtep_mac(),
                "type",
                "vxlan",
                "id",
                &vni,
                "local",
                &local,
                "dev",
                &cfg.lan_dev,
                "dstport",
                &port,
                "nolearning",
            ],
            None,
        )
        .with_context(|| {
            format!("creating the VXLAN device {dev} (is the vxlan module loaded?)")
        })?;
    }
    let own = format!("{}/32", cfg.subnet);
    let batch = format!(
        "link set {dev} mtu {mtu}\naddr replace {own} dev {dev}\nlink set {dev} up\n",
        mtu = cfg.mtu
    );
    run("ip", &["-b", "-"], Some(&batch))
        .with_context(|| format!("setting up the VXLAN device {dev}"))?;
    Ok(())
}

/// Deletes the VXLAN device if this network namespace has it (asked with `ip`, not through
/// `/sys/class/net`, which shows the namespace sysfs was mounted in).
fn remove_device(dev: &str) {
    if run("ip", &["link", "show", dev], None).is_ok() {
        let _ = run("ip", &["link", "del", dev], None);
    }
}

/// What the kernel has now: our routes in the cluster subnet, and the VXLAN device's permanent
/// neighbour and FDB entries.
pub fn current(cfg: &OverlayConfig) -> Result<Entries> {
    let mut e = Entries::default();
    let proto = ROUTE_PROTO.to_string();
    let out = run(
        "ip",
        &[
            "-j",
            "route",
            "show",
            "root",
            &cfg.cluster_cidr(),
            "proto",
            &proto,
        ],
        None,
    )?;
    for r in parse(&out)? {
        let (Some(dst), Some(via)) = (r["dst"].as_str(), r["gateway"].as_str()) else {
            continue;
        };
        let (net, prefix) = dst.split_once('/').unwrap_or((dst, "32"));
        if let (Ok(dst), Ok(prefix), Ok(via)) = (net.parse(), prefix.parse(), via.parse()) {
            e.routes.insert(Route { dst, prefix, via });
        }
    }
    if cfg.backend == Backend::HostGw {
        return Ok(e);
    }
    let dev = cfg.device.as_str();
    for n in parse(&run("ip", &["-j", "neigh", "show", "dev", dev], None)?)? {
        let permanent = n["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "PERMANENT"));
        if let (true, Some(ip), Some(mac)) = (permanent, n["dst"].as_str(), n["lladdr"].as_str())
            && let Ok(ip) = ip.parse()
        {
            e.neigh.insert((ip, mac.to_ascii_lowercase()));
        }
    }
    for f in parse(&run("bridge", &["-j", "fdb", "show", "dev", dev], None)?)? {
        if let (Some(mac), Some(dst)) = (f["mac"].as_str(), f["dst"].as_str())
            && let Ok(dst) = dst.parse()
        {
            e.fdb.insert((mac.to_ascii_lowercase(), dst));
        }
    }
    Ok(e)
}

fn parse(out: &str) -> Result<Vec<serde_json::Value>> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(out).context("reading iproute2's JSON output")
}

/// Brings the kernel to what `peers` ask for; returns what it changed. The nft set of the
/// peers' LAN addresses is rewritten every time (one small batch).
pub fn sync(cfg: &OverlayConfig, peers: &[Peer]) -> Result<Plan> {
    let t = &cfg.nft_table;
    let ips: BTreeSet<Ipv4Addr> = peers
        .iter()
        .map(|p| p.public_ip)
        .filter(|ip| *ip != cfg.local_ip && usable_lan_ip(cfg, *ip))
        .collect();
    let mut nft = format!("flush set ip {t} peers\n");
    if !ips.is_empty() {
        let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        nft += &format!("add element ip {t} peers {{ {} }}\n", list.join(", "));
    }
    run("nft", &["-f", "-"], Some(&nft))
        .context("updating the set of the other hosts' addresses")?;
    let plan = diff(&current(cfg)?, &desired(cfg, peers));
    if plan.is_empty() {
        return Ok(plan);
    }
    let (ip, bridge) = batches(cfg, &plan);
    // `-force`: one stale entry (already gone) does not stop the rest of the batch; the next
    // sync repairs whatever did fail.
    let r1 = if ip.is_empty() {
        Ok(String::new())
    } else {
        run("ip", &["-force", "-b", "-"], Some(&ip))
    };
    let r2 = if bridge.is_empty() {
        Ok(String::new())
    } else {
        run("bridge", &["-force", "-b", "-"], Some(&bridge))
    };
    r2.context("updating the overlay's FDB entries")?;
    r1.context("updating the overlay's routes and neighbours")?;
    Ok(plan)
}

/// Removes the VXLAN device (its neighbours, FDB entries and routes go with it) and any
/// host-gw route of ours.
pub fn teardown(cfg: &OverlayConfig) {
    remove_device(&cfg.device);
    if let Ok(e) = current(cfg) {
        let plan = Plan {
            add: Entries::default(),
            remove: e,
        };
        let (ip, _) = batches(cfg, &plan);
        if !ip.is_empty() {
            let _ = run("ip", &["-force", "-b", "-"], Some(&ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(backend: Backend) -> OverlayConfig {
        OverlayConfig {
            backend,
            cluster_subnet: Ipv4Addr::new(100, 100, 0, 0),
            cluster_prefix: 16,
            subnet: Ipv4Addr::new(100, 100, 1, 0),
            prefix: 24,
            device: device_name("slipway0"),
            vni: 1,
            port: VXLAN_PORT,
            local_ip: Ipv4Addr::new(10, 0, 0, 1),
            lan_dev: "eth0".into(),
            mtu: 1450,
            nft_table: "slipway".into(),
            initial_peers: Vec::new(),
        }
    }

    fn peer(third: u8, host: u8) -> Peer {
        let subnet = Ipv4Addr::new(100, 100, third, 0);
        Peer {
            subnet,
            prefix: 24,
            public_ip: Ipv4Addr::new(10, 0, 0, host),
            vtep_mac: vtep_mac(subnet),
        }
    }

    #[test]
    fn names_and_macs() {
        assert_eq!(device_name("slipway0"), "vx-slipway0");
        assert_eq!(device_name("a-very-long-bridge").len(), 15);
        assert_eq!(vtep_mac(Ipv4Addr::new(100, 100, 3, 0)), "02:42:64:64:03:00");
    }

    #[test]
    fn vxlan_wants_a_route_a_neighbour_and_an_fdb_entry_per_other_host() {
        let c = cfg(Backend::Vxlan);
        let own = Peer {
            public_ip: c.local_ip,
            ..peer(1, 1)
        };
        let e = desired(&c, &[own, peer(2, 2), peer(3, 3)]);
        assert_eq!(e.routes.len(), 2, "{e:?}");
        assert!(e.routes.contains(&Route {
            dst: Ipv4Addr::new(100, 100, 3, 0),
            prefix: 24,
            via: Ipv4Addr::new(100, 100, 3, 0)
        }));
        assert!(
            e.neigh
                .contains(&(Ipv4Addr::new(100, 100, 2, 0), "02:42:64:64:02:00".into()))
        );
        assert!(
            e.fdb
                .contains(&("02:42:64:64:03:00".into(), Ipv4Addr::new(10, 0, 0, 3)))
        );
    }

    #[test]
    fn stray_entries_are_left_out() {
        let c = cfg(Backend::Vxlan);
        let outside = Peer {
            subnet: Ipv4Addr::new(10, 1, 2, 0),
            ..peer(2, 2)
        };
        let overlapping = Peer {
            subnet: Ipv4Addr::new(100, 100, 0, 0),
            prefix: 16,
            ..peer(2, 2)
        };
        let same_subnet_other_ip = peer(1, 9);
        let bad_mac = Peer {
            vtep_mac: "02:42:zz:00:00:00".into(),
            ..peer(4, 4)
        };
        let e = desired(&c, &[outside, overlapping, same_subnet_other_ip, bad_mac]);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn corrupt_macs_and_lan_addresses_never_reach_the_kernel() {
        let c = cfg(Backend::Vxlan);
        let with_mac = |third, mac: &str| Peer {
            vtep_mac: mac.into(),
            ..peer(third, third)
        };
        let with_ip = |third, ip: [u8; 4]| Peer {
            public_ip: Ipv4Addr::from(ip),
            ..peer(third, third)
        };
        let bad = [
            // A newline would start a command of its own in the `bridge -b` batch.
            with_mac(2, "02:42:64:64:02:00\nfdb flush dev eth0"),
            with_mac(3, "02:42:64:64:03:00 dst 1.2.3.4"),
            with_mac(4, "ff:ff:ff:ff:ff:ff"),
            with_mac(5, "01:00:5e:00:00:01"),
            with_mac(6, "00:00:00:00:00:00"),
            with_mac(7, "02:42:64:64:07"),
            with_ip(8, [0, 0, 0, 0]),
            with_ip(9, [127, 0, 0, 1]),
            with_ip(10, [239, 1, 2, 3]),
            with_ip(11, [255, 255, 255, 255]),
            // Inside the cluster subnet: VXLAN packets into the overlay itself.
            with_ip(12, [100, 100, 12, 7]),
        ];
        for p in &bad {
            let e = desired(&c, std::slice::from_ref(p));
            assert!(e.is_empty(), "{p:?} gave {e:?}");
        }
        assert!(usable_mac("02:42:64:64:0A:00"));
        assert!(!usable_lan_ip(&c, Ipv4Addr::new(100, 100, 12, 7)));
        assert!(usable_lan_ip(&c, Ipv4Addr::new(10, 0, 0, 12)));
    }

    #[test]
    fn host_gw_routes_via_the_lan_address() {
        let c = cfg(Backend::HostGw);
        let e = desired(&c, &[peer(2, 2)]);
        assert_eq!(
            e.routes.into_iter().collect::<Vec<_>>(),
            [Route {
                dst: Ipv4Addr::new(100, 100, 2, 0),
                prefix: 24,
                via: Ipv4Addr::new(10, 0, 0, 2)
            }]
        );
        assert!(e.neigh.is_empty() && e.fdb.is_empty());
    }

    #[test]
    fn diff_adds_what_is_missing_and_removes_what_is_gone() {
        let c = cfg(Backend::Vxlan);
        let current = desired(&c, &[peer(2, 2), peer(3, 3)]);
        // Host 3 left, host 4 came, host 2 moved to another LAN address.
        let want = desired(&c, &[peer(2, 7), peer(4, 4)]);
        let plan = diff(&current, &want);
        assert_eq!(plan.add.routes.len(), 1);
        assert_eq!(plan.remove.routes.len(), 1);
        assert_eq!(
            plan.remove.routes.first().unwrap().dst,
            Ipv4Addr::new(100, 100, 3, 0)
        );
        assert!(
            plan.add
                .fdb
                .contains(&("02:42:64:64:02:00".into(), Ipv4Addr::new(10, 0, 0, 7)))
        );
        assert!(
            plan.remove
                .fdb
                .contains(&("02:42:64:64:02:00".into(), Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert!(diff(&want, &want).is_empty());
        let (ip, bridge) = batches(&c, &plan);
        assert!(
            ip.contains(
                "route replace 100.100.4.0/24 via 100.100.4.0 dev vx-slipway0 onlink proto 83"
            ),
            "{ip}"
        );
        assert!(ip.contains("route del 100.100.3.0/24"), "{ip}");
        let del = bridge.find("fdb del 02:42:64:64:02:00").unwrap();
        let add = bridge.find("fdb append 02:42:64:64:02:00").unwrap();
        assert!(del < add, "{bridge}");
    }
}
