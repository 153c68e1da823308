//! Who may send what on the jobs' bridge: an nftables `bridge` family table (named like the
//! agent's `ip` table, so parallel agents never share one) that checks every frame a job's veth
//! sends, before the bridge forwards it or hands it to the host:
//!
//! - its Ethernet source must be the job's MAC, its IPv4 source the job's IP, and an ARP packet's
//!   sender hardware and protocol addresses the same pair: one job cannot claim another's IP
//!   (gratuitous ARP moved the host's neighbour entry and captured the other app's requests);
//! - only IPv4 and ARP pass: jobs have no IPv6 address, and IPv6 link-local addresses would
//!   reach other jobs' `::` listeners past every IPv4 rule;
//! - traffic *to* a job of a network-isolated app passes only when it comes from a job of the
//!   same app (the host — router, health checks — sends through the bridge's own port, which
//!   these hooks never see). Checked at `prerouting`, so a frame sent to the gateway's MAC to
//!   be routed back onto the bridge is judged too; and again at `forward` by the port it leaves
//!   through, for the frames the bridge floods to every port whatever their IP (multicast,
//!   broadcast: another app's UDP to 224.0.0.1 reached the isolated app's listeners).
//!
//! The checks are sets and maps keyed by the host-side veth name (or the job's IP); a job adds
//! its elements in one `nft -f -` batch while its netns is created, and removes them at cleanup. Without
//! `meta ibrname` (not in every kernel) the table cannot tell this bridge's ports from another
//! agent's, so only listed veths are checked: a job starts only after its elements are in.
//! nftables' bridge family needs no `br_netfilter`.

use super::network::{NetworkConfig, mac_for, run};
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// What one job's port is allowed to send, and the isolation group it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRules {
    pub veth: String,
    pub ip: Ipv4Addr,
    /// `Some(group)`: the job's app is network-isolated; only jobs of the same group (and the
    /// host) may reach it. The group is [`group_for`] of the app.
    pub group: Option<String>,
}

/// An nft identifier for an isolation group: `g` + 16 hex digits of the app id's FNV-1a hash
/// (app ids are UUIDs; any string works).
pub fn group_for(app_id: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in app_id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("g{h:016x}")
}

/// The table's definition: replaces whatever the table held (the caller re-adds the elements of
/// jobs it adopts). Part of the host setup batch.
///
/// On an overlay ([`super::overlay`]) the `output` chain judges what the host itself sends onto
/// the bridge that came from another host's job (routed in from the overlay: a source in the
/// cluster subnet, not this host's, and not a host's own overlay address, `.0` or `.1` of its
/// /24): an isolated app's jobs are not reachable from jobs of other hosts, not even its own
/// (their group membership is known only to their host), while other hosts' routers (which
/// send from their `.0`) still reach them.
pub fn table_rules(cfg: &NetworkConfig, overlay: Option<&super::overlay::OverlayConfig>) -> String {
    let t = &cfg.nft_table;
    let output = match overlay {
        None => String::new(),
        Some(o) => {
            let host_bits = if o.prefix >= 31 {
                0
            } else {
                !(u32::MAX << (32 - o.prefix)) & !1
            };
            format!(
                "chain output {{ type filter hook output priority filter; policy accept;\n\
                   ether type ip ip saddr {cluster} ip saddr != {own} \
                 ip saddr & {mask} != 0.0.0.0 ip daddr vmap @isolated\n\
                 }}\n",
                cluster = o.cluster_cidr(),
                own = cfg.cidr(),
                mask = Ipv4Addr::from(host_bits),
            )
        }
    };
    format!(
        "add table bridge {t}\ndelete table bridge {t}\ntable bridge {t} {{\n\
         set ports {{ type ifname; }}\n\
         set port_mac {{ type ifname . ether_addr; }}\n\
         set port_ip {{ type ifname . ipv4_addr; }}\n\
         map isolated {{ type ipv4_addr : verdict; }}\n\
         map isolated_ports {{ type ifname : verdict; }}\n\
         chain prerouting {{ type filter hook prerouting priority filter; policy accept;\n\
           iifname != @ports accept\n\
           iifname . ether saddr != @port_mac drop\n\
           ether type arp iifname . arp saddr ether != @port_mac drop\n\
           ether type arp iifname . arp saddr ip != @port_ip drop\n\
           ether type ip iifname . ip saddr != @port_ip drop\n\
           ether type != {{ ip, arp }} drop\n\
           ether type ip ip daddr vmap @isolated\n\
         }}\n\
         chain forward {{ type filter hook forward priority filter; policy accept;\n\
           ether type ip oifname vmap @isolated_ports\n\
         }}\n{output}}}\n"
    )
}

