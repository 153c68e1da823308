//! A standalone host agent binary: `slipway-host-agent shim DIR` (the per-job shim) and
//! `slipway-host-agent daemon [options]` (runc runtime + agent + HTTP API). The `slipway` binary
//! offers the same as `slipway host …`; this one exists so the host crate can test agent
//! restarts and `kill -9` on its own, and as a lean shim executable.
//!
//! daemon options: --data-dir DIR --listen ADDR --bridge NAME --subnet CIDR --nft-table NAME
//! --cgroup-parent NAME --stacks-dir DIR. It prints `listening on ADDR` once ready.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shim") => {
            let dir = args.get(2).expect("usage: slipway-host-agent shim DIR");
            slipway_host::shim::main(&PathBuf::from(dir))
        }
        Some("daemon") => daemon(&args[2..]),
        _ => anyhow::bail!(
            "usage: slipway-host-agent shim DIR | daemon [--data-dir DIR --listen ADDR ...]"
        ),
    }
}

fn daemon(args: &[String]) -> anyhow::Result<()> {
    use slipway_host::runc::{RuncConfig, network::NetworkConfig};
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let data_dir =
        PathBuf::from(opt("--data-dir").unwrap_or_else(|| "/var/lib/slipway/host".into()));
    let mut rc = RuncConfig::new(&data_dir);
    rc.shim_command = vec![std::env::current_exe()?.into(), "shim".into()];
    let mut net = NetworkConfig::default();
    if let Some(b) = opt("--bridge") {
        net.bridge = b;
    }
    if let Some(s) = opt("--subnet") {
        (net.subnet, net.prefix) = NetworkConfig::parse_subnet(&s)?;
    }
    if let Some(t) = opt("--nft-table") {
        net.nft_table = t;
    }
    rc.network = net;
    if let Some(c) = opt("--cgroup-parent") {
        rc.cgroup_parent = c;
    }
    if let Some(s) = opt("--stacks-dir") {
        rc.stacks_dir = s.into();
    }
    let listen = opt("--listen")
        .unwrap_or_else(|| "127.0.0.1:1113".into())
        .parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let host = slipway_host::daemon::start(
            rc,
            slipway_host::AgentConfig::new(&data_dir),
            Some(listen),
        )
        .await?;
        println!("listening on {}", host.addr.expect("listening"));
        host.serve_forever().await
    })
}
