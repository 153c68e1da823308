//! Artifacts (what runs), releases (artifacts + config, immutable) and process types.

use crate::units::{format_bytes, positive};
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
        if self.processes.len() > MAX_PROCESS_TYPES {
            return Err(ValidationError::new(
                "processes",
                format!(
                    "{} process types is more than the maximum of {MAX_PROCESS_TYPES}",
                    self.processes.len()
                ),
            ));
        }
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

/// At most this many variables in one env (a release's, a process type's, a one-off job's).
pub const MAX_ENV_VARS: usize = 1000;
/// At most this many bytes in one variable's value: the kernel refuses to exec with a single
/// `NAME=value` string over 128 KiB (`MAX_ARG_STRLEN`), so the job would never start.
pub const MAX_ENV_VALUE_BYTES: usize = 64 << 10;
/// At most this many bytes of names and values in one env: the environment and the command line
/// of a process share the kernel's `ARG_MAX` (2 MiB with the default stack).
pub const MAX_ENV_BYTES: usize = 256 << 10;
/// At most this many arguments in a command, and bytes in all of them (same reason as env).
pub const MAX_ARGS: usize = 1000;
pub const MAX_ARG_BYTES: usize = 64 << 10;
/// At most this many process types in a release, and ports per process type.
pub const MAX_PROCESS_TYPES: usize = 100;
pub const MAX_PORTS: usize = 64;
/// Health check timings (interval, start timeout) above an hour are typos, and a huge one
/// overflowed the host's deadline arithmetic.
pub const MAX_CHECK_MS: u64 = 3_600_000;
pub const MAX_CHECK_THRESHOLD: u32 = 100;
pub const MAX_CHECK_PATH_BYTES: usize = 1024;

/// Checks a command's arguments against [`MAX_ARGS`] and [`MAX_ARG_BYTES`] (no NUL: exec cannot
/// pass one).
pub fn validate_args(field: &str, args: &[String]) -> Result<(), ValidationError> {
    if args.len() > MAX_ARGS {
        return Err(ValidationError::new(
            field,
            format!(
                "{} arguments is more than the maximum of {MAX_ARGS}",
                args.len()
            ),
        ));
    }
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    if total > MAX_ARG_BYTES {
        return Err(ValidationError::new(
            field,
            format!("the command is {total} bytes long, more than the maximum of {MAX_ARG_BYTES}"),
        ));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(ValidationError::new(
            field,
            "an argument contains a NUL byte",
        ));
    }
    Ok(())
}

/// Checks variable names, values and the bounds above ([`MAX_ENV_VARS`], [`MAX_ENV_VALUE_BYTES`],
/// [`MAX_ENV_BYTES`]).
pub fn validate_env(field: &str, env: &StringMap) -> Result<(), ValidationError> {
    if env.len() > MAX_ENV_VARS {
        return Err(ValidationError::new(
            field,
            format!(
                "{} environment variables is more than the maximum of {MAX_ENV_VARS}",
                env.len()
            ),
        ));
    }
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_ENV_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "the environment is {total} bytes, more than the maximum of {MAX_ENV_BYTES}: keep large data out of env (a file, a service)"
            ),
        ));
    }
    for (k, v) in env {
        if k.len() > 255 {
            return Err(ValidationError::new(
                field,
                format!(
                    "an environment variable name is {} bytes long, more than the maximum of 255",
                    k.len()
                ),
            ));
        }
        if v.len() > MAX_ENV_VALUE_BYTES {
            return Err(ValidationError::new(
                field,
                format!(
                    "environment variable {k} is {} bytes long, more than the maximum of {MAX_ENV_VALUE_BYTES}",
                    v.len()
                ),
            ));
        }
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
    /// Flynn's omni: the formation's count is per host, on every host that matches its tags
    /// (a monitoring agent), instead of in all (docs/scheduler.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omni: bool,
}

