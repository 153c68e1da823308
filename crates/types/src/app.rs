//! Apps: the unit users create, push to and scale.

use crate::{StringMap, Timestamp, ValidationError};
use serde::{Deserialize, Serialize};

/// Flynn's default deploy timeout, in seconds.
pub const DEFAULT_DEPLOY_TIMEOUT: u32 = 120;
const MAX_NAME_LEN: usize = 63;
/// The app name no app may have: its jobs' services would be the platform's
/// ([`crate::PLATFORM_SERVICES`]).
pub const RESERVED_APP_NAME: &str = "slipway";

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: uuid::Uuid,
    pub name: String,
    #[serde(default)]
    pub meta: StringMap,
    pub strategy: DeployStrategy,
    /// Seconds a deployment may take before it fails and rolls back.
    pub deploy_timeout: u32,
    /// Jobs per batch for the `in-batches` strategy (None: the executor's default).
    #[schema(minimum = 1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_batch_size: Option<u32>,
    /// The current release, if any.
    #[serde(default)]
    pub release: Option<uuid::Uuid>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How a new release replaces the old one's jobs.
#[derive(utoipa::ToSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployStrategy {
    #[default]
    AllAtOnce,
    OneByOne,
    InBatches,
}

impl DeployStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployStrategy::AllAtOnce => "all-at-once",
            DeployStrategy::OneByOne => "one-by-one",
            DeployStrategy::InBatches => "in-batches",
        }
    }
}

impl std::str::FromStr for DeployStrategy {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-at-once" => Ok(DeployStrategy::AllAtOnce),
            "one-by-one" => Ok(DeployStrategy::OneByOne),
            "in-batches" => Ok(DeployStrategy::InBatches),
            _ => Err(ValidationError::new(
                "strategy",
                format!(
                    "unknown deploy strategy {s:?} (expected all-at-once, one-by-one or in-batches)"
                ),
            )),
        }
    }
}

/// Body of `POST /apps`. A missing name gets a random readable one.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub meta: StringMap,
    #[serde(default)]
    pub strategy: Option<DeployStrategy>,
    #[schema(minimum = 1)]
    #[serde(default)]
    pub deploy_timeout: Option<u32>,
    #[schema(minimum = 1)]
    #[serde(default)]
    pub deploy_batch_size: Option<u32>,
}

/// Body of `POST /apps/:app` (update). Absent fields are left alone; `meta` replaces the map.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeployStrategy>,
    #[schema(minimum = 1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_timeout: Option<u32>,
    #[schema(minimum = 1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_batch_size: Option<u32>,
}

/// What deleting an app removed with it.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeletion {
    pub app: String,
    pub routes: u64,
    pub releases: u64,
    pub artifacts: u64,
}

/// Names are DNS labels, so they can become `<app>.<domain>` and service names.
pub fn validate_app_name(name: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new("name", m));
    if name.is_empty() {
        return err("app name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            "name",
            format!(
                "app name is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    if name == RESERVED_APP_NAME {
        // An app's jobs register in discovery as `<app>-<process type>`: an app named
        // `slipway` with a process type `scheduler` or `controller` would join the platform's
        // own services (its elections, the controllers hosts send the API key to).
        return err(
            "the app name \"slipway\" is reserved for Slipway's own services (slipway-controller, slipway-scheduler, …): choose another",
        );
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(ValidationError::new(
            "name",
            format!(
                "invalid app name {name:?}: use lowercase letters, digits and single dashes \
                 between them (like my-app-2)"
            ),
        ));
    }
    Ok(())
}

impl NewApp {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(name) = &self.name {
            validate_app_name(name)?;
        }
        validate_meta(&self.meta)?;
        validate_deploy_settings(self.deploy_timeout, self.deploy_batch_size)
    }
}

impl AppUpdate {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(meta) = &self.meta {
            validate_meta(meta)?;
        }
        validate_deploy_settings(self.deploy_timeout, self.deploy_batch_size)
    }
}

fn validate_deploy_settings(
    timeout: Option<u32>,
    batch: Option<u32>,
) -> Result<(), ValidationError> {
    if timeout == Some(0) {
        return Err(ValidationError::new(
            "deploy_timeout",
            "deploy timeout must be at least 1 second",
        ));
    }
    if batch == Some(0) {
        return Err(ValidationError::new(
            "deploy_batch_size",
            "batch size must be at least 1",
        ));
    }
    Ok(())
}

/// At most this many meta entries on one object, and bytes in one value: meta labels things
/// (`git.commit`, `stack`), it does not store data, and every event of the object carries it.
pub const MAX_META_ENTRIES: usize = 200;
pub const MAX_META_VALUE_BYTES: usize = 8 << 10;

pub(crate) fn validate_meta(meta: &StringMap) -> Result<(), ValidationError> {
    if meta.len() > MAX_META_ENTRIES {
        return Err(ValidationError::new(
            "meta",
            format!(
                "{} meta entries is more than the maximum of {MAX_META_ENTRIES}",
                meta.len()
            ),
        ));
    }
    if let Some((k, v)) = meta.iter().find(|(_, v)| v.len() > MAX_META_VALUE_BYTES) {
        return Err(ValidationError::new(
            "meta",
            format!(
                "meta value of {k:?} is {} bytes long, more than the maximum of {MAX_META_VALUE_BYTES}",
                v.len()
            ),
        ));
    }
    for key in meta.keys() {
        if key.is_empty()
            || key.len() > 255
            || key.contains('=')
            || key.chars().any(char::is_whitespace)
        {
            return Err(ValidationError::new(
                "meta",
                format!("invalid meta key {key:?}: 1-255 characters, no '=' or whitespace"),
            ));
        }
    }
    // The stack of an app, artifact or release names a host's rootfs: a name, never a path.
    if let Some(stack) = meta.get("stack") {
        crate::validate_stack_name(stack)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["a", "my-app", "app2", "a-b-c", &"x".repeat(63)] {
            assert!(validate_app_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "My-App",
            "a_b",
            "a.b",
            "ä",
            &"x".repeat(64),
            "../etc",
            "slipway",
        ] {
            assert!(validate_app_name(bad).is_err(), "{bad}");
        }
        let e = validate_app_name("slipway").unwrap_err();
        assert!(e.message.contains("reserved"), "{e:?}");
        assert!(validate_app_name("slipway-docs").is_ok());
    }

    #[test]
    fn strategy_json_is_kebab_case() {
        assert_eq!(
            serde_json::to_string(&DeployStrategy::OneByOne).unwrap(),
            "\"one-by-one\""
        );
        assert_eq!(
            "in-batches".parse::<DeployStrategy>().unwrap(),
            DeployStrategy::InBatches
        );
        assert!("fast".parse::<DeployStrategy>().is_err());
    }

    #[test]
    fn new_app_rejects_unknown_fields_and_zero_timeout() {
        assert!(serde_json::from_str::<NewApp>(r#"{"nmae":"x"}"#).is_err());
        let app: NewApp = serde_json::from_str(r#"{"deploy_timeout":0}"#).unwrap();
        assert!(app.validate().is_err());
    }
}
