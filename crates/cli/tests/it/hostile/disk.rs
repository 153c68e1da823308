//! Hostile tests: disk (see mod.rs).
