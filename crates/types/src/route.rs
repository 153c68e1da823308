//! Routes: how outside traffic reaches an app's service (HTTP by domain and path, or a TCP port).

use crate::{Id, Timestamp, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// TCP routes with port 0 get the lowest free port here (Flynn's range).
pub const TCP_PORT_RANGE: std::ops::RangeInclusive<u16> = 3000..=3500;

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteType {
    Http,
    Tcp,
}

impl RouteType {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Http => "http",
            RouteType::Tcp => "tcp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(RouteType::Http),
            "tcp" => Some(RouteType::Tcp),
            _ => None,
        }
    }
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Route {
    Http(HttpRoute),
    Tcp(TcpRoute),
}

impl Route {
    pub fn id(&self) -> Id {
        match self {
            Route::Http(r) => r.id,
            Route::Tcp(r) => r.id,
        }
    }
    pub fn app_id(&self) -> Id {
        match self {
            Route::Http(r) => r.app_id,
            Route::Tcp(r) => r.app_id,
        }
    }
    pub fn kind(&self) -> RouteType {
        match self {
            Route::Http(_) => RouteType::Http,
            Route::Tcp(_) => RouteType::Tcp,
        }
    }
    pub fn service(&self) -> &str {
        match self {
            Route::Http(r) => &r.service,
            Route::Tcp(r) => &r.service,
        }
    }
}

/// `http/<id>` or `tcp/<id>`, the form the CLI prints and takes.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind().as_str(), self.id())
    }
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub id: uuid::Uuid,
    pub app_id: uuid::Uuid,
    pub service: String,
    /// Lowercase; may start with `*.` (wildcard).
    pub domain: String,
    /// Always starts and ends with `/`.
    pub path: String,
    #[serde(default)]
    pub sticky: bool,
    /// Send traffic only to the service's leader.
    #[serde(default)]
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRoute {
    pub id: uuid::Uuid,
    pub app_id: uuid::Uuid,
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub leader: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The router's listener for the port, as the API reports it (`listening`, or
    /// `failed: REASON`, e.g. another process holds the port); not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
}

/// A TLS certificate chain and its key, PEM-encoded.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
}

impl Certificate {
    fn validate(&self) -> Result<(), ValidationError> {
        if !self.cert.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ValidationError::new(
                "certificate",
                "certificate is not PEM (no BEGIN CERTIFICATE block)",
            ));
        }
        if !(self.key.contains("-----BEGIN") && self.key.contains("PRIVATE KEY-----")) {
            return Err(ValidationError::new(
                "certificate",
                "key is not a PEM private key",
            ));
        }
        Ok(())
    }
}

/// Body of `POST /apps/:app/routes`. A missing service means the app's web service (`APP-web`).
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewRoute {
    Http {
        domain: String,
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        sticky: bool,
        #[serde(default)]
        leader: bool,
        #[serde(default)]
        certificate: Option<Certificate>,
    },
    Tcp {
        /// 0 or absent: pick a free port in [`TCP_PORT_RANGE`].
        #[serde(default)]
        port: u16,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        leader: bool,
    },
}

impl NewRoute {
    /// Validates and normalises domain, path and service in place.
    pub fn normalize(&mut self) -> Result<(), ValidationError> {
        match self {
            NewRoute::Http {
                domain,
                path,
                service,
                certificate,
                ..
            } => {
                *domain = normalize_domain(domain)?;
                *path = Some(normalize_path(path.as_deref().unwrap_or("/"))?);
                if let Some(s) = service {
                    validate_service(s)?;
                }
                if let Some(c) = certificate {
                    c.validate()?;
                }
            }
            NewRoute::Tcp { service, .. } => {
                if let Some(s) = service {
                    validate_service(s)?;
                }
            }
        }
        Ok(())
    }
}

/// Body of `PUT /apps/:app/routes/:type/:id`. Absent fields stay as they are.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// Drop the route's certificate (the router's default one is used).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_certificate: bool,
}

impl RouteUpdate {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(s) = &self.service {
            validate_service(s)?;
        }
        if let Some(c) = &self.certificate {
            c.validate()?;
        }
        Ok(())
    }
}

fn validate_service(s: &str) -> Result<(), ValidationError> {
    validate_service_name("service name", s)?;
    if PLATFORM_SERVICES.contains(&s) {
        // Their instances are the platform's own listeners (the API, a host's API, the
        // router's admin endpoint): a route would serve them on port 80.
        return Err(ValidationError::new(
            "service",
            format!(
                "the service {s:?} is one of Slipway's own; a route may not send traffic to it"
            ),
        ));
    }
    Ok(())
}

