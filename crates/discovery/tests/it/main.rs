//! Discovery conformance: every case runs on the in-process registry and over HTTP/SSE.

mod access;
mod dns;
mod suite;
