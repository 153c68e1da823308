//! Integration tests of the build pipeline: real runc build jobs through the real scheduler,
//! on the busybox stack (bookworm + PyPI under `SLIPWAY_SLOW_TESTS=1`). They need root and say
//! so when skipped.

mod anyhost;
mod deep;
mod harness;
mod hostile;
mod pipeline;
mod receiver;
mod repo_sync;
mod sandbox;
mod slow;
