//! Builds: the record of a `git push`'s build, kept with its transcript so that it can be read
//! later (`slipway build log`) whatever the app's own logs have evicted since.

use crate::{Timestamp, ValidationError};
use serde::{Deserialize, Serialize};

/// The largest transcript a build keeps (the push flow keeps the start and the end of a longer
/// one, with a line saying what was left out): bounded so one noisy build cannot bloat the
/// database.
pub const MAX_BUILD_LOG_BYTES: usize = 1 << 20;

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Built, released and deployed: the push was accepted.
    Succeeded,
    /// The build, the release or the deploy failed (`error` says which and why): the push was
    /// rejected.
    Failed,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(BuildStatus::Succeeded),
            "failed" => Some(BuildStatus::Failed),
            _ => None,
        }
    }
}

/// A finished build (`GET /apps/:app/builds`). Its transcript is served on its own
/// (`GET /apps/:app/builds/:id/log`, plain text): lists stay small.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: uuid::Uuid,
    pub app_id: uuid::Uuid,
    /// The pushed commit.
    pub commit: String,
    pub status: BuildStatus,
    /// The release the build made, if it got that far (a failed deploy has one too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<uuid::Uuid>,
    /// Why the push failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size of the kept transcript.
    pub log_bytes: u64,
    /// When the build started.
    pub created_at: Timestamp,
    pub finished_at: Timestamp,
}

/// What the push flow records when a push's build ends.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBuild {
    pub commit: String,
    pub status: BuildStatus,
    #[serde(default)]
    pub release_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub error: Option<String>,
    /// The transcript: the lines the pusher saw as `remote: …`, newline-terminated.
    pub log: String,
    pub started_at: Timestamp,
}

impl NewBuild {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.commit.is_empty() || self.commit.len() > 64 {
            return Err(ValidationError::new(
                "commit",
                "must be a commit id (1 to 64 characters)",
            ));
        }
        if self.log.len() > MAX_BUILD_LOG_BYTES + 4096 {
            return Err(ValidationError::new(
                "log",
                format!(
                    "is {} bytes; a build keeps at most {MAX_BUILD_LOG_BYTES}",
                    self.log.len()
                ),
            ));
        }
        Ok(())
    }
}