/// The discovery services of Slipway itself, which no route may name and no app's jobs join
/// (see [`crate::RESERVED_APP_NAME`]).
pub const PLATFORM_SERVICES: &[&str] = &[
    "slipway-controller",
    "slipway-router",
    "slipway-host",
    "slipway-scheduler",
    "slipway-housekeeping",
];

/// Longest service name (and discovery instance id).
pub const MAX_SERVICE_NAME_LEN: usize = 100;

/// The one rule for a service name, what a route sends to and what discovery registers (its
/// instance ids follow it too): 1 to [`MAX_SERVICE_NAME_LEN`] ASCII letters, digits, '-', '_'
/// or '.', so it is safe as a URL path segment. `what` names the value in the error
/// (`service name`, `instance id`).
pub fn validate_service_name(what: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SERVICE_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "service",
            format!(
                "invalid {what} {s:?}: use 1-{MAX_SERVICE_NAME_LEN} letters, digits, '-', '_' or '.'"
            ),
        ))
    }
}

/// Lowercases and checks a domain: DNS labels, an optional leading `*.`, no port, no scheme.
pub fn normalize_domain(domain: &str) -> Result<String, ValidationError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let err = |why: &str| {
        Err(ValidationError::new(
            "domain",
            format!("invalid domain {domain:?}: {why}"),
        ))
    };
    if d.is_empty() {
        return err("it is empty");
    }
    if d.contains("://") {
        return err("give the host name only, without a scheme");
    }
    if d.contains(':') {
        return err("give the host name only, without a port");
    }
    if d.len() > 253 {
        return err("longer than 253 characters");
    }
    let rest = d.strip_prefix("*.").unwrap_or(&d);
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return err("each dot-separated label must be 1-63 letters, digits or inner dashes");
        }
    }
    Ok(d)
}

/// Makes a path start and end with `/` (`api` → `/api/`) and rejects what a router can't match.
/// Longer route paths are refused: the router matches every request against them.
pub const MAX_PATH_BYTES: usize = 1024;

pub fn normalize_path(path: &str) -> Result<String, ValidationError> {
    let p = path.trim();
    if p.len() > MAX_PATH_BYTES {
        return Err(ValidationError::new(
            "path",
            format!(
                "route path is {} bytes long, more than the maximum of {MAX_PATH_BYTES}",
                p.len()
            ),
        ));
    }
    let err = |why: &str| {
        Err(ValidationError::new(
            "path",
            format!("invalid path {path:?}: {why}"),
        ))
    };
    if p.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        return err("no whitespace, '?' or '#' allowed");
    }
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return err("no '.' or '..' segments");
    }
    if segments.is_empty() {
        return Ok("/".into());
    }
    Ok(format!("/{}/", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(normalize_domain("*.apps.test").unwrap(), "*.apps.test");
        for bad in [
            "",
            "a..b",
            "http://x.com",
            "x.com:80",
            "-a.com",
            "a b.com",
            "*",
            "a.*.com",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_route_may_not_name_the_platforms_own_services() {
        for s in PLATFORM_SERVICES {
            let e = validate_service(s).unwrap_err();
            assert!(e.message.contains("one of Slipway's own"), "{s}: {e:?}");
        }
        // An app named slipway-x has its own services, which its routes name.
        assert!(validate_service("slipway-x-web").is_ok());
        let update = RouteUpdate {
            service: Some("slipway-host".into()),
            ..Default::default()
        };
        assert!(update.validate().is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_path("").unwrap(), "/");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("api").unwrap(), "/api/");
        assert_eq!(normalize_path("/api//v1").unwrap(), "/api/v1/");
        assert!(normalize_path("/a/../b").is_err());
        assert!(normalize_path("/a?b").is_err());
    }

    #[test]
    fn route_json_is_tagged() {
        let r: NewRoute = serde_json::from_str(r#"{"type":"tcp"}"#).unwrap();
        assert_eq!(
            r,
            NewRoute::Tcp {
                port: 0,
                service: None,
                leader: false
            }
        );
        assert!(serde_json::from_str::<NewRoute>(r#"{"type":"udp"}"#).is_err());
        let mut r: NewRoute =
            serde_json::from_str(r#"{"type":"http","domain":"A.test","path":"x"}"#).unwrap();
        r.normalize().unwrap();
        let NewRoute::Http { domain, path, .. } = r else {
            panic!()
        };
        assert_eq!((domain.as_str(), path.as_deref()), ("a.test", Some("/x/")));
    }
}
