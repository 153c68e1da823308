//! `slipway host …`: the host agent's daemon and debugging commands (owned by the host-agent work).

/// Arguments of `slipway host`.
#[derive(clap::Args, Debug)]
pub struct HostArgs {}

pub async fn run(_args: HostArgs) -> anyhow::Result<()> {
    anyhow::bail!("the host agent is not built yet")
}
