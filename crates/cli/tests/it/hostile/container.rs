//! Hostile tests: container (see mod.rs).
