//! Hostile tests: network (see mod.rs).
