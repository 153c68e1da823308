//! The overlay network's etcd half (`--overlay vxlan|host-gw`, docs/cluster.md "Overlay
//! network"); the kernel half is `slipway_host::runc::overlay`, which knows nothing of etcd.
//!
//! - **Allocation**: `--cluster-subnet` is cut into /24s; a host claims one by creating
//!   `/slipway/network/subnets/<a.b.c.0-24>` in a transaction that holds only while the key
//!   does not exist (create revision 0), or while it still names this host (its mod revision
//!   unchanged). The value ([`HostRecord`]) names the host, its LAN address and VTEP MAC. The key
//!   lives under a lease of [`LEASE_TTL`] seconds, renewed every third of it: a host that is
//!   gone for longer releases its /24. The /24 is remembered in `<host data>/overlay-subnet`
//!   and asked for first at the next start, so a restarted host (whose jobs outlive it and
//!   keep their addresses) keeps it whether its key is still there or has expired meanwhile.
//! - **Following**: every host reads the whole prefix, brings its kernel in line
//!   (`overlay::sync`: routes, neighbours, FDB, the nft set of peer addresses), then watches
//!   the prefix from the next revision; any event, a broken watch, or 30 s quiet leads to the
//!   next full read (level-triggered: a missed event delays, never corrupts).

use crate::Config;
use anyhow::{Context, Result, bail};
use slipway_etcd::{
    Client, Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchRequest,
};
use slipway_host::runc::RuncConfig;
use slipway_host::runc::network::NetworkConfig;
use slipway_host::runc::overlay::{self, Backend, OverlayConfig, Peer};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the hosts' subnets are kept in etcd.
pub const PREFIX: &str = "/slipway/network/subnets/";
/// Every /24 ever claimed, naming its last holder, with no lease: a host that claims "any free
/// /24" takes one never held before while there is one, so the /24 of a host whose lease
/// lapsed while it was cut off from etcd (its jobs still have its addresses, other hosts'
/// routers may still hold them) is not handed to a newcomer while fresh ones are left.
pub const HELD_PREFIX: &str = "/slipway/network/held/";
/// The subnet lease, in seconds: how long a host that is gone (crashed, removed, partitioned
/// from etcd) keeps its /24. Long enough to ride out an etcd leader election and a slow restart;
/// a restart after it still gets the same /24 back unless another host took it meanwhile.
pub const LEASE_TTL: i64 = 60;
/// Every host's share of the cluster subnet.
pub const HOST_PREFIX: u8 = 24;
/// The largest subnet value read (ours are ~120 bytes).
const MAX_RECORD: usize = 1024;
/// How long the follower waits for a change before reading the prefix again anyway.
const RESYNC: Duration = Duration::from_secs(30);

/// The value of a subnet's key (JSON: `{"host","public_ip","vtep_mac","backend"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// The host id (`slipway-host`'s instance id).
    pub host: String,
    /// Where other hosts send its overlay traffic.
    pub public_ip: Ipv4Addr,
    pub vtep_mac: String,
    /// `vxlan` or `host-gw`: hosts of another backend cannot be reached and are left out.
    pub backend: String,
}

impl HostRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::json!({
            "host": self.host,
            "public_ip": self.public_ip.to_string(),
            "vtep_mac": self.vtep_mac,
            "backend": self.backend,
        })
        .to_string()
        .into_bytes()
    }

    /// The record, parsed strictly: a corrupt or half-written value (any size, any bytes) is
    /// `None`, never a string that could reach the kernel's batches or flood the logs.
    pub fn from_json(b: &[u8]) -> Option<HostRecord> {
        if b.len() > MAX_RECORD {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let host = s("host")?;
        let plain = |t: &str| {
            !t.is_empty() && t.len() <= 128 && t.chars().all(|c| c.is_ascii_graphic() && c != '"')
        };
        let vtep_mac = s("vtep_mac")?.to_ascii_lowercase();
        let backend = s("backend")?;
        let known = [Backend::Vxlan, Backend::HostGw].map(backend_name);
        (plain(&host) && overlay::usable_mac(&vtep_mac) && known.contains(&backend.as_str()))
            .then_some(())?;
        Some(HostRecord {
            host,
            public_ip: s("public_ip")?.parse().ok()?,
            vtep_mac,
            backend,
        })
    }
}

pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Vxlan => "vxlan",
        Backend::HostGw => "host-gw",
    }
}

/// `/slipway/network/subnets/100.100.3.0-24`.
pub fn key(subnet: Ipv4Addr) -> String {
    format!("{PREFIX}{subnet}-{HOST_PREFIX}")
}

/// `/slipway/network/held/100.100.3.0-24` ([`HELD_PREFIX`]).
fn held_key(subnet: Ipv4Addr) -> String {
    format!("{HELD_PREFIX}{subnet}-{HOST_PREFIX}")
}

/// The subnet a key names, if it is one of ours: a /24's first address (`100.100.3.5-24`
/// would name a /24 that a claim of `100.100.3.0-24` does not see as taken).
pub fn parse_key(key: &[u8]) -> Option<Ipv4Addr> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?;
    let (ip, p) = rest.split_once('-')?;
    (p == HOST_PREFIX.to_string()).then_some(())?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    (u32::from(ip) & !(u32::MAX << (32 - HOST_PREFIX)) == 0).then_some(ip)
}

/// Every /24 of the cluster subnet, in order.
pub fn candidates(cluster: (Ipv4Addr, u8)) -> Result<Vec<Ipv4Addr>> {
    let (net, prefix) = cluster;
    if !(8..=HOST_PREFIX).contains(&prefix) {
        bail!(
            "--cluster-subnet {net}/{prefix}: the cluster subnet must be between a /8 and a /24 \
             (each host gets a /24 of it)"
        );
    }
    let n = 1u32 << (HOST_PREFIX - prefix);
    Ok((0..n)
        .map(|i| Ipv4Addr::from(u32::from(net) + (i << (32 - HOST_PREFIX))))
        .collect())
}

fn inside(subnet: Ipv4Addr, cluster: (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX << (32 - cluster.1);
    u32::from(subnet) & mask == u32::from(cluster.0)
}

/// Which /24 to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// This one or none (an explicit `--subnet`).
    Exact(Ipv4Addr),
    /// Any free one, this one first if free (the one remembered from the last start).
    Any(Option<Ipv4Addr>),
}

/// A claimed /24 and the lease its key lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub subnet: Ipv4Addr,
    pub lease: i64,
}

/// Who this host is, as its key says, and how long its key outlives it.
#[derive(Debug, Clone)]
pub struct Me {
    pub host: String,
    pub public_ip: Ipv4Addr,
    pub backend: Backend,
    /// The lease's TTL in seconds: [`LEASE_TTL`] unless `--overlay-lease-ttl` (tests).
    pub lease_ttl: i64,
}

impl Me {
    fn record(&self, subnet: Ipv4Addr) -> HostRecord {
        HostRecord {
            host: self.host.clone(),
            public_ip: self.public_ip,
            vtep_mac: overlay::vtep_mac(subnet),
            backend: backend_name(self.backend).into(),
        }
    }
}

