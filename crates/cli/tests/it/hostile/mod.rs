//! The hostile suite: one regression test per finding of the hardening review (issue 14), each
//! run against a live `slipway server` with real runc, real git and real sockets. Every test here
//! failed on the code before its fix; the closing note of the change says how.
//!
//! `HostServer` numbers (`n`) per file, so tests running at once never share a bridge, subnet,
//! nft table or cgroup parent: build 3000-3049, container 3050-3099, network 3100-3149,
//! disk 3150-3199, api 3200-3249, listeners 3250-3299.

mod api;
mod build;
mod container;
mod disk;
mod listeners;
mod network;