impl ProcessType {
    fn validate(&self, name: &str) -> Result<(), ValidationError> {
        validate_env(&format!("processes.{name}.env"), &self.env)?;
        validate_args(&format!("processes.{name}.args"), &self.args)?;
        self.resources.validate()?;
        if self.ports.len() > MAX_PORTS {
            return Err(ValidationError::new(
                "ports",
                format!(
                    "{} ports is more than the maximum of {MAX_PORTS} per process type",
                    self.ports.len()
                ),
            ));
        }
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
        if self.interval_ms > MAX_CHECK_MS || self.start_timeout_ms > MAX_CHECK_MS {
            return Err(ValidationError::new(
                "check",
                format!(
                    "health check interval and start timeout must be at most {MAX_CHECK_MS} ms (an hour)"
                ),
            ));
        }
        if self.threshold > MAX_CHECK_THRESHOLD {
            return Err(ValidationError::new(
                "check",
                format!("health check threshold must be at most {MAX_CHECK_THRESHOLD}"),
            ));
        }
        if let Some(p) = &self.path
            && p.len() > MAX_CHECK_PATH_BYTES
        {
            return Err(ValidationError::new(
                "check",
                format!("health check path is longer than {MAX_CHECK_PATH_BYTES} bytes"),
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

/// Smallest disk limit a process type may ask for: ext4 and a little room for the job's writes.
/// The host agent refuses a job outside these bounds with the same constants.
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
        MEMORY.check(self.memory)?;
        DISK.check(self.disk)?;
        CPU.check(self.cpu)?;
        MAX_FD.check(self.max_fd)?;
        MAX_PROCS.check(self.max_procs)
    }

    /// Sets one limit from `key=value` text as `slipway limit set` takes it; the error names
    /// the limit.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ValidationError> {
        use crate::units::{parse_bytes, parse_count, parse_milli_cpu};
        // Change a copy, so a rejected value leaves the limits as they were.
        let mut next = self.clone();
        let named = |e: ValidationError| ValidationError::new(key, e.message);
        match key {
            "memory" => next.memory = Some(parse_bytes(value).map_err(named)?),
            "disk" => next.disk = Some(parse_bytes(value).map_err(named)?),
            "cpu" => next.cpu = Some(parse_milli_cpu(value)?),
            "max_fd" => next.max_fd = Some(parse_count(key, value)?),
            "max_procs" => next.max_procs = Some(parse_count(key, value)?),
            _ => {
                return Err(ValidationError::new(
                    "limit",
                    format!("unknown limit {key:?} (known: memory, disk, cpu, max_fd, max_procs)"),
                ));
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// The range one limit may take. Every limit of [`Resources`] is checked through
/// [`LimitBound::check`] against one of the constants below, so a new limit (e.g. `disk`) is one
/// constant and one line in `Resources::validate`. Values outside the range are refused with a 422
/// that names the limit and its range: the host would otherwise take them to mean "no limit"
/// (memory) or fail to start the job, again and again (cpu, max_fd).
#[derive(Clone, Copy, Debug)]
pub struct LimitBound {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
    /// Shows a value in the unit users type (`512MB`, `500`).
    pub show: fn(u64) -> String,
    /// Why the maximum is what it is, for the error message.
    pub why_max: &'static str,
}

fn plain(v: u64) -> String {
    v.to_string()
}

/// Memory: 4 MiB (less and the runtime itself does not fit) to 1 TiB. cgroup v1 reads a huge
/// `memory.limit_in_bytes` as "unlimited", so `u64::MAX` used to mean no limit at all.
pub const MEMORY: LimitBound = LimitBound {
    field: "memory",
    min: 4 << 20,
    max: 1 << 40,
    show: format_bytes,
    why_max: "no host has more",
};

/// Disk: the job's writable layer is a filesystem of this size (see the host's `runc/disk.rs`):
/// 16 MiB (less holds no more than the filesystem's own metadata) to 1 TiB.
pub const DISK: LimitBound = LimitBound {
    field: "disk",
    min: MIN_DISK,
    max: MAX_DISK,
    show: format_bytes,
    why_max: "the largest writable layer a job may have",
};

/// CPU in milli-CPU: the host gives `cpu * 1024 / 1000` cpu shares and the kernel's maximum is
/// 262144 shares (256 cores); more overflowed the shares and runc failed at every restart.
pub const CPU: LimitBound = LimitBound {
    field: "cpu",
    min: 1,
    max: 256_000,
    show: plain,
    why_max: "256 cores, the kernel's maximum of cpu shares",
};

/// Open files: Linux's default `fs.nr_open` (1048576) is the most `RLIMIT_NOFILE` can be; the
/// host further clamps it to its own hard limit (runc fails above that) and says so in the job's
/// log.
pub const MAX_FD: LimitBound = LimitBound {
    field: "max_fd",
    min: 1,
    max: 1 << 20,
    show: plain,
    why_max: "Linux's maximum of open files per process (fs.nr_open)",
};

/// Processes: Linux's `PID_MAX_LIMIT` (4194304) is the most pids a host can have at all.
pub const MAX_PROCS: LimitBound = LimitBound {
    field: "max_procs",
    min: 1,
    max: 4 << 20,
    show: plain,
    why_max: "Linux's maximum number of processes; the host agent also caps all jobs together \
              with --jobs-max-procs",
};

impl LimitBound {
    /// `None` (the host's default) always passes.
    pub fn check(&self, v: Option<u64>) -> Result<(), ValidationError> {
        positive(self.field, v)?;
        let Some(v) = v else { return Ok(()) };
        let show = self.show;
        if v < self.min {
            return Err(ValidationError::new(
                self.field,
                format!(
                    "{} limit {} is below the minimum of {}",
                    self.field,
                    show(v),
                    show(self.min)
                ),
            ));
        }
        if v > self.max {
            return Err(ValidationError::new(
                self.field,
                format!(
                    "{} limit {} is above the maximum of {} ({}); ask for {} or less",
                    self.field,
                    show(v),
                    show(self.max),
                    self.why_max,
                    show(self.max)
                ),
            ));
        }
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
        assert!(res.set("dsik", "1GB").unwrap_err().message.contains("disk"));
        // The error names the limit the user set, whichever parser refused it.
        assert_eq!(res.set("memory", "lots").unwrap_err().field, "memory");
        assert_eq!(res.set("cpu", "0").unwrap_err().field, "cpu");
        assert_eq!(res.set("max_fd", "-1").unwrap_err().field, "max_fd");
        let json = serde_json::to_value(&res).unwrap();
        assert_eq!(json["memory"], 536_870_912);
        assert!(json.get("max_procs").is_none());
        res.set("max_procs", "4194304").unwrap();
        let e = res.set("max_procs", "4194305").unwrap_err();
        assert!(e.message.contains("above the maximum of 4194304"), "{e}");
        assert_eq!(
            res.max_procs,
            Some(4_194_304),
            "a rejected value changes nothing"
        );
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
