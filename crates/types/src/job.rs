//! Formations (how many of each process type should run) and jobs (what runs).

use crate::{StringMap, Timestamp, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired process counts of one release of an app. Keyed by (app, release), so an old and a new
/// release can both have formations during a deployment.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation {
    pub app_id: uuid::Uuid,
    pub release_id: uuid::Uuid,
    #[serde(default)]
    pub processes: BTreeMap<String, u32>,
    /// Host tags each process type's jobs must be placed on.
    #[serde(default)]
    pub tags: BTreeMap<String, StringMap>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Body of `PUT /apps/:app/formations/:release`.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormationUpdate {
    #[serde(default)]
    pub processes: BTreeMap<String, u32>,
    #[serde(default)]
    pub tags: BTreeMap<String, StringMap>,
}

/// Above this, a typo (`web=30000`) is more likely than intent.
pub const MAX_PROCESS_COUNT: u32 = 10_000;

impl FormationUpdate {
    pub fn validate(&self, known_types: &[&str]) -> Result<(), ValidationError> {
        let unknown: Vec<String> = self
            .processes
            .keys()
            .chain(self.tags.keys())
            .filter(|t| !known_types.contains(&t.as_str()))
            .map(|t| format!("{t:?}"))
            .collect();
        if !unknown.is_empty() {
            return Err(ValidationError::new(
                "processes",
                format!("unknown process types: {}", unknown.join(", ")),
            ));
        }
        if let Some((t, n)) = self.processes.iter().find(|(_, n)| **n > MAX_PROCESS_COUNT) {
            return Err(ValidationError::new(
                "processes",
                format!("{t}={n} is more than the maximum of {MAX_PROCESS_COUNT}"),
            ));
        }
        Ok(())
    }
}

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    /// No host matches the formation's tags; starts when one appears.
    Blocked,
    Starting,
    Up,
    Stopping,
    Down,
    Crashed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Blocked => "blocked",
            JobState::Starting => "starting",
            JobState::Up => "up",
            JobState::Stopping => "stopping",
            JobState::Down => "down",
            JobState::Crashed => "crashed",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// Whether the job is gone for good (shown only by `ps -a`).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Down | JobState::Crashed | JobState::Failed)
    }
}

/// One process of one release, on one host. Written by the scheduler, read by everyone.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `<host id>-<uuid>` once placed (Flynn's form), a uuid before.
    pub id: String,
    pub app_id: uuid::Uuid,
    pub release_id: uuid::Uuid,
    /// None for one-off jobs (`slipway run`).
    #[serde(default)]
    pub process_type: Option<String>,
    #[serde(default)]
    pub host_id: Option<String>,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default)]
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_error: Option<String>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub meta: StringMap,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Job {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 200
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ValidationError::new(
                "id",
                format!("invalid job id {:?}", self.id),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_process_types_are_named() {
        let mut f = FormationUpdate::default();
        f.processes.insert("web".into(), 3);
        f.processes.insert("foo".into(), 1);
        let err = f.validate(&["web", "worker"]).unwrap_err();
        assert_eq!(err.message, "unknown process types: \"foo\"");
        f.processes.remove("foo");
        assert!(f.validate(&["web"]).is_ok());
        f.processes.insert("web".into(), MAX_PROCESS_COUNT + 1);
        assert!(f.validate(&["web"]).is_err());
    }

    #[test]
    fn job_states() {
        assert_eq!(JobState::parse("up"), Some(JobState::Up));
        assert_eq!(JobState::parse("nope"), None);
        assert!(JobState::Down.is_finished() && !JobState::Up.is_finished());
    }
}

/// Body of `POST /apps/:app/jobs`: a one-off job (`slipway run -d`) of the app's current release
/// (or `release`), with the release's env plus `env`.
#[derive(utoipa::ToSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    #[schema(min_items = 1)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: StringMap,
    #[serde(default)]
    pub release: Option<uuid::Uuid>,
    /// Keep the job's stdin open for `POST /apps/:app/jobs/:job/attach` (attached `slipway
    /// run`); output before the attach is kept for it.
    #[serde(default)]
    pub attach: bool,
    /// With `attach`: give the job a pty of this size instead of pipes.
    #[serde(default)]
    pub tty: Option<TermSize>,
    /// Job metadata, e.g. `log=1` (`slipway run --enable-log`: the log aggregator keeps the
    /// output of attached jobs only when asked).
    #[serde(default)]
    pub meta: StringMap,
}

/// A terminal's size in characters.
#[derive(utoipa::ToSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// One line of a job's output (`GET /apps/:app/jobs/:job/output`, NDJSON): `stream` is `stdout`,
/// `stderr` or `init` (the host's notes about the job).
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub stream: String,
    pub msg: String,
}