/// Claims a /24 (see the module doc): a key naming this host first, then `want`'s, then the
/// lowest free one never held by another host ([`HELD_PREFIX`]), then the lowest free one.
/// Two hosts racing for one /24: one transaction fails, and that host goes on to the next.
pub async fn claim(etcd: &Client, cluster: (Ipv4Addr, u8), want: Want, me: &Me) -> Result<Claimed> {
    let all = candidates(cluster)?;
    let snap = etcd
        .range(&RangeRequest::prefix(PREFIX))
        .await
        .context("reading the hosts' subnets in etcd")?;
    let mut taken: HashMap<Ipv4Addr, (i64, Option<HostRecord>)> = HashMap::new();
    for kv in snap.kvs {
        if let Some(s) = parse_key(&kv.key) {
            taken.insert(s, (kv.mod_revision, HostRecord::from_json(&kv.value)));
        }
    }
    let mine = |s: &Ipv4Addr| {
        taken
            .get(s)
            .is_some_and(|(_, r)| r.as_ref().is_some_and(|r| r.host == me.host))
    };
    let held = etcd
        .range(&RangeRequest::prefix(HELD_PREFIX))
        .await
        .context("reading the hosts' subnets in etcd")?;
    let held_by_other: std::collections::HashSet<Ipv4Addr> = held
        .kvs
        .iter()
        .filter(|kv| kv.value != me.host.as_bytes())
        .filter_map(|kv| {
            let k = std::str::from_utf8(&kv.key)
                .ok()?
                .strip_prefix(HELD_PREFIX)?;
            parse_key(format!("{PREFIX}{k}").as_bytes())
        })
        .collect();
    let order: Vec<Ipv4Addr> = match want {
        Want::Exact(s) => vec![s],
        Want::Any(first) => {
            let mut o: Vec<Ipv4Addr> = all.iter().copied().filter(|s| mine(s)).collect();
            o.extend(first.filter(|s| inside(*s, cluster)));
            o.extend(all.iter().copied().filter(|s| !held_by_other.contains(s)));
            o.extend(all.iter().copied().filter(|s| held_by_other.contains(s)));
            o
        }
    };
    let lease = etcd
        .lease_grant(me.lease_ttl)
        .await
        .context("creating the subnet's lease in etcd")?
        .id;
    for s in order {
        let k = key(s);
        let compare = match taken.get(&s) {
            None => CompareTarget::Create(0),
            Some((rev, _)) if mine(&s) => CompareTarget::Mod(*rev),
            Some((_, r)) => {
                if let Want::Exact(_) = want {
                    let _ = etcd.lease_revoke(lease).await;
                    let who = r.as_ref().map(|r| r.host.as_str()).unwrap_or("?");
                    bail!(
                        "the subnet {s}/{HOST_PREFIX} is held by host {who} (key {k} in etcd): \
                         give this host another --subnet, or none to get a free one"
                    );
                }
                continue;
            }
        };
        let value = me.record(s).to_json();
        let txn = TxnRequest {
            compare: vec![Compare::new(k.clone(), CompareResult::Equal, compare)],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: k.into_bytes(),
                    value,
                    lease,
                    prev_kv: false,
                }),
                RequestOp::Put(PutRequest {
                    key: held_key(s).into_bytes(),
                    value: me.host.clone().into_bytes(),
                    lease: 0,
                    prev_kv: false,
                }),
            ],
            failure: vec![],
        };
        let t = etcd
            .txn(&txn)
            .await
            .with_context(|| format!("claiming the subnet {s}/{HOST_PREFIX} in etcd"))?;
        if t.succeeded {
            return Ok(Claimed { subnet: s, lease });
        }
        if let Want::Exact(_) = want {
            let _ = etcd.lease_revoke(lease).await;
            bail!("the subnet {s}/{HOST_PREFIX} was just claimed by another host");
        }
    }
    let _ = etcd.lease_revoke(lease).await;
    bail!(
        "no free /{HOST_PREFIX} left in the cluster subnet {}/{} ({} hosts hold one): give a \
         larger --cluster-subnet",
        cluster.0,
        cluster.1,
        taken.len()
    )
}

/// The other hosts, as the prefix holds them now, and the revision read.
pub async fn peers(etcd: &Client, backend: Backend) -> Result<(Vec<Peer>, i64)> {
    let snap = etcd.range(&RangeRequest::prefix(PREFIX)).await?;
    let mut out = Vec::new();
    for kv in &snap.kvs {
        let (Some(subnet), Some(r)) = (parse_key(&kv.key), HostRecord::from_json(&kv.value)) else {
            // Debug, not warn: the prefix is read every 30 s at least.
            tracing::debug!(
                key = %String::from_utf8_lossy(&kv.key),
                "overlay: an unreadable subnet entry in etcd is left out"
            );
            continue;
        };
        if r.backend != backend_name(backend) {
            tracing::debug!(
                host = %r.host,
                "overlay: host uses the {} backend, this one {}: it is left out",
                r.backend,
                backend_name(backend)
            );
            continue;
        }
        out.push(Peer {
            subnet,
            prefix: HOST_PREFIX,
            public_ip: r.public_ip,
            vtep_mac: r.vtep_mac,
        });
    }
    Ok((out, snap.header.revision))
}

