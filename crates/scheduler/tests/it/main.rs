//! Scheduler tests over several fake hosts: real agents on the in-memory runtime, a real SQLite
//! store, the real reconcile loop. What they assert is what users see: job rows in the store.

mod cluster;
mod deploy;
mod gate;
mod harness;
mod multi_host;
