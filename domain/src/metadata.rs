//! The metadata every stored event carries beside its payload: which tenant it belongs to, who
//! caused it, and how it relates to the request and to other events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::context::{Actor, ActorKind};
use crate::ids::TenantId;

/// Metadata of one event. cqrs-es stores metadata as a string map; [`EventMetadata::to_map`] and
/// [`EventMetadata::from_map`] are the one translation between the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Unique id of this event; the CloudEvents id and the JetStream message id downstream.
    pub event_id: Uuid,
    /// The tenant that owns the stream.
    pub tenant_id: TenantId,
    /// Who issued the command that produced the event: the token's principal, or the agent a
    /// token acted on behalf of.
    pub actor: Actor,
    /// The token that carried the command when it acted on behalf of the agent in `actor`.
    pub via_token: Option<String>,
    /// The HTTP request (or job) that carried the command, when there was one.
    pub request_id: Option<String>,
    /// Groups every event that one original request caused, across aggregates.
    pub correlation_id: Uuid,
    /// The event (or request) that directly caused this one, for events issued by process
    /// managers.
    pub causation_id: Option<Uuid>,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A metadata map that lacks a field or holds one that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event metadata field {0:?} is missing or malformed")]
pub struct MalformedMetadata(pub &'static str);

impl EventMetadata {
    /// The string map cqrs-es stores.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(9);
        map.insert("event_id".into(), self.event_id.to_string());
        map.insert("tenant_id".into(), self.tenant_id.to_string());
        map.insert("actor_kind".into(), self.actor.kind.as_str().into());
        map.insert("actor_id".into(), self.actor.id.clone());
        if let Some(token) = &self.via_token {
            map.insert("via_token".into(), token.clone());
        }
        if let Some(request_id) = &self.request_id {
            map.insert("request_id".into(), request_id.clone());
        }
        map.insert("correlation_id".into(), self.correlation_id.to_string());
        if let Some(causation_id) = self.causation_id {
            map.insert("causation_id".into(), causation_id.to_string());
        }
        map.insert(
            "recorded_at".into(),
            self.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        map
    }

    /// Reads back a map written by [`EventMetadata::to_map`].
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, MalformedMetadata> {
        let field = |name: &'static str| map.get(name).ok_or(MalformedMetadata(name));
        let uuid = |name: &'static str| {
            field(name).and_then(|v| Uuid::parse_str(v).map_err(|_| MalformedMetadata(name)))
        };
        Ok(Self {
            event_id: uuid("event_id")?,
            tenant_id: TenantId::parse(field("tenant_id")?).map_err(|_| MalformedMetadata("tenant_id"))?,
            actor: Actor {
                kind: ActorKind::parse(field("actor_kind")?).ok_or(MalformedMetadata("actor_kind"))?,
                id: field("actor_id")?.clone(),
            },
            via_token: map.get("via_token").cloned(),
            request_id: map.get("request_id").cloned(),
            correlation_id: uuid("correlation_id")?,
            causation_id: match map.get("causation_id") {
                Some(v) => Some(Uuid::parse_str(v).map_err(|_| MalformedMetadata("causation_id"))?),
                None => None,
            },
            recorded_at: DateTime::parse_from_rfc3339(field("recorded_at")?)
                .map_err(|_| MalformedMetadata("recorded_at"))?
                .with_timezone(&Utc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_the_string_map_cqrs_es_stores() {
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            tenant_id: TenantId::parse("acme").expect("valid tenant"),
            actor: Actor { kind: ActorKind::User, id: "agent-7".into() },
            via_token: Some("0192f3c4-0000-7000-8000-000000000009".into()),
            request_id: Some("req-1".into()),
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            recorded_at: DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456Z")
                .expect("valid time")
                .with_timezone(&Utc),
        };
        assert_eq!(EventMetadata::from_map(&metadata.to_map()), Ok(metadata));
    }

    #[test]
    fn a_map_without_a_tenant_is_malformed() {
        let mut map = EventMetadata {
            event_id: Uuid::now_v7(),
            tenant_id: TenantId::parse("acme").expect("valid tenant"),
            actor: Actor { kind: ActorKind::System, id: "colloquy".into() },
            via_token: None,
            request_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            recorded_at: Utc::now(),
        }
        .to_map();
        map.remove("tenant_id");
        assert_eq!(EventMetadata::from_map(&map), Err(MalformedMetadata("tenant_id")));
    }
}
