//! The `slipway` CLI against a live `slipway server` (one per test): Flynn's verbs and output
//! lines, errors and exit codes, the config file and the git remote.

mod apps;
mod cluster;
mod misc;
mod releases;
mod routes;
