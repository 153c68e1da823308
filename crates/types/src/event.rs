//! Events: the append-only log of every write, which streams and the scheduler follow.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    App,
    Artifact,
    Release,
    /// The app's current release was set.
    AppRelease,
    Formation,
    Job,
    Deployment,
    Route,
    /// A push's build was recorded (`slipway build list`).
    Build,
}

impl ObjectType {
    pub const ALL: [ObjectType; 9] = [
        ObjectType::App,
        ObjectType::Artifact,
        ObjectType::Release,
        ObjectType::AppRelease,
        ObjectType::Formation,
        ObjectType::Job,
        ObjectType::Deployment,
        ObjectType::Route,
        ObjectType::Build,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::App => "app",
            ObjectType::Artifact => "artifact",
            ObjectType::Release => "release",
            ObjectType::AppRelease => "app_release",
            ObjectType::Formation => "formation",
            ObjectType::Job => "job",
            ObjectType::Deployment => "deployment",
            ObjectType::Route => "route",
            ObjectType::Build => "build",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOp {
    Create,
    Update,
    Delete,
}

impl EventOp {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOp::Create => "create",
            EventOp::Update => "update",
            EventOp::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [EventOp::Create, EventOp::Update, EventOp::Delete]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing: a stream resumes after the last id it saw.
    pub id: i64,
    #[serde(default)]
    pub app_id: Option<uuid::Uuid>,
    pub object_type: ObjectType,
    pub object_id: String,
    pub op: EventOp,
    /// The object as written (for deletes: as it was).
    pub data: serde_json::Value,
    pub created_at: Timestamp,
}

/// Which events to list or stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub app_id: Option<uuid::Uuid>,
    /// Empty: all types.
    pub object_types: Vec<ObjectType>,
    pub object_id: Option<String>,
    /// Only events with an id greater than this.
    pub since_id: Option<i64>,
    /// At most this many (oldest first).
    pub limit: Option<u32>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.app_id.is_none_or(|a| e.app_id == Some(a))
            && (self.object_types.is_empty() || self.object_types.contains(&e.object_type))
            && self.object_id.as_ref().is_none_or(|o| *o == e.object_id)
            && self.since_id.is_none_or(|s| e.id > s)
    }
}
