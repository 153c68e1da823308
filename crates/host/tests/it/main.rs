//! Integration tests of the host agent. The runc tests need root and say so when skipped.
mod api;
mod attach;
mod cleanup;
mod cli;
mod disk;
mod harness;
mod job_files;
mod layers;
mod netfilter;
mod privileges;
mod restart;
mod runc;
mod runtime;
mod slow;
