//! How records travel through columns, the same for both backends: dataflow times as microseconds,
//! our own types as JSON text (SQLite keeps the text, PostgreSQL casts it to JSONB).

use chrono::{DateTime, Utc};
use dataflows::Time;

use super::StoreError;

pub(crate) fn to_datetime(time: Time) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time as i64).unwrap_or_default()
}

pub(crate) fn corrupt(what: &str, key: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} `{key}`: {error}"))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, key: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, key, e))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing our own types to JSON cannot fail (no maps with non-string keys, no NaN).
    serde_json::to_string(value).unwrap_or_default()
}
