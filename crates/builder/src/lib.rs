//! Slipway's build pipeline (Flynn's slugbuilder): Heroku buildpack API v2 buildpacks run as a
//! one-off `build` job in a container on the app's stack; the built `/app` becomes a slug
//! (a tarball with paths under `app/`) in the blob store. See `docs/build.md`.
//!
//! - [`pipeline`]: [`pipeline::build`], the entry point the git receiver calls;
//! - `buildpack`: choosing and fetching buildpacks (bundled names, git URLs, `.buildpacks`);
//! - `slug`: copying the source (with `.slugignore`, see `slugignore`) and tarring the result;
//! - [`cache`]: the app's build cache, a filesystem of the cache limit;
//! - [`owner`]: whose build a build job is; the jobs of builds a dead process ran are stopped;
//! - [`scratch`]: the start-up sweep of the build scratch dirs a dead process left;
//! - `tree`: walks over users' trees without recursion, bounded in depth.

pub mod buildpack;
pub mod bundled;
pub mod cache;
pub mod metrics;
pub mod owner;
pub mod pipeline;
pub mod push;
pub mod receiver;
pub mod repo_sync;
pub mod runner;
pub mod scratch;
pub mod slug;
pub mod slugignore;
mod transfer;
pub mod tree;

pub use pipeline::{
    BuildContext, BuildError, BuildInput, BuildLimits, Built, JobExit, JobRunner, RunnerError,
    app_stack, build,
};
