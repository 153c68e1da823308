//! Sessions: a random id in an `HttpOnly; SameSite=Strict` cookie maps, in this process's
//! memory, to the API key the user logged in with and a CSRF token. The key never leaves the
//! server; a restart logs everyone out (nothing to leak from disk). Failed logins are bounded
//! per minute for the whole process, so the key cannot be guessed through the login form.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives without use.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions (a flood of logins cannot grow memory without end).
const MAX_SESSIONS: usize = 10_000;
/// At most this many failed logins per [`FAIL_WINDOW`]; then the form answers 429.
pub const MAX_FAILURES: usize = 20;
const FAIL_WINDOW: Duration = Duration::from_secs(60);

pub const COOKIE: &str = "slipway_session";

#[derive(Clone)]
pub struct Session {
    pub key: String,
    pub csrf: String,
    /// A message for the next page shown: (form name, text), e.g. the API's error for a form.
    pub flash: Option<(String, String)>,
    used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<VecDeque<Instant>>,
}

/// 256 random bits, hex (two v4 UUIDs: 244 bits from the OS's generator).
fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// A new session for `key`; its id (the cookie's value). `None` when full.
    pub fn create(&self, key: String) -> Option<String> {
        let mut map = self.map.lock().unwrap();
        map.retain(|_, s| s.used.elapsed() < IDLE);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let id = token();
        let session = Session {
            key,
            csrf: token(),
            flash: None,
            used: Instant::now(),
        };
        map.insert(id.clone(), session);
        Some(id)
    }

    /// The live session with this id, its use time refreshed (flash taken out).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap();
        let s = map.get_mut(id)?;
        if s.used.elapsed() >= IDLE {
            map.remove(id);
            return None;
        }
        s.used = Instant::now();
        let out = s.clone();
        s.flash = None;
        Some(out)
    }

    pub fn flash(&self, id: &str, form: &str, msg: String) {
        if let Some(s) = self.map.lock().unwrap().get_mut(id) {
            s.flash = Some((form.to_string(), msg));
        }
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap().remove(id);
    }

    /// Whether another login attempt may be tried now.
    pub fn may_try(&self) -> bool {
        let mut f = self.failures.lock().unwrap();
        while f.front().is_some_and(|t| t.elapsed() >= FAIL_WINDOW) {
            f.pop_front();
        }
        f.len() < MAX_FAILURES
    }

    pub fn failed(&self) {
        self.failures.lock().unwrap().push_back(Instant::now());
    }
}

/// The session id from the request's `Cookie` header.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value for a session id (empty id: the cookie is removed).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let max_age = if id.is_empty() {
        "; Max-Age=0".to_string()
    } else {
        String::new()
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/dashboard; HttpOnly; SameSite=Strict{secure}{max_age}")
}

/// Constant-time comparison (the CSRF token).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_the_key_and_a_distinct_csrf_token() {
        let s = Sessions::default();
        let id = s.create("k".into()).unwrap();
        let got = s.get(&id).unwrap();
        assert_eq!(got.key, "k");
        assert_eq!(got.csrf.len(), 64);
        assert_ne!(got.csrf, id);
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn failed_logins_are_bounded() {
        let s = Sessions::default();
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try());
            s.failed();
        }
        assert!(!s.may_try());
    }

    #[test]
    fn cookie_is_read_among_others_and_set_strict() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; slipway_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(same("ab", "ab") && !same("ab", "ac") && !same("ab", "abc"));
    }
}
