//! Deployments: moving an app's formation from one release to another.

use crate::{DeployStrategy, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Pending,
    Running,
    Complete,
    Failed,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::Running => "running",
            DeploymentStatus::Complete => "complete",
            DeploymentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    pub fn is_finished(self) -> bool {
        matches!(self, DeploymentStatus::Complete | DeploymentStatus::Failed)
    }
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: uuid::Uuid,
    pub app_id: uuid::Uuid,
    #[serde(default)]
    pub old_release_id: Option<uuid::Uuid>,
    pub new_release_id: uuid::Uuid,
    pub strategy: DeployStrategy,
    pub status: DeploymentStatus,
    /// The process counts the new release is deployed with.
    #[serde(default)]
    pub processes: BTreeMap<String, u32>,
    pub deploy_timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_batch_size: Option<u32>,
    /// Why a failed deployment failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

/// Body of `POST /apps/:app/deploy`: Flynn's `{id: release}`.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    #[serde(rename = "id", alias = "release_id")]
    pub release_id: uuid::Uuid,
}
