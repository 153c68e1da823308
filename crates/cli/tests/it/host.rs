//! Host agent end-to-end tests (real runc).
