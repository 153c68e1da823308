//! Sessions: a random id in an `HttpOnly; SameSite=Strict` cookie maps, in this process's
//! memory, to the API key the user logged in with and a CSRF token. The key never leaves the
//! server; a restart logs everyone out (nothing to leak from disk). Failed logins are bounded
//! per minute per client address, so the key cannot be guessed through the login form, and
//! for the whole process at a higher cap (many addresses), while one client failing on purpose
//! does not lock the admin out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives without use.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions (a flood of logins cannot grow memory without end); a login
/// past it ends the least recently used one (rather than refusing every login for hours).
#[cfg(not(test))]
const MAX_SESSIONS: usize = 10_000;
#[cfg(test)]
const MAX_SESSIONS: usize = 3;
/// At most this many failed logins per [`FAIL_WINDOW`] from one client (an IPv4 address or an
/// IPv6 /64); then the form answers 429 to that client.
pub const MAX_FAILURES: usize = 20;
/// At most this many failed logins per [`FAIL_WINDOW`] from all clients together.
pub const MAX_FAILURES_ALL: usize = 200;
/// At most this many clients are tracked; past it, a new one is judged by the global cap alone.
const MAX_CLIENTS: usize = 10_000;
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
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    all: VecDeque<Instant>,
    by_client: HashMap<IpAddr, VecDeque<Instant>>,
}

/// The bucket an address's failures count in: IPv6 clients usually hold a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn prune(q: &mut VecDeque<Instant>) {
    while q.front().is_some_and(|t| t.elapsed() >= FAIL_WINDOW) {
        q.pop_front();
    }
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
    /// A new session for `key`; its id (the cookie's value). When full, the least recently used
    /// session ends to make room.
    pub fn create(&self, key: String) -> String {
        let mut map = self.map.lock().unwrap();
        map.retain(|_, s| s.used.elapsed() < IDLE);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let id = token();
        let session = Session {
            key,
            csrf: token(),
            flash: None,
            used: Instant::now(),
        };
        map.insert(id.clone(), session);
        id
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

    /// Whether another login attempt may be tried now by the client at `ip`.
    pub fn may_try(&self, ip: IpAddr) -> bool {
        let mut f = self.failures.lock().unwrap();
        prune(&mut f.all);
        if f.all.len() >= MAX_FAILURES_ALL {
            return false;
        }
        let key = client_key(ip);
        let Some(q) = f.by_client.get_mut(&key) else {
            return true;
        };
        prune(q);
        if q.is_empty() {
            f.by_client.remove(&key);
            return true;
        }
        q.len() < MAX_FAILURES
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap();
        let now = Instant::now();
        f.all.push_back(now);
        if f.by_client.len() >= MAX_CLIENTS {
            f.by_client.retain(|_, q| {
                prune(q);
                !q.is_empty()
            });
        }
        let key = client_key(ip);
        if f.by_client.len() < MAX_CLIENTS || f.by_client.contains_key(&key) {
            f.by_client.entry(key).or_default().push_back(now);
        }
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
        let id = s.create("k".into());
        let got = s.get(&id).unwrap();
        assert_eq!(got.key, "k");
        assert_eq!(got.csrf.len(), 64);
        assert_ne!(got.csrf, id);
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn a_login_past_the_cap_ends_the_least_recently_used_session() {
        let s = Sessions::default();
        let ids: Vec<String> = (0..MAX_SESSIONS)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(2));
                s.create("k".into())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.get(&ids[0]).is_some(), "the first is used again");
        let newest = s.create("k".into());
        assert!(s.get(&newest).is_some());
        assert!(s.get(&ids[0]).is_some());
        assert!(
            s.get(&ids[1]).is_none(),
            "the least recently used one lives on"
        );
        assert_eq!(s.map.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn failed_logins_are_bounded_per_client_then_for_all() {
        let s = Sessions::default();
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let admin: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try(bad));
            s.failed(bad);
        }
        assert!(!s.may_try(bad));
        // The same client as IPv4-mapped IPv6 is the same client.
        assert!(!s.may_try("::ffff:192.0.2.1".parse().unwrap()));
        // Another client is not locked out by the first one's failures.
        assert!(s.may_try(admin));
        // An IPv6 client's /64 is one client.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            s.failed(v6);
        }
        assert!(!s.may_try("2001:db8::ffff".parse().unwrap()));
        assert!(s.may_try("2001:db8:0:1::1".parse().unwrap()));
        // Many clients together hit the global cap.
        for i in 0..MAX_FAILURES_ALL {
            s.failed(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]));
        }
        assert!(!s.may_try(admin));
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