/// What the host role needs to run the overlay: set up by [`prepare`] before the agent starts,
/// then [`Running::spawn`]ed.
pub struct Running {
    etcd: Client,
    cluster: (Ipv4Addr, u8),
    me: Me,
    claimed: Claimed,
    cfg: OverlayConfig,
}

fn remembered_path(host_dir: &Path) -> PathBuf {
    host_dir.join("overlay-subnet")
}

/// With `--overlay`: claims this host's /24 and puts it, and the overlay settings, into the
/// runtime's configuration. `None` without `--overlay`.
pub async fn prepare(
    config: &Config,
    runc: &mut RuncConfig,
    host_id: &str,
) -> Result<Option<Running>> {
    let crate::args::Overlay::On(backend) = config.args.overlay else {
        return Ok(None);
    };
    let etcd = config.etcd.clone().context(
        "--overlay needs --etcd: the hosts' subnets are allocated there (use --overlay none \
         with a static --subnet otherwise)",
    )?;
    let cluster =
        NetworkConfig::parse_subnet(&config.args.cluster_subnet).context("--cluster-subnet")?;
    candidates(cluster)?;
    let net = &runc.network;
    let want = if net.prefix == HOST_PREFIX {
        if !inside(net.subnet, cluster) {
            bail!(
                "--subnet {}: with --overlay a host's subnet is a /24 inside --cluster-subnet {}/{}",
                net.cidr(),
                cluster.0,
                cluster.1
            );
        }
        Want::Exact(net.subnet)
    } else {
        let remembered = std::fs::read_to_string(remembered_path(&runc.data_dir))
            .ok()
            .and_then(|t| NetworkConfig::parse_subnet(t.trim()).ok())
            .filter(|(_, p)| *p == HOST_PREFIX)
            .map(|(s, _)| s);
        Want::Any(remembered)
    };
    let public_ip = match config.args.overlay_ip {
        Some(ip) => ip,
        None => default_public_ip(config).context(
            "no address for the overlay: give --overlay-ip (the address other hosts reach this \
             one at)",
        )?,
    };
    let me = Me {
        host: host_id.to_string(),
        public_ip,
        backend,
        lease_ttl: config.args.overlay_lease_ttl,
    };
    let claimed = claim(&etcd, cluster, want, &me).await?;
    std::fs::create_dir_all(&runc.data_dir)?;
    let path = remembered_path(&runc.data_dir);
    std::fs::write(&path, format!("{}/{HOST_PREFIX}\n", claimed.subnet))
        .with_context(|| format!("writing {}", path.display()))?;
    runc.network.subnet = claimed.subnet;
    runc.network.prefix = HOST_PREFIX;
    let mut cfg = OverlayConfig::new(backend, &runc.network, cluster, public_ip)?;
    // Known before the agent's host setup re-creates its nft table (see `initial_peers`).
    cfg.initial_peers = match peers(&etcd, backend).await {
        Ok((all, _)) => all
            .into_iter()
            .map(|p| p.public_ip)
            .filter(|ip| *ip != public_ip)
            .collect(),
        Err(e) => {
            tracing::warn!("overlay: reading the other hosts: {e}");
            Vec::new()
        }
    };
    tracing::info!(
        host = host_id,
        "overlay ({}): this host's jobs are in {}/{HOST_PREFIX} of {}/{}, reached at {public_ip}, \
         MTU {}",
        backend_name(backend),
        claimed.subnet,
        cluster.0,
        cluster.1,
        cfg.mtu
    );
    runc.overlay = Some(cfg.clone());
    Ok(Some(Running {
        etcd,
        cluster,
        me,
        claimed,
        cfg,
    }))
}

