//! Several `slipway server` processes as one cluster: shared identity (`identity`), and hosts,
//! schedulers and their leader across processes (`scheduling`).

mod identity;
mod scheduling;
