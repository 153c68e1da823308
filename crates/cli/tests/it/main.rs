//! End-to-end tests that drive the real `slipway` binary.
mod blobs;
mod cli;
mod dns;
mod host;
mod hostile;
mod housekeeping;
mod images;
mod logs;
mod push;
mod push_slow;
mod push_submodules;
mod roles;
mod routing;
mod run;
mod scheduler;
mod support;
mod zero_downtime;
