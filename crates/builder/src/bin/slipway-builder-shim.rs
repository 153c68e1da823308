//! The per-job shim for the build crate's own tests: they run build jobs on an in-process host
//! agent, whose runc runtime starts a shim executable per job (the `slipway` binary is not built
//! by `cargo test -p slipway-builder`, so this crate ships the shim's two lines itself).

#![forbid(unsafe_code)]

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .expect("usage: slipway-builder-shim CONTAINER_DIR");
    slipway_host::shim::main(std::path::Path::new(&dir));
}
