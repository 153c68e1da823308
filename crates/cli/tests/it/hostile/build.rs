//! Hostile tests: build (see mod.rs).
