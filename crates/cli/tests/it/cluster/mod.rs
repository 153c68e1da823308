//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`), several routers and one
//! zero-downtime gate (`routers`), moving a host's
//! jobs off it under load (`drain`), and the whole cluster on a real 3-member etcd (`etcd`).

mod drain;
mod etcd;
mod identity;
mod join;
mod routers;
mod scheduling;
