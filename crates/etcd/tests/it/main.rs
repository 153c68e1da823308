//! slipway-etcd against a real etcd started by testkit.

mod client;
mod election;
mod failover;
