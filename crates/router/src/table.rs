//! The routing table: an immutable snapshot built from the route list and swapped whole on
//! every change, so a request reads one consistent table without locking per lookup.

use slipway_types::{HttpRoute, Route, TcpRoute};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Table {
    /// Exact domain → its routes, longest path first.
    exact: HashMap<String, Vec<Arc<HttpRoute>>>,
    /// `*.example.com` stored as `example.com` → routes, longest path first.
    wildcard: HashMap<String, Vec<Arc<HttpRoute>>>,
    pub tcp: Vec<TcpRoute>,
}

impl Table {
    pub fn new(routes: &[Route]) -> Table {
        let mut t = Table::default();
        for r in routes {
            match r {
                Route::Http(h) => {
                    let (map, key) = match h.domain.strip_prefix("*.") {
                        Some(rest) => (&mut t.wildcard, rest.to_string()),
                        None => (&mut t.exact, h.domain.clone()),
                    };
                    map.entry(key).or_default().push(Arc::new(h.clone()));
                }
                Route::Tcp(tr) => t.tcp.push(tr.clone()),
            }
        }
        for v in t.exact.values_mut().chain(t.wildcard.values_mut()) {
            v.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        }
        t
    }

    /// The route for `host` (any case, with or without `:port`) and `path`: an exact domain
    /// first, then the nearest wildcard (`*.b.c` before `*.c`); within a domain the longest
    /// matching path prefix. Route paths end in `/`, so `/api/` matches `/api` and `/api/x`
    /// but not `/apix`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<HttpRoute>> {
        let host = strip_port(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let host = host.trim_end_matches('.');
        if let Some(r) = self.exact.get(host).and_then(|v| by_path(v, path)) {
            return Some(r);
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(r) = self.wildcard.get(rest).and_then(|v| by_path(v, path)) {
                return Some(r);
            }
        }
        None
    }

    /// Routes with a certificate, by domain (wildcards as `*.x`), for SNI.
    pub fn certificates(&self) -> impl Iterator<Item = &HttpRoute> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flatten()
            .map(|r| r.as_ref())
            .filter(|r| r.certificate.is_some())
    }
}

fn by_path<'a>(routes: &'a [Arc<HttpRoute>], path: &str) -> Option<&'a Arc<HttpRoute>> {
    routes.iter().find(|r| {
        let p = r.path.as_str();
        path.starts_with(p) || (path.len() + 1 == p.len() && p.starts_with(path))
    })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(domain: &str, path: &str, service: &str) -> Route {
        let now = slipway_types::Timestamp::now();
        Route::Http(HttpRoute {
            id: slipway_types::Id::new_v4(),
            app_id: slipway_types::Id::new_v4(),
            service: service.into(),
            domain: domain.into(),
            path: path.into(),
            sticky: false,
            leader: false,
            certificate: None,
            created_at: now,
            updated_at: now,
        })
    }

    #[test]
    fn host_wildcard_and_longest_path() {
        let t = Table::new(&[
            route("a.test", "/", "root"),
            route("a.test", "/api/", "api"),
            route("a.test", "/api/v2/", "v2"),
            route("*.wild.test", "/", "wild"),
            route("*.test", "/", "any"),
        ]);
        let svc = |h: &str, p: &str| t.lookup(h, p).map(|r| r.service.clone());
        assert_eq!(svc("a.test", "/"), Some("root".into()));
        assert_eq!(svc("A.Test:8080", "/x"), Some("root".into()));
        assert_eq!(svc("a.test", "/api"), Some("api".into()));
        assert_eq!(svc("a.test", "/api/x"), Some("api".into()));
        assert_eq!(svc("a.test", "/apix"), Some("root".into()));
        assert_eq!(svc("a.test", "/api/v2/z"), Some("v2".into()));
        assert_eq!(svc("x.wild.test", "/"), Some("wild".into()));
        assert_eq!(svc("y.x.wild.test", "/"), Some("wild".into()));
        assert_eq!(svc("b.test", "/"), Some("any".into()));
        assert_eq!(svc("wild.test.", "/"), Some("any".into()));
        assert_eq!(svc("other.example", "/"), None);
        assert_eq!(svc("[::1]:80", "/"), None);
    }
}
