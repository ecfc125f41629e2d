//! The CloudEvents 1.0 envelope every event is published in (JetStream, webhooks): built from a
//! stored event without parsing its fields, and read back into one.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::StoredEvent;
use crate::json::RawJson;

/// The metadata keys an envelope carries, borrowed unparsed from the stored text; written back
/// (for an event read from its envelope) without the keys it has no value for.
#[derive(Debug, Default, Serialize, Deserialize)]
struct EnvelopeMetadata<'a> {
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    recorded_at: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    actor_kind: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    actor_id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    via_token: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RawValue>,
}

/// Who did it, in an envelope.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EnvelopeActor<'a> {
    /// user, system, provider...
    #[serde(borrow)]
    pub kind: Option<&'a RawValue>,
    /// Their id.
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    /// The API token used.
    #[serde(borrow)]
    pub via_token: Option<&'a RawValue>,
}

/// The CloudEvents 1.0 JSON envelope of an event, with the extension attributes `tenant`,
/// `sequence` (the aggregate's) and `position` (the global one). Its values are borrowed from
/// the stored event's JSON text; serialize it to get the envelope.
#[derive(Debug, Serialize, Deserialize)]
pub struct CloudEvent<'a> {
    /// "1.0".
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
    /// The event id.
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    /// `/colloquy/<aggregate_type>`.
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    /// `colloquy.<aggregate_type>.<event_type>.v<version>`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// `<aggregate_type>/<aggregate_id>`.
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    /// When it was recorded.
    #[serde(borrow)]
    pub time: Option<&'a RawValue>,
    /// "application/json".
    #[serde(borrow)]
    pub datacontenttype: Cow<'a, str>,
    /// The event's fields (its name is `eventtype`). Left out of a NATS message larger than the
    /// server takes, which names in `dataref` where to read the event whole instead.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    /// Where to read the event whole when `data` is left out (the CloudEvents `dataref`
    /// extension): `/v1/events?after=<position - 1>&limit=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataref: Option<String>,
    /// The tenant.
    #[serde(borrow)]
    pub tenant: Option<&'a RawValue>,
    /// The aggregate's sequence.
    pub sequence: i64,
    /// The global position.
    pub position: Option<i64>,
    /// The event's name.
    #[serde(borrow)]
    pub eventtype: Cow<'a, str>,
    /// The event's shape version.
    #[serde(borrow)]
    pub eventversion: Cow<'a, str>,
    /// Who did it.
    #[serde(borrow)]
    pub actor: EnvelopeActor<'a>,
    /// The correlation id.
    #[serde(borrow)]
    pub correlationid: Option<&'a RawValue>,
    /// The causing event's id.
    #[serde(borrow)]
    pub causationid: Option<&'a RawValue>,
    /// The request id.
    #[serde(borrow)]
    pub requestid: Option<&'a RawValue>,
}

/// The CloudEvents envelope of `event` as it is (upcast it first for the current shape).
pub fn cloud_event(event: &StoredEvent) -> CloudEvent<'_> {
    let metadata: EnvelopeMetadata<'_> = event.metadata.parse().unwrap_or_default();
    // cqrs-es stores an event as {"EventName": {...fields}}; `data` carries the fields alone.
    let fields: Option<HashMap<Cow<'_, str>, &RawValue>> = event.payload.parse().ok();
    let data = match fields {
        Some(fields) if fields.len() == 1 => {
            fields.get(event.event_type.as_str()).copied().unwrap_or(event.payload.raw())
        }
        _ => event.payload.raw(),
    };
    CloudEvent {
        specversion: "1.0".into(),
        id: metadata.event_id,
        source: format!("/colloquy/{}", event.aggregate_type).into(),
        kind: format!("colloquy.{}.{}.v{}", event.aggregate_type, event.event_type, event.event_version)
            .into(),
        subject: format!("{}/{}", event.aggregate_type, event.aggregate_id).into(),
        time: metadata.recorded_at,
        datacontenttype: "application/json".into(),
        data: Some(data),
        dataref: None,
        tenant: metadata.tenant_id,
        sequence: event.sequence,
        position: event.position,
        eventtype: event.event_type.as_str().into(),
        eventversion: event.event_version.as_str().into(),
        actor: EnvelopeActor {
            kind: metadata.actor_kind,
            id: metadata.actor_id,
            via_token: metadata.via_token,
        },
        correlationid: metadata.correlation_id,
        causationid: metadata.causation_id,
        requestid: metadata.request_id,
    }
}

