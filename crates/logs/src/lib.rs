//! Slipway's log aggregator (Flynn's `logaggregator`, but kept on disk): every line of every
//! logged job, per app, from the host agents; a bounded history per app that survives a restart;
//! follow with no gap and no duplicate at the seam; the `GET /apps/{app}/log` API.
//!
//! - [`disk`]: one app's history, append-only segment files with rotation.
//! - [`aggregator`]: the histories, live followers, per-job resume points.
//! - [`ingest`]: following hosts through `HostApi` (in-process or HTTP).
//! - [`http`]: the API route.
//! - [`sink`]: per-app syslog sinks (RFC 5424 over TCP).

#![forbid(unsafe_code)]

pub mod aggregator;
pub mod disk;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod sink;

pub use aggregator::{Aggregator, Config, MAX_LINE, Query, Source};
pub use disk::Retention;
pub use ingest::{follow_host, is_logged};
