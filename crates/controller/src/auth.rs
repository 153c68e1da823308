//! API key authentication: `Authorization: Bearer KEY`, or Basic with an empty user and the key
//! as password (what git and Flynn's clients send).

use crate::AppState;
use crate::error::ApiErr;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use slipway_types::ErrorCode;

/// Paths anyone may call.
const PUBLIC: &[&str] = &["/ping", "/openapi.json"];

pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(key_from_header);
    match presented {
        Some(key) if slipway_types::secret_eq(key.as_bytes(), state.config.api_key.as_bytes()) => {
            next.run(req).await
        }
        found => {
            let message = if found.is_some() {
                "invalid API key"
            } else {
                "missing API key: send it as `Authorization: Bearer KEY` (the key is in the server's data directory, file api-key)"
            };
            let mut resp = ApiErr::new(ErrorCode::Unauthorized, message).into_response();
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                "Basic realm=\"slipway\"".parse().expect("static header"),
            );
            resp
        }
    }
}

fn key_from_header(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (_user, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Standard base64 (with or without padding); None for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// A new random API key: 64 hex digits, two v4 UUIDs from the OS's generator (244 random bits).
pub fn generate_api_key() -> String {
    let mut key = String::with_capacity(64);
    for _ in 0..2 {
        key.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        assert_eq!(key_from_header("Bearer abc").as_deref(), Some("abc"));
        // ":secret" in base64
        assert_eq!(
            key_from_header("Basic OnNlY3JldA==").as_deref(),
            Some("secret")
        );
        // "git:secret"
        assert_eq!(
            key_from_header("basic Z2l0OnNlY3JldA").as_deref(),
            Some("secret")
        );
        assert_eq!(key_from_header("Basic !!!"), None);
        assert_eq!(key_from_header("Digest x"), None);
        assert_eq!(key_from_header("Bearer"), None);
    }

    #[test]
    fn keys_are_long_and_distinct() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(slipway_types::secret_eq(a.as_bytes(), a.as_bytes()));
        assert!(!slipway_types::secret_eq(a.as_bytes(), b.as_bytes()));
    }
}