/// Discovery's DNS on the jobs' bridge of a host whose process runs no discovery role: with the
/// overlay its jobs reach every host's jobs, so they resolve every job's name too, read from
/// the registry in etcd (as the discovery role's DNS does). `--dns-listen auto` only; the
/// gateway, or `None` (containers keep the host's resolv.conf) when it cannot start.
pub async fn start_dns(
    config: &Config,
    registry: std::sync::Arc<dyn slipway_discovery::Registry>,
    net: &NetworkConfig,
) -> Option<Ipv4Addr> {
    use slipway_discovery::dns;
    if config.args.routing.dns_listen != crate::args::DnsListen::Auto {
        return None;
    }
    let n = net.clone();
    match tokio::task::spawn_blocking(move || slipway_host::runc::network::setup_host(&n)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("overlay DNS: off, the jobs' bridge cannot be set up: {e:#}");
            return None;
        }
        Err(e) => {
            tracing::warn!("overlay DNS: off: {e}");
            return None;
        }
    }
    let upstream = config.args.routing.dns_upstream.or_else(dns::host_resolver);
    let addr = std::net::SocketAddr::new(net.gateway().into(), 53);
    match dns::serve(dns::DnsHandler::new(registry, upstream), addr).await {
        Ok(bound) => {
            tracing::info!("discovery DNS (from etcd) on {bound} for this host's jobs");
            Some(net.gateway())
        }
        Err(e) => {
            tracing::warn!(
                "overlay DNS: cannot listen on {addr}: {e}; containers use the host's /etc/resolv.conf"
            );
            None
        }
    }
}

/// `--host-listen`'s IPv4 address when it is a real one, else the default route's source.
fn default_public_ip(config: &Config) -> Option<Ipv4Addr> {
    let listen = config.args.host_listen.map(|a| a.ip());
    if let Some(std::net::IpAddr::V4(ip)) = listen
        && !ip.is_unspecified()
        && !ip.is_loopback()
    {
        return Some(ip);
    }
    match crate::controller::route_source(false)? {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    }
}

impl Running {
    /// Keeps the lease alive and follows the other hosts, for as long as the process runs.
    pub fn spawn(self) {
        let Running {
            etcd,
            cluster,
            me,
            claimed,
            cfg,
        } = self;
        tokio::spawn(keep(etcd.clone(), cluster, me.clone(), claimed));
        tokio::spawn(follow(etcd, cfg, me.backend));
    }
}

/// Renews the subnet's lease every third of its TTL, and checks that the key is still this
/// host's under that lease. A lease that expired anyway (etcd unreachable for longer), or a
/// key put under another lease (a process with this host's id that started and died), is
/// replaced: the key claimed again for the same /24.
async fn keep(etcd: Client, cluster: (Ipv4Addr, u8), me: Me, mut claimed: Claimed) {
    loop {
        tokio::time::sleep(Duration::from_secs_f64(me.lease_ttl as f64 / 3.0)).await;
        match etcd.lease_keep_alive(claimed.lease).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                subnet = %claimed.subnet,
                "overlay: the subnet's lease expired; claiming the subnet again"
            ),
            Err(e) => {
                tracing::warn!("overlay: renewing the subnet's lease: {e}");
                continue;
            }
        }
        match etcd.get(key(claimed.subnet)).await {
            Ok(Some(kv)) if kv.lease == claimed.lease => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("overlay: reading the subnet's key: {e}");
                continue;
            }
        }
        match claim(&etcd, cluster, Want::Exact(claimed.subnet), &me).await {
            Ok(c) => {
                tracing::info!(subnet = %c.subnet, "overlay: the subnet's key is this host's again");
                // The old lease, if it still lives, holds nothing now.
                let _ = etcd.lease_revoke(claimed.lease).await;
                claimed = c;
            }
            Err(e) => tracing::error!(
                "overlay: this host lost its subnet {}: {e:#}. Its jobs cannot be reached from \
                 other hosts until it is restarted",
                claimed.subnet
            ),
        }
    }
}

