//! Integration tests of the host agent. The runc tests need root and say so when skipped.
mod harness;
mod runc;
