//! The stored event: what the store knows of one event ([`StoredEvent`]), how a row becomes one,
//! and the one way every reader reads it as its type ([`StoredEvent::decode`]), in the current
//! shape whatever version it was stored at (`upcast.rs`).

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use sqlx::Row;

use crate::error::StoreError;
use crate::json::RawJson;
use crate::upcast;

/// One stored event with everything the store knows of it. (SQLite's log page query writes
/// each event as a JSON array of these fields in this order, read back through `Deserialize`.)
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct StoredEvent {
    /// Global position in the log; `None` only for an event stored before positions were given
    /// at insert and never numbered (migration `20261129000009_inline_positions.sql` numbers
    /// every such event it finds).
    pub position: Option<i64>,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// 1-based sequence within the aggregate.
    pub sequence: i64,
    /// Event name.
    pub event_type: String,
    /// Event shape version.
    pub event_version: String,
    /// The event as stored: `{"<event_type>": {fields}}`.
    pub payload: RawJson,
    /// Its metadata map.
    pub metadata: RawJson,
}

impl StoredEvent {
    /// The tenant its metadata names.
    pub fn tenant_id(&self) -> Option<String> {
        self.metadata.str_field("tenant_id")
    }

    /// Milliseconds since its command was decided (`recorded_at`), for the debug timings of the
    /// relay and the projectors: how long an event took to reach each of them.
    pub fn age_ms(&self) -> Option<f64> {
        let age = chrono::Utc::now().signed_duration_since(self.recorded_at()?);
        Some(age.num_microseconds()? as f64 / 1_000.0)
    }

    /// When its command was decided (`recorded_at`), if its metadata says.
    pub fn recorded_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let recorded = self.metadata.str_field("recorded_at")?;
        Some(chrono::DateTime::parse_from_rfc3339(&recorded).ok()?.to_utc())
    }

    /// This event in the current shape of its type: itself where it was stored in it (no copy),
    /// otherwise a copy that the upcasters brought to it, with their version.
    pub fn upcast(&self) -> Result<Cow<'_, StoredEvent>, DecodeError> {
        if upcast::is_current(&self.aggregate_type, &self.event_type, &self.event_version) {
            return Ok(Cow::Borrowed(self));
        }
        let payload = self.payload.parse().map_err(|e| self.unreadable(&e))?;
        let (version, payload) =
            upcast::upcast(&self.aggregate_type, &self.event_type, &self.event_version, payload)
                .map_err(|e| self.unreadable(&e))?;
        Ok(Cow::Owned(StoredEvent {
            event_version: version,
            payload: RawJson::from_value(&payload),
            ..self.clone()
        }))
    }

    /// This event in the current shape, or as stored where an upcaster refuses it (logged as a
    /// warning naming it): for readers that pass events on rather than stop at one, such as the
    /// relay, the event streams and the log's pages, whose events say their version.
    pub fn upcast_or_as_stored(&self) -> Cow<'_, StoredEvent> {
        self.upcast().unwrap_or_else(|error| {
            tracing::warn!(%error, "passed on as stored");
            Cow::Borrowed(self)
        })
    }

    /// The event read as `E` (the aggregate's event enum, or a part of it that a reader needs),
    /// in the current shape: the one way every reader reads a stored event.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, DecodeError> {
        self.upcast()?.payload.parse().map_err(|e| self.unreadable(&e))
    }

    /// A [`DecodeError`] for this event.
    pub fn unreadable(&self, reason: &dyn std::fmt::Display) -> DecodeError {
        DecodeError {
            position: self.position,
            event: format!("{} {}", self.event_type, self.event_version),
            stream: format!("{} {} #{}", self.aggregate_type, self.aggregate_id, self.sequence),
            reason: reason.to_string(),
        }
    }
}

/// A stored event that does not read as its type: which one, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the event at position {} ({event}, {stream}) does not read: {reason}",
    position.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
)]
pub struct DecodeError {
    /// Its global position, where it has one.
    pub position: Option<i64>,
    /// Its type and the version it was stored at (`MessageAdded 1.0`).
    pub event: String,
    /// Its aggregate and its sequence there (`conversation <id> #3`).
    pub stream: String,
    /// Why it does not read.
    pub reason: String,
}

/// How much of each event's metadata a read of the log carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Metadata {
    /// All of it.
    #[default]
    All,
    /// Only `{"tenant_id": ...}`, from the log's own column: for readers that need nothing
    /// else, such as most projections. Metadata is about 40% of an event's stored bytes, and
    /// PostgreSQL prints every JSONB value it returns as text.
    TenantOnly,
}

pub(crate) fn stored_event_pg(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, StoreError> {
    stored_event_pg_with(row, Metadata::All)
}

/// `{"tenant_id": ...}`: the metadata of a read that asked for only the tenant, which it reads
/// as a `tenant_id` column in place of `metadata`.
fn tenant_only(tenant: &str) -> RawJson {
    RawJson::from_value(&serde_json::json!({ "tenant_id": tenant }))
}

/// A `json` column's text, kept as PostgreSQL checked it (see [`RawJson::from_stored_json`]); a
/// column of another type (`jsonb`) is read and checked as JSON.
fn stored_json(row: &sqlx::postgres::PgRow, column: &str) -> Result<RawJson, sqlx::Error> {
    use sqlx::{Column, TypeInfo};
    let is_json = row.columns().iter().any(|c| c.name() == column && c.type_info().name() == "JSON");
    if is_json {
        Ok(RawJson::from_stored_json(row.try_get_unchecked::<String, _>(column)?))
    } else {
        Ok(row.try_get::<sqlx::types::Json<RawJson>, _>(column)?.0)
    }
}

/// A log row as `metadata` asked for it.
pub(crate) fn stored_event_pg_with(
    row: &sqlx::postgres::PgRow,
    metadata: Metadata,
) -> Result<StoredEvent, StoreError> {
    let metadata = match metadata {
        Metadata::All => row.try_get::<sqlx::types::Json<RawJson>, _>("metadata")?.0,
        Metadata::TenantOnly => tenant_only(row.try_get("tenant_id")?),
    };
    Ok(StoredEvent {
        position: row.try_get("position").ok().flatten(),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: stored_json(row, "payload")?,
        metadata,
    })
}

/// An event row of one aggregate's stream, with all its metadata. (Pages of the log are read
/// otherwise, as one row each: see `log::read_log`.)
pub(crate) fn stored_event_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
    let json = |column: &str| -> Result<RawJson, StoreError> {
        let text: String = row.try_get(column)?;
        RawJson::from_text(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    };
    Ok(StoredEvent {
        position: row.try_get("position").ok().flatten(),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: json("payload")?,
        metadata: json("metadata")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A stored event with metadata of every kind an envelope carries, for tests.
    pub(crate) fn stored() -> StoredEvent {
        StoredEvent {
            position: Some(42),
            aggregate_type: "conversation".into(),
            aggregate_id: "c-1".into(),
            sequence: 7,
            event_type: "MessageAdded".into(),
            event_version: "1.0".into(),
            payload: json!({"MessageAdded": {"text": "Where is \"order\" 5?", "n": [1, 2]}}).into(),
            metadata: json!({
                "event_id": "e-1", "tenant_id": "acme", "recorded_at": "2026-11-29T10:00:00.000001Z",
                "actor_kind": "user", "actor_id": "u-1", "correlation_id": "k-1", "causation_id": null,
                "unrelated": {"kept": false}
            })
            .into(),
        }
    }
}
