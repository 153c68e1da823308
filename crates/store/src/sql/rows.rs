//! Decoding rows into model types. Columns hold TEXT (ids, timestamps, JSON) and BIGINT.

use crate::{Result, StoreError};
use serde::de::DeserializeOwned;
use slipway_types::{Id, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("corrupt value in column {col}: {e}"))
}

pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn opt_int(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

pub(crate) fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(int(row, col)? != 0)
}

pub(crate) fn id(row: &AnyRow, col: &str) -> Result<Id> {
    let s = text(row, col)?;
    s.parse().map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_id(row: &AnyRow, col: &str) -> Result<Option<Id>> {
    opt_text(row, col)?
        .map(|s| s.parse().map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn time(row: &AnyRow, col: &str) -> Result<Timestamp> {
    Timestamp::parse(&text(row, col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_time(row: &AnyRow, col: &str) -> Result<Option<Timestamp>> {
    opt_text(row, col)?
        .map(|s| Timestamp::parse(&s).map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn json<T: DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T> {
    serde_json::from_str(&text(row, col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("model types serialise")
}

/// u32/u64 values go into BIGINT columns.
pub(crate) fn u32_of(row: &AnyRow, col: &str) -> Result<u32> {
    u32::try_from(int(row, col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_u32(row: &AnyRow, col: &str) -> Result<Option<u32>> {
    opt_int(row, col)?
        .map(|v| u32::try_from(v).map_err(|e| corrupt(col, e)))
        .transpose()
}
