//! Slipway's host agent (Flynn's `flynn-host`): turns a job description into a running,
//! isolated, limited, observable runc container, and reports on it.
//!
//! - [`Runtime`](runtime::Runtime): [`runc::RuncRuntime`] (real) and [`fake::FakeRuntime`].
//! - [`Agent`]: job table, stop with grace, health checks, events, persistence and re-adoption.
//! - [`HostApi`]: implemented by [`Agent`] (in-process) and [`client::HttpHost`] (HTTP);
//!   [`http::router`] serves any `HostApi` over HTTP.
//! - [`shim`]: the per-job process that keeps jobs, their logs and exit codes alive across agent
//!   restarts.
//! - [`stack`]: builds the `busybox` and `bookworm` stacks.
//!
//! Embedding: see [`daemon::run`] for the whole agent (runtime + API server) in one call.

pub mod agent;
pub mod api;
pub mod attach;
mod attach_shim;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod fake;
pub mod health;
pub mod http;
pub mod job_files;
pub mod layers;
pub mod logs;
pub mod runc;
pub mod runtime;
pub mod shim;
pub mod stack;
pub mod types;
pub mod user;

pub use agent::{Agent, AgentConfig};
pub use api::{HostApi, HostError, HostResult};
pub use types::*;
