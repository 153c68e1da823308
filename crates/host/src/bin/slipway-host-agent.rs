//! `slipway-host-agent`: the same commands as `slipway host …` (daemon, run-job, ps, stop,
//! signal, log, status, stack build, shim) in a binary that has only the host agent in it. The
//! host crate's tests use it to `kill -9` and restart an agent, and it is a lean shim executable.

#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "slipway-host-agent", version, about = "Slipway's host agent")]
struct Cli {
    #[command(flatten)]
    host: slipway_host::cli::HostArgs,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable message (with its causes), no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // The shim runs without an async runtime: it must stay small (one per job). The agent
    // starts it as `<this exe> host shim DIR`, like with the `slipway` binary.
    slipway_host::shim::run_if_shim_invocation();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        let dir = args.get(2).expect("usage: slipway-host-agent shim DIR");
        slipway_host::shim::main(std::path::Path::new(dir));
    }
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(slipway_host::cli::run(cli.host))
}
