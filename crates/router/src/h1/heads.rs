//! Heads as bytes: the router's own short answers, and the backend's response head parsed
//! and rewritten for the client.

use super::{MAX_HEADERS, Ready};

/// Hop-by-hop headers (RFC 9110 §7.6.1): not forwarded, either way.
pub fn is_hop_by_hop(n: &[u8]) -> bool {
    match n.len() {
        2 => n.eq_ignore_ascii_case(b"te"),
        7 => n.eq_ignore_ascii_case(b"trailer") || n.eq_ignore_ascii_case(b"upgrade"),
        10 => n.eq_ignore_ascii_case(b"connection") || n.eq_ignore_ascii_case(b"keep-alive"),
        16 => n.eq_ignore_ascii_case(b"proxy-connection"),
        17 => n.eq_ignore_ascii_case(b"transfer-encoding"),
        19 => n.eq_ignore_ascii_case(b"proxy-authorization"),
        _ => false,
    }
}

pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A short plain-text answer of the router's own, as the hyper path words it.
pub fn own_answer(out: &mut Vec<u8>, status: u16, msg: &str, close: bool, head: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, status.into());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    push_decimal(out, msg.len() as u64);
    out.extend_from_slice(b"\r\n");
    push_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(msg.as_bytes());
    }
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// `date: …\r\n`, formatted once a second per thread (as hyper does).
pub fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, s)| {
        if *at != secs || s.is_empty() {
            *at = secs;
            *s = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// A parsed response head: its length in the connection's buffer and what the client's head
/// and the body's framing need.
pub struct RespHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes (no length, HTTP/1.0 style).
    Close,
}

/// Parses the backend's response head (skipping 1xx informational ones) and writes the
/// client's head into `out`. `Ok(None)`: incomplete.
pub(super) fn response_head(
    buf: &[u8],
    req: &Ready,
    out: &mut Vec<u8>,
) -> Result<Option<RespHead>, String> {
    let mut skipped = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&buf[skipped..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("its response is not HTTP/1.1: {e}")),
        };
        let status = resp.code.unwrap_or(0);
        if status == 101 {
            return Err("it switched protocols unasked".into());
        }
        if (100..200).contains(&status) {
            skipped += len;
            continue;
        }
        let http11 = resp.version == Some(1);
        let mut keep_alive = http11;
        let mut tokens: Vec<&[u8]> = Vec::new();
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut has_date = false;
        for h in resp.headers.iter() {
            let n = h.name.as_bytes();
            match n.len() {
                4 if n.eq_ignore_ascii_case(b"date") => has_date = true,
                10 if n.eq_ignore_ascii_case(b"connection") => {
                    for t in h.value.split(|&c| c == b',') {
                        let t = t.trim_ascii();
                        if t.eq_ignore_ascii_case(b"close") {
                            keep_alive = false;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive = true;
                        } else if !t.is_empty() && !super::names_framing(t) {
                            tokens.push(t);
                        }
                    }
                }
                14 if n.eq_ignore_ascii_case(b"content-length") => {
                    let v = super::content_length(h.value)
                        .ok_or("its Content-Length is not a number")?;
                    if length.is_some_and(|l| l != v) {
                        return Err("it sent two different Content-Lengths".into());
                    }
                    length = Some(v);
                }
                17 if n.eq_ignore_ascii_case(b"transfer-encoding") => {
                    // Chunked only if it is the last coding (RFC 9112 §6.3).
                    let last = h.value.rsplit(|&c| c == b',').next().unwrap_or(b"");
                    chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                _ => {}
            }
        }
        let framing = if req.head_method || status == 204 || status == 304 {
            Framing::None
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::Close,
                (None, Some(0)) => Framing::None,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, status.into());
        out.push(b' ');
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in resp.headers.iter() {
            let n = h.name.as_bytes();
            if is_hop_by_hop(n) || tokens.iter().any(|t| t.eq_ignore_ascii_case(n)) {
                continue;
            }
            if n.eq_ignore_ascii_case(b"content-length") {
                // A chunked body with a length too: the length is wrong (RFC 9112 §6.3).
                // Otherwise one value, even if the backend listed it twice.
                if chunked.is_none()
                    && let Some(len) = length.take()
                {
                    out.extend_from_slice(b"content-length: ");
                    push_decimal(out, len);
                    out.extend_from_slice(b"\r\n");
                }
                continue;
            }
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !has_date {
            push_date(out);
        }
        return Ok(Some(RespHead {
            len: skipped + len,
            status,
            framing,
            reusable: keep_alive && framing != Framing::Close,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain path's hop-by-hop test (by length, then bytes) and the hyper path's list name
    /// the same headers.
    #[test]
    fn hop_by_hop_is_the_hyper_paths_list() {
        for n in &crate::proxy::HOP_BY_HOP {
            assert!(is_hop_by_hop(n.as_str().as_bytes()), "{n}");
            assert!(is_hop_by_hop(n.as_str().to_uppercase().as_bytes()), "{n}");
        }
        // Names of the same lengths, or near them, are not.
        for n in [
            "host",
            "content-length",
            "x-forwarded-for",
            "tee",
            "upgraded",
            "keep-alivE2",
        ] {
            assert!(!is_hop_by_hop(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234567890123] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }
}
