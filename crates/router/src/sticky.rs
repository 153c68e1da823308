//! Sticky sessions (Flynn's `_backend` cookie): the backend's address, sealed with
//! ChaCha20-Poly1305 under the router's cookie key, so clients can neither read the internal
//! addresses nor forge a cookie that steers them to a backend of their choosing.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::net::SocketAddr;

pub const COOKIE: &str = "_backend";

pub struct CookieKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl CookieKey {
    /// `bytes`: 32 bytes shared by all routers of a cluster; `None`: random (one router).
    pub fn new(bytes: Option<[u8; 32]>) -> CookieKey {
        let rng = SystemRandom::new();
        let bytes = bytes.unwrap_or_else(|| {
            let mut b = [0u8; 32];
            rng.fill(&mut b).expect("system randomness");
            b
        });
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes).expect("32-byte key");
        CookieKey {
            key: LessSafeKey::new(key),
            rng,
        }
    }

    /// Cookie value: hex(nonce ‖ sealed address).
    pub fn seal(&self, addr: SocketAddr) -> String {
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut data = addr.to_string().into_bytes();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .expect("seal");
        let mut out = String::with_capacity(2 * (12 + data.len()));
        for b in nonce.iter().chain(&data) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    pub fn open(&self, value: &str) -> Option<SocketAddr> {
        if !value.len().is_multiple_of(2) || value.len() < 2 * (12 + 16) {
            return None;
        }
        let mut bytes: Vec<u8> = (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let (nonce, sealed) = bytes.split_at_mut(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.key.open_in_place(nonce, Aad::empty(), sealed).ok()?;
        std::str::from_utf8(plain).ok()?.parse().ok()
    }
}

/// The `_backend` cookie of a request, if any.
pub fn from_request(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("_backend="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_refuses_tampering() {
        let k = CookieKey::new(None);
        let addr: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let v = k.seal(addr);
        assert_eq!(k.open(&v), Some(addr));
        assert!(!v.contains("10.1.2.3"));
        let mut bad = v.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.open(std::str::from_utf8(&bad).unwrap()), None);
        assert_eq!(
            CookieKey::new(None).open(&v),
            None,
            "another key cannot open it"
        );
        assert_eq!(k.open("zz"), None);
    }
}
