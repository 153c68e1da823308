//! `slipway host …`: the host agent's daemon and debugging commands (`daemon`, `run-job`, `ps`,
//! `inspect`, `stop`, `signal`, `log`, `status`, `stack build|list`). They live in
//! `slipway_host::cli` so that `slipway host` and the standalone `slipway-host-agent` binary offer
//! exactly the same commands.

/// Arguments of `slipway host`.
pub use slipway_host::cli::HostArgs;

pub async fn run(args: HostArgs) -> anyhow::Result<()> {
    slipway_host::cli::run(args).await
}
