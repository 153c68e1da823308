//! Reading the event log.

use super::SqlStore;
use super::rows::{opt_id, text, time};
use crate::{Result, StoreError};
use slipway_types::{Event, EventFilter, EventOp, ObjectType};
use sqlx::any::AnyRow;

/// Lists are capped so one request can't pull the whole history.
pub const MAX_EVENTS: u32 = 1000;

fn event_from_row(row: &AnyRow) -> Result<Event> {
    let object_type = text(row, "object_type")?;
    let op = text(row, "op")?;
    Ok(Event {
        id: super::rows::int(row, "id")?,
        app_id: opt_id(row, "app_id")?,
        object_type: ObjectType::parse(&object_type).ok_or_else(|| {
            StoreError::Database(format!("unknown event object type {object_type:?}"))
        })?,
        object_id: text(row, "object_id")?,
        op: EventOp::parse(&op)
            .ok_or_else(|| StoreError::Database(format!("unknown event op {op:?}")))?,
        data: serde_json::from_str(&text(row, "data")?)
            .map_err(|e| StoreError::Database(e.to_string()))?,
        created_at: time(row, "created_at")?,
    })
}

impl SqlStore {
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        // Placeholders are numbered as conditions are added; values are bound in the same order.
        let mut conditions = vec!["id > $1".to_string()];
        let mut binds: Vec<String> = Vec::new();
        if let Some(app) = filter.app_id {
            binds.push(app.to_string());
            conditions.push(format!("app_id = ${}", binds.len() + 1));
        }
        if let Some(object_id) = &filter.object_id {
            binds.push(object_id.clone());
            conditions.push(format!("object_id = ${}", binds.len() + 1));
        }
        if !filter.object_types.is_empty() {
            let mut slots = Vec::new();
            for t in &filter.object_types {
                binds.push(t.as_str().to_string());
                slots.push(format!("${}", binds.len() + 1));
            }
            conditions.push(format!("object_type IN ({})", slots.join(", ")));
        }
        let limit = filter.limit.unwrap_or(100).min(MAX_EVENTS);
        let sql = format!(
            "SELECT * FROM events WHERE {} ORDER BY id LIMIT {limit}",
            conditions.join(" AND ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.since_id.unwrap_or(0));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn get_event(&self, event_id: i64) -> Result<Event> {
        let row = sqlx::query("SELECT * FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?;
        event_from_row(&super::one(row, "event", event_id)?)
    }
}
