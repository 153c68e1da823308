//! Hostile tests: api (see mod.rs).
