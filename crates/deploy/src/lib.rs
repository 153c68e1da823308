//! Deploying, in one place (Flynn's controller worker): how a release is made from a slug or an
//! image ([`release`], pure), how a deployment moves an app's formation to it ([`executor`]),
//! and how a push waits for that, including the first-deploy rule ([`wait`]).
//!
//! The git receiver (`slipway-builder`) and the registry (`slipway-registry`) both deploy
//! through here, so a `git push` and an image push get the same health check, the same
//! first-deploy rule and the same failure threshold. This crate works only through the
//! [`Store`](slipway_store::Store): it writes formations and deployments and reads job rows; the
//! scheduler (which it does not know) turns formations into jobs.

#![forbid(unsafe_code)]

pub mod executor;
pub mod release;
pub mod wait;

pub use executor::{CLAIM_TTL, Deployer, DeployerConfig, FAILURE_THRESHOLD, INTERRUPTED};
pub use release::default_check;
pub use wait::{DeployError, Deployed, Started, deploy_and_wait, start};
