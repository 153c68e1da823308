//! Hostile tests: listeners (see mod.rs).
