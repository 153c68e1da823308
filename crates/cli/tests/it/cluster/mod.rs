//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`), several routers and one
//! zero-downtime gate (`routers`).

mod identity;
mod routers;
mod scheduling;
