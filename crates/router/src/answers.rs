//! The words of the router's own answers, in one place for both HTTP/1.1 paths (`h1` and
//! hyper's `proxy`): a client gets the same text whichever path took its request.

use crate::Limits;
use std::time::Duration;

/// 400: an HTTP/1.1 request needs exactly one Host (RFC 9112 §3.2).
pub fn host_count(hosts: usize) -> String {
    if hosts == 0 {
        "400 Bad Request: an HTTP/1.1 request needs a Host header\n".into()
    } else {
        "400 Bad Request: more than one Host header\n".into()
    }
}

pub fn no_route(host: &str, path: &str) -> String {
    format!("404 Not Found: no route for {host}{path}\n")
}

pub fn none_up(service: &str) -> String {
    format!("503 Service Unavailable: no backend is up for service {service}\n")
}

pub fn unreachable(service: &str) -> String {
    format!("503 Service Unavailable: no backend of {service} could be reached\n")
}

pub fn body_limit(max: u64) -> String {
    format!("413 Payload Too Large: request bodies are limited to {max} bytes\n")
}

pub fn body_still_coming(limit: Duration) -> String {
    format!(
        "408 Request Timeout: the body was still coming; {}\n",
        crate::body::TimedOut(limit)
    )
}

pub fn backend_failed(service: &str) -> String {
    format!("502 Bad Gateway: the backend {service} failed\n")
}

pub fn backend_too_slow(limits: &Limits) -> String {
    format!(
        "504 Gateway Timeout: the backend did not answer in time (limits: {:?} for the response head, {:?} for the whole request)\n",
        limits.response_timeout, limits.request_timeout
    )
}

/// 400: the client's own body was malformed (a bad chunk size) or cut short.
pub fn bad_body(e: &crate::body::BadBody) -> String {
    format!("400 Bad Request: {e}\n")
}
