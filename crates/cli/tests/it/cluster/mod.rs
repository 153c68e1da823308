//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`), and the whole cluster on a
//! real 3-member etcd (`etcd`).

mod etcd;
mod identity;
mod scheduling;
