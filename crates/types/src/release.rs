//! Artifacts (what runs), releases (artifacts + config, immutable) and process types.

use crate::units::positive;
use crate::{Id, StringMap, Timestamp, ValidationError, app::validate_meta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    /// A tarball of a built `/app`, run on a stack.
    Slug,
    /// An OCI/Docker image.
    Image,
}

impl ArtifactType {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactType::Slug => "slug",
            ArtifactType::Image => "image",
        }
    }
}

/// Something a release runs: a slug in the blob store or an image. Immutable once created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: Id,
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// Where the bytes are: a blob store URI or an image reference.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
    #[serde(default)]
    pub meta: StringMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `sha256:<hex>` of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewArtifact {
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    pub uri: String,
    #[serde(default)]
    pub manifest: Option<serde_json::Value>,
    #[serde(default)]
    pub meta: StringMap,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub digest: Option<String>,
}

impl NewArtifact {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.uri.trim().is_empty() {
            return Err(ValidationError::new(
                "uri",
                "artifact uri must not be empty",
            ));
        }
        if let Some(d) = &self.digest {
            let hex = d.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ValidationError::new(
                    "digest",
                    format!("invalid digest {d:?}: expected sha256:<64 hex digits>"),
                ));
            }
        }
        validate_meta(&self.meta)
    }
}

/// Artifacts plus configuration. Never modified: every change makes a new release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: Id,
    pub app_id: Id,
    /// In layer order: the first is the bottom.
    #[serde(default)]
    pub artifacts: Vec<Id>,
    #[serde(default)]
    pub env: StringMap,
    #[serde(default)]
    pub meta: StringMap,
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessType>,
    pub created_at: Timestamp,
}

/// Body of `POST /apps/:app/releases`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    #[serde(default)]
    pub artifacts: Vec<Id>,
    #[serde(default)]
    pub env: StringMap,
    #[serde(default)]
    pub meta: StringMap,
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessType>,
}

