//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`), several routers and one
//! zero-downtime gate (`routers`), and the whole cluster on a real 3-member etcd (`etcd`).

mod etcd;
mod identity;
#[allow(dead_code)] // a harness for the cluster tests: not every test uses every part
pub mod lan;
mod netns;
mod overlay;
mod routers;
mod scheduling;
