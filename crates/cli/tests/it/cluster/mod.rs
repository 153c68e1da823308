//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`), several routers and one
//! zero-downtime gate (`routers`), moving a host's jobs off it
//! under load (`drain`), joining with the cluster token (`join`), and the whole cluster on a real 3-member etcd (`etcd`).

mod drain;
mod drain_edges;
mod etcd;
mod identity;
mod join;
#[allow(dead_code)] // a harness for the cluster tests: not every test uses every part
pub mod lan;
mod net_bench;
mod netns;
mod overlay;
mod partition;
mod routers;
mod scheduling;