/// The elements (and, for an isolated app, its group's set and chain) of one port, as `add`
/// commands: idempotent, so the removal batch can start with them too.
fn add_commands(cfg: &NetworkConfig, p: &PortRules) -> String {
    let (t, v, ip, mac) = (&cfg.nft_table, &p.veth, p.ip, mac_for(p.ip));
    let mut s = String::new();
    if let Some(g) = &p.group {
        s += &format!(
            "add set bridge {t} {g} {{ type ipv4_addr; }}\n\
             add chain bridge {t} {g}\nflush chain bridge {t} {g}\n\
             add rule bridge {t} {g} ip saddr @{g} return\nadd rule bridge {t} {g} drop\n\
             add element bridge {t} {g} {{ {ip} }}\n\
             add element bridge {t} isolated {{ {ip} : jump {g} }}\n\
             add element bridge {t} isolated_ports {{ \"{v}\" : jump {g} }}\n"
        );
    }
    s += &format!(
        "add element bridge {t} port_mac {{ \"{v}\" . {mac} }}\n\
         add element bridge {t} port_ip {{ \"{v}\" . {ip} }}\n\
         add element bridge {t} ports {{ \"{v}\" }}\n"
    );
    s
}

/// Starts the `nft` batch that adds a port's rules; [`wait`] for it. Started before the veth
/// exists (the sets are keyed by name), so it overlaps with the netns setup.
pub fn spawn_add(cfg: &NetworkConfig, p: &PortRules) -> Result<Child> {
    use std::io::Write;
    // Written whole before the netns work starts: a batch is a few hundred bytes, far below
    // the pipe's buffer, so this never blocks on nft.
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not run nft; is it installed? (scripts/install-deps)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(add_commands(cfg, p).as_bytes())?;
    Ok(child)
}

/// Waits for [`spawn_add`]'s batch.
pub fn wait(child: Child) -> Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "installing the job's bridge filter with nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Adds the rules of many ports in one batch (the jobs a restarted agent adopts, after the
/// table was re-created).
pub fn add_all(cfg: &NetworkConfig, ports: &[PortRules]) -> Result<()> {
    let batch: String = ports.iter().map(|p| add_commands(cfg, p)).collect();
    run("nft", &["-f", "-"], Some(&batch))
        .context("installing the adopted jobs' bridge filter with nft")?;
    Ok(())
}

/// Removes a port's rules; a no-op for rules that are not there (the batch adds them first:
/// nft 1.0.6 has no `destroy`). The group's set and chain go with its last job.
pub fn remove(cfg: &NetworkConfig, p: &PortRules) {
    let t = &cfg.nft_table;
    let (v, ip, mac) = (&p.veth, p.ip, mac_for(p.ip));
    let mut s = add_commands(cfg, p);
    s += &format!(
        "delete element bridge {t} ports {{ \"{v}\" }}\n\
         delete element bridge {t} port_mac {{ \"{v}\" . {mac} }}\n\
         delete element bridge {t} port_ip {{ \"{v}\" . {ip} }}\n"
    );
    if let Some(g) = &p.group {
        s += &format!(
            "delete element bridge {t} isolated {{ {ip} }}\n\
             delete element bridge {t} isolated_ports {{ \"{v}\" }}\n\
             delete element bridge {t} {g} {{ {ip} }}\n"
        );
    }
    if let Err(e) = run("nft", &["-f", "-"], Some(&s)) {
        tracing::warn!(veth = %p.veth, "removing the job's bridge filter: {e:#}");
        return;
    }
    if let Some(g) = &p.group {
        // Fails (and changes nothing) while another job of the group still jumps to the chain.
        let _ = run(
            "nft",
            &["-f", "-"],
            Some(&format!(
                "delete chain bridge {t} {g}\ndelete set bridge {t} {g}\n"
            )),
        );
    }
}

/// Removes the whole table (host teardown).
pub fn teardown(cfg: &NetworkConfig) {
    let _ = run("nft", &["delete", "table", "bridge", &cfg.nft_table], None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_nft_identifiers_and_stable() {
        let g = group_for("5f0c7d4e-1a2b-4c3d-8e9f-001122334455");
        assert_eq!(g.len(), 17);
        assert!(g.starts_with('g') && g[1..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(g, group_for("5f0c7d4e-1a2b-4c3d-8e9f-001122334455"));
        assert_ne!(g, group_for("another"));
    }

    #[test]
    fn a_port_is_bound_to_its_mac_and_ip() {
        let cfg = NetworkConfig::default();
        let p = PortRules {
            veth: "vsw0123456789".into(),
            ip: Ipv4Addr::new(100, 100, 0, 7),
            group: None,
        };
        let s = add_commands(&cfg, &p);
        assert!(!table_rules(&cfg, None).contains("output"));
        assert!(
            s.contains("port_mac { \"vsw0123456789\" . 02:42:64:64:00:07 }"),
            "{s}"
        );
        assert!(
            s.contains("port_ip { \"vsw0123456789\" . 100.100.0.7 }"),
            "{s}"
        );
        assert!(!s.contains("isolated"), "{s}");
    }
}