/// The envelope of `event`, in the current shape of its type, as JSON text.
pub fn cloud_event_json(event: &StoredEvent) -> String {
    serde_json::to_string(&cloud_event(&event.upcast_or_as_stored())).unwrap_or_default()
}

/// Reads an event back from its CloudEvents envelope (the JSON text), as a projector fed by
/// JetStream does.
pub fn from_cloud_event(envelope: &[u8]) -> Option<StoredEvent> {
    let envelope: CloudEvent<'_> = serde_json::from_slice(envelope).ok()?;
    let (aggregate_type, aggregate_id) = envelope.subject.split_once('/')?;
    let metadata = EnvelopeMetadata {
        event_id: envelope.id,
        tenant_id: envelope.tenant,
        recorded_at: envelope.time,
        actor_kind: envelope.actor.kind,
        actor_id: envelope.actor.id,
        via_token: envelope.actor.via_token,
        correlation_id: envelope.correlationid,
        causation_id: envelope.causationid,
        request_id: envelope.requestid,
    };
    // An envelope without its data (see `JetStreamTransport::publish`) is not the event.
    let data = envelope.data?;
    let payload = format!("{{{}:{}}}", serde_json::to_string(&envelope.eventtype).ok()?, data.get());
    Some(StoredEvent {
        position: envelope.position,
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        sequence: envelope.sequence,
        event_type: envelope.eventtype.into_owned(),
        event_version: envelope.eventversion.into_owned(),
        payload: RawJson::from_text(payload).ok()?,
        metadata: RawJson::from_text(serde_json::to_string(&metadata).ok()?).ok()?,
    })
}

/// The subject of an event: `<prefix>.<tenant>.<aggregate_type>.<aggregate_id>`.
pub(crate) fn subject(prefix: &str, tenant: Option<&str>, event: &StoredEvent) -> String {
    format!("{prefix}.{}.{}.{}", tenant.unwrap_or("unknown"), event.aggregate_type, event.aggregate_id)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::event::tests::stored;

    #[test]
    fn the_envelope_carries_the_fields_alone_and_the_metadata_it_names() {
        let envelope: Value = serde_json::from_str(&cloud_event_json(&stored())).expect("json");
        assert_eq!(envelope["data"], json!({"text": "Where is \"order\" 5?", "n": [1, 2]}));
        assert_eq!(envelope["type"], "colloquy.conversation.MessageAdded.v1.0");
        assert_eq!(envelope["subject"], "conversation/c-1");
        assert_eq!(envelope["tenant"], "acme");
        assert_eq!(envelope["id"], "e-1");
        assert_eq!(envelope["position"], 42);
        assert_eq!(envelope["actor"], json!({"kind": "user", "id": "u-1", "via_token": null}));
        assert_eq!(envelope["causationid"], Value::Null);
        assert_eq!(envelope["requestid"], Value::Null);
        assert!(envelope.get("unrelated").is_none());
    }

    #[test]
    fn an_event_comes_back_from_its_envelope() {
        let original = stored();
        let back = from_cloud_event(cloud_event_json(&original).as_bytes()).expect("readable");
        assert_eq!(back.payload, original.payload);
        assert_eq!((back.position, back.sequence), (Some(42), 7));
        assert_eq!((back.aggregate_type.as_str(), back.aggregate_id.as_str()), ("conversation", "c-1"));
        assert_eq!((back.event_type.as_str(), back.event_version.as_str()), ("MessageAdded", "1.0"));
        // Only the keys an envelope carries, and none that were null.
        assert_eq!(
            back.metadata.to_value(),
            json!({
                "event_id": "e-1", "tenant_id": "acme", "recorded_at": "2026-11-29T10:00:00.000001Z",
                "actor_kind": "user", "actor_id": "u-1", "correlation_id": "k-1"
            })
        );
        assert_eq!(
            subject("colloquy.events", back.tenant_id().as_deref(), &back),
            "colloquy.events.acme.conversation.c-1"
        );
        assert!(from_cloud_event(b"{\"specversion\": \"1.0\"}").is_none());
    }
}