impl NewRelease {
    /// The release's config as a starting point for the next one (env/limit changes).
    pub fn from_release(r: &Release) -> Self {
        NewRelease {
            artifacts: r.artifacts.clone(),
            env: r.env.clone(),
            meta: r.meta.clone(),
            processes: r.processes.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_env("env", &self.env)?;
        validate_meta(&self.meta)?;
        for (name, p) in &self.processes {
            validate_process_type_name(name)?;
            p.validate(name)?;
        }
        Ok(())
    }
}

/// Process type names appear in service names (`APP-TYPE`), so they follow the app name rules.
pub fn validate_process_type_name(name: &str) -> Result<(), ValidationError> {
    crate::validate_app_name(name).map_err(|_| {
        ValidationError::new(
            "processes",
            format!(
                "invalid process type {name:?}: use lowercase letters, digits and single dashes"
            ),
        )
    })
}

fn validate_env(field: &str, env: &StringMap) -> Result<(), ValidationError> {
    for (k, v) in env {
        let valid = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ValidationError::new(
                field,
                format!(
                    "invalid environment variable name {k:?}: use letters, digits and '_', not starting with a digit"
                ),
            ));
        }
        if v.contains('\0') {
            return Err(ValidationError::new(
                field,
                format!("environment variable {k} contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// How to run one kind of process of a release (`web`, `worker`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessType {
    /// The command; empty means the artifact's default (`start TYPE` for slugs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub env: StringMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

impl ProcessType {
    fn validate(&self, name: &str) -> Result<(), ValidationError> {
        validate_env(&format!("processes.{name}.env"), &self.env)?;
        self.resources.validate()?;
        for port in &self.ports {
            if port.proto != "tcp" && port.proto != "udp" {
                return Err(ValidationError::new(
                    "ports",
                    format!("invalid protocol {:?}: use tcp or udp", port.proto),
                ));
            }
            if let Some(check) = port.service.as_ref().and_then(|s| s.check.as_ref()) {
                check.validate()?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port inside the job; 0 lets the host choose (web processes get 8080 and `PORT`).
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_proto")]
    pub proto: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
}

fn default_proto() -> String {
    "tcp".into()
}

/// A discovery service the port registers in once its health check passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "yes")]
    pub create: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HealthCheck>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckType {
    Tcp,
    Http,
}

/// Durations are in milliseconds so the JSON stays plain integers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    /// HTTP path, for `http` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Expected HTTP status, for `http` checks (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Consecutive passes (or failures) before the state changes.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_ms: u64,
    /// Kill a job whose check has not passed by the start timeout.
    #[serde(default)]
    pub kill_down: bool,
}

fn default_interval() -> u64 {
    10_000
}
fn default_threshold() -> u32 {
    2
}
fn default_start_timeout() -> u64 {
    60_000
}

impl HealthCheck {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.interval_ms == 0 || self.threshold == 0 {
            return Err(ValidationError::new(
                "check",
                "health check interval and threshold must be greater than 0",
            ));
        }
        if let Some(p) = &self.path
            && !p.starts_with('/')
        {
            return Err(ValidationError::new(
                "check",
                format!("health check path {p:?} must start with '/'"),
            ));
        }
        Ok(())
    }
}

/// Smallest disk limit a process type may ask for.
pub const MIN_DISK: u64 = 16 << 20;
/// Largest disk limit (1 TiB): every job's writable layer is a filesystem of this size.
pub const MAX_DISK: u64 = 1 << 40;

/// Resource limits of one process type. `None` means the host's default (memory: 1 GiB,
/// disk: 1 GiB).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Milli-CPU: 1000 is one core (1024 cpu shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fd: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_procs: Option<u64>,
    /// Bytes of the job's writable layer (everything it writes outside tmpfs): a write past it
    /// fails with "No space left on device".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        positive("memory", self.memory)?;
        if let Some(m) = self.memory
            && m < 4 << 20
        {
            return Err(ValidationError::new(
                "memory",
                "memory limit must be at least 4MB",
            ));
        }
        if let Some(d) = self.disk
            && !(MIN_DISK..=MAX_DISK).contains(&d)
        {
            return Err(ValidationError::new(
                "disk",
                "disk limit must be between 16MB and 1TB",
            ));
        }
        positive("cpu", self.cpu)?;
        positive("max_fd", self.max_fd)?;
        positive("max_procs", self.max_procs)
    }

    /// Sets one limit from `key=value` text as `slipway limit set` takes it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        use crate::units::{parse_bytes, parse_count, parse_milli_cpu};
        // Change a copy, so a rejected value leaves the limits as they were.
        let mut next = self.clone();
        match key {
            "memory" => next.memory = Some(parse_bytes(value)?),
            "disk" => next.disk = Some(parse_bytes(value)?),
            "cpu" => next.cpu = Some(parse_milli_cpu(value)?),
            "max_fd" => next.max_fd = Some(parse_count(key, value)?),
            "max_procs" => next.max_procs = Some(parse_count(key, value)?),
            _ => {
                return Err(format!(
                    "unknown limit {key:?} (known: memory, disk, cpu, max_fd, max_procs)"
                ));
            }
        }
        next.validate().map_err(|e| e.message)?;
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_validation() {
        let mut r = NewRelease::default();
        r.env.insert("DATABASE_URL".into(), "x".into());
        r.processes.insert("web".into(), ProcessType::default());
        assert!(r.validate().is_ok());
        r.env.insert("1BAD".into(), "x".into());
        assert_eq!(r.validate().unwrap_err().field, "env");
        r.env.remove("1BAD");
        r.processes
            .insert("Bad Type".into(), ProcessType::default());
        assert!(r.validate().is_err());
    }

    #[test]
    fn limits_parse() {
        let mut res = Resources::default();
        res.set("memory", "512MB").unwrap();
        assert_eq!(res.memory, Some(536_870_912));
        res.set("cpu", "500").unwrap();
        res.set("max_fd", "1024").unwrap();
        assert_eq!((res.cpu, res.max_fd), (Some(500), Some(1024)));
        assert!(res.set("memory", "1KB").is_err());
        assert!(res.set("disk", "1").is_err());
        assert!(res.set("disk", "15MB").is_err());
        assert!(res.set("disk", "2048GB").is_err());
        assert!(res.set("disk", "99999999999999999999").is_err());
        res.set("disk", "2GB").unwrap();
        assert_eq!(res.disk, Some(2 << 30));
        assert!(res.set("disk", "1KB").is_err());
        assert_eq!(res.disk, Some(2 << 30), "a refused value changes nothing");
        assert!(res.set("dsik", "1GB").unwrap_err().contains("disk"));
        let json = serde_json::to_value(&res).unwrap();
        assert_eq!(json["memory"], 536_870_912);
        assert!(json.get("max_procs").is_none());
    }

    #[test]
    fn process_type_json_defaults() {
        let p: ProcessType = serde_json::from_str(
            r#"{"args":["httpd"],"ports":[{"service":{"name":"a-web","check":{"type":"http","path":"/"}}}]}"#,
        )
        .unwrap();
        assert_eq!(p.ports[0].proto, "tcp");
        let check = p.ports[0].service.as_ref().unwrap().check.as_ref().unwrap();
        assert_eq!(
            (check.interval_ms, check.threshold, check.kill_down),
            (10_000, 2, false)
        );
        assert!(serde_json::from_str::<ProcessType>(r#"{"argz":[]}"#).is_err());
    }
}