/// Reads the prefix, syncs the kernel, waits for a change (or [`RESYNC`]), again.
async fn follow(etcd: Client, cfg: OverlayConfig, backend: Backend) {
    let mut last_error = String::new();
    loop {
        let (peers, rev) = match peers(&etcd, backend).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("overlay: reading the hosts' subnets: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let c = cfg.clone();
        let synced = tokio::task::spawn_blocking(move || overlay::sync(&c, &peers))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        match synced {
            Ok(plan) => {
                last_error.clear();
                if !plan.is_empty() {
                    tracing::info!(
                        "overlay: {} routes added, {} removed",
                        plan.add.routes.len(),
                        plan.remove.routes.len()
                    );
                }
            }
            Err(e) => {
                // Said once while it lasts; tried again soon, not at the next change.
                let e = format!("{e:#}");
                if e != last_error {
                    tracing::warn!("overlay: syncing the kernel's entries: {e}");
                }
                last_error = e;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        }
        let watch = etcd.watch(&WatchRequest::prefix(PREFIX, rev + 1)).await;
        match watch {
            Ok(mut w) => {
                tokio::select! {
                    r = w.next() => {
                        if let Err(e) = r {
                            tracing::debug!("overlay: watch ended: {e}");
                        }
                        // Hosts often come in groups: one sync for them.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ = tokio::time::sleep(RESYNC) => {}
                }
            }
            Err(e) => {
                tracing::warn!("overlay: watching the hosts' subnets: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_candidates() {
        let s = Ipv4Addr::new(100, 100, 3, 0);
        assert_eq!(key(s), "/slipway/network/subnets/100.100.3.0-24");
        assert_eq!(parse_key(key(s).as_bytes()), Some(s));
        assert_eq!(parse_key(b"/slipway/network/subnets/100.100.3.0-16"), None);
        assert_eq!(parse_key(b"/other/100.100.3.0-24"), None);
        assert_eq!(parse_key(b"/slipway/network/subnets/100.100.3.5-24"), None);
        assert_eq!(
            parse_key(b"/slipway/network/subnets/100.100.3.0-24\n"),
            None
        );
        let c = candidates((Ipv4Addr::new(100, 100, 0, 0), 16)).unwrap();
        assert_eq!(c.len(), 256);
        assert_eq!(c[1], Ipv4Addr::new(100, 100, 1, 0));
        assert_eq!(c[255], Ipv4Addr::new(100, 100, 255, 0));
        assert_eq!(
            candidates((Ipv4Addr::new(10, 0, 0, 0), 24)).unwrap(),
            [Ipv4Addr::new(10, 0, 0, 0)]
        );
        assert!(candidates((Ipv4Addr::new(10, 0, 0, 0), 25)).is_err());
        assert!(inside(s, (Ipv4Addr::new(100, 100, 0, 0), 16)));
        assert!(!inside(s, (Ipv4Addr::new(100, 101, 0, 0), 16)));
    }

    #[test]
    fn corrupt_records_are_refused() {
        let good = me("h1", 1).record(Ipv4Addr::new(100, 100, 3, 0));
        assert_eq!(HostRecord::from_json(&good.to_json()), Some(good.clone()));
        let with = |k: &str, v: serde_json::Value| {
            let mut j: serde_json::Value = serde_json::from_slice(&good.to_json()).unwrap();
            j[k] = v;
            HostRecord::from_json(j.to_string().as_bytes())
        };
        for (k, v) in [
            ("vtep_mac", "02:42:64:64:03:00\nfdb flush dev eth0".into()),
            ("vtep_mac", "ff:ff:ff:ff:ff:ff".into()),
            ("public_ip", "10.0.0.1\nroute flush all".into()),
            ("public_ip", "10.0.0".into()),
            ("host", "".into()),
            ("host", "h\n1".into()),
            ("host", "h".repeat(200).into()),
            ("backend", "gre".into()),
            ("host", serde_json::json!(7)),
        ] {
            assert_eq!(with(k, v.clone()), None, "{k}: {v}");
        }
        // Half-written and oversized values.
        assert_eq!(HostRecord::from_json(&good.to_json()[..20]), None);
        let mut big = good.to_json();
        big.truncate(big.len() - 1);
        big.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(MAX_RECORD)).bytes());
        assert_eq!(HostRecord::from_json(&big), None);
    }

    fn me(host: &str, last: u8) -> Me {
        Me {
            host: host.into(),
            public_ip: Ipv4Addr::new(10, 0, 0, last),
            backend: Backend::Vxlan,
            lease_ttl: LEASE_TTL,
        }
    }

    const CLUSTER: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 64, 0, 0), 21);

    fn client(etcd: &slipway_testkit::etcd::EtcdCluster) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(&etcd.client_urls()).unwrap()
    }

    #[tokio::test]
    async fn hosts_racing_for_subnets_each_get_their_own_until_none_is_left() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let client = client(&etcd);
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move {
                    claim(&c, CLUSTER, Want::Any(None), &me(&format!("h{i}"), i)).await
                })
            })
            .collect();
        let mut got = std::collections::BTreeSet::new();
        for t in tasks {
            got.insert(t.await.unwrap().unwrap().subnet);
        }
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            candidates(CLUSTER).unwrap()
        );
        let e = claim(&client, CLUSTER, Want::Any(None), &me("h9", 9))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("no free /24"), "{e:#}");
        let (all, _) = peers(&client, Backend::Vxlan).await.unwrap();
        assert_eq!(all.len(), 8);
        let p3 = all
            .iter()
            .find(|p| p.public_ip == Ipv4Addr::new(10, 0, 0, 3))
            .unwrap();
        assert_eq!(p3.vtep_mac, overlay::vtep_mac(p3.subnet));
        assert!(peers(&client, Backend::HostGw).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_restarted_host_keeps_its_subnet_and_a_removed_one_releases_it() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let client = client(&etcd);
        let a = claim(&client, CLUSTER, Want::Any(None), &me("a", 1))
            .await
            .unwrap();
        let b = claim(&client, CLUSTER, Want::Any(None), &me("b", 2))
            .await
            .unwrap();
        assert_ne!(a.subnet, b.subnet);
        // A restart of b (key still there, naming it), even without its file: the same /24.
        let b2 = claim(&client, CLUSTER, Want::Any(None), &me("b", 2))
            .await
            .unwrap();
        assert_eq!(b2.subnet, b.subnet);
        // Another host asking for b's /24 by name is refused, naming b.
        let e = claim(&client, CLUSTER, Want::Exact(b.subnet), &me("c", 3))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("held by host b"), "{e:#}");
        // b is gone (its lease ends: what expiry does, e.g. while b was cut off from etcd).
        client.lease_revoke(b2.lease).await.unwrap();
        assert!(client.get(key(b.subnet)).await.unwrap().is_none());
        // A newcomer gets a /24 never held before, not b's (b's jobs may still have its
        // addresses: two hosts with one /24 would route each other's traffic to the wrong jobs).
        let all = candidates(CLUSTER).unwrap();
        let c = claim(&client, CLUSTER, Want::Any(None), &me("c", 3))
            .await
            .unwrap();
        assert_eq!(
            c.subnet, all[2],
            "a fresh /24, not the released {}",
            b.subnet
        );
        // So b, back, remembering its /24, gets it again.
        let b3 = claim(&client, CLUSTER, Want::Any(Some(b.subnet)), &me("b", 2))
            .await
            .unwrap();
        assert_eq!(b3.subnet, b.subnet);
        // b removed for good: its /24 goes to a newcomer once no fresh one is left.
        client.lease_revoke(b3.lease).await.unwrap();
        for (i, s) in all.iter().enumerate().take(7).skip(3) {
            let f = claim(
                &client,
                CLUSTER,
                Want::Any(None),
                &me(&format!("f{i}"), 20 + i as u8),
            )
            .await
            .unwrap();
            assert_eq!(f.subnet, *s);
        }
        let d = claim(&client, CLUSTER, Want::Any(None), &me("d", 4))
            .await
            .unwrap();
        assert_eq!(d.subnet, all[7]);
        let e = claim(&client, CLUSTER, Want::Any(None), &me("e", 5))
            .await
            .unwrap();
        assert_eq!(
            e.subnet, b.subnet,
            "the released /24 once no fresh one is left"
        );
        // b back now: its /24 is e's and none is left: a clear error.
        let err = claim(&client, CLUSTER, Want::Any(Some(b.subnet)), &me("b", 2))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no free /24"), "{err:#}");
        // a after its lease ended, remembering its /24, still free: the same one, with its
        // record under the new lease.
        client.lease_revoke(a.lease).await.unwrap();
        let a2 = claim(&client, CLUSTER, Want::Any(Some(a.subnet)), &me("a", 1))
            .await
            .unwrap();
        assert_eq!(a2.subnet, a.subnet);
        let kv = client.get(key(a.subnet)).await.unwrap().unwrap();
        assert_eq!(kv.lease, a2.lease);
        assert_eq!(
            HostRecord::from_json(&kv.value).unwrap(),
            me("a", 1).record(a.subnet)
        );
    }
}
