//! Slipway's way in for Docker/OCI images, with no Docker engine on the server:
//!
//! - [`server`]: the registry v2 push/pull subset on the controller's port (repository = app),
//!   blobs into the blob store verified by digest, manifests into artifacts;
//! - [`deploy`]: an image manifest + config → Artifact, Release (process type `app`, env merged
//!   under the user's, `PORT`) and Deployment;
//! - [`local`]: `docker save` archives and OCI image layouts (directory or tar) read in place;
//! - [`client`]: the push side of the same protocol (`slipway image push`), uploading only the
//!   blobs the server lacks.
//!
//! `spec` holds the media types and JSON shapes both ends share.

#![forbid(unsafe_code)]

pub mod client;
pub mod deploy;
pub mod error;
pub mod local;
mod manifests;
pub mod metrics;
pub mod server;
pub mod spec;
pub mod testimage;
pub mod verify;

pub use error::RegistryError;
pub use manifests::NO_DEPLOY_TAG_PREFIX;
pub use server::{Registry, Stats, router, with_api_version};
