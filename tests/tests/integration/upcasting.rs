//! Upcasting on every read path: events stored at an older version of their shape (as a former
//! release wrote them) are read in the current one by the aggregates, every read model, the
//! `as_of` fold, the event pages and the live stream, through the one `decode` and the
//! upcasters registered for them.

use std::sync::{Arc, Once};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use colloquy_infra::upcast::{register, Upcaster};

use crate::common::{Backend, TestServer};
use crate::stream::Subscription;

/// The version a former release stored: in it, one field had another name.
const FORMER: &str = "0.9";

/// Reads `FORMER` of one event type by renaming one field back to its current name.
struct Renamed {
    aggregate_type: &'static str,
    event_type: &'static str,
    was: &'static str,
    is: &'static str,
}

impl Upcaster for Renamed {
    fn aggregate_type(&self) -> &str {
        self.aggregate_type
    }

    fn event_type(&self) -> &str {
        self.event_type
    }

    fn source_version(&self) -> &str {
        FORMER
    }

    fn target_version(&self) -> &str {
        colloquy_domain::EVENT_VERSION_1
    }

    fn upcast(&self, mut payload: Value) -> Result<Value, String> {
        let fields = payload
            .get_mut(self.event_type)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("no {} object", self.event_type))?;
        let value = fields.remove(self.was).ok_or_else(|| format!("no `{}`", self.was))?;
        fields.insert(self.is.to_owned(), value);
        Ok(payload)
    }
}

/// The former shapes this test stores: a message's `content` was its `body`, a member's
/// `contact_id` was `member_id`. Registered once for the test binary; no other test stores
/// version 0.9, so no other test reads through them.
fn register_former_shapes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let renamed = [
            ("conversation", "MessageAdded", "body", "content"),
            ("group", "MemberAdded", "member_id", "contact_id"),
        ];
        for (aggregate_type, event_type, was, is) in renamed {
            register(Arc::new(Renamed { aggregate_type, event_type, was, is }));
        }
    });
}

/// `event` (an event as `/events` shows it) as the former release stored it at `sequence`: the
/// field `is` named `was`, and a new event id.
fn in_former_shape(
    event: &Value,
    sequence: usize,
    was: &str,
    is: &str,
    change: impl FnOnce(&mut Value),
) -> cqrs_es::persist::SerializedEvent {
    let event_type = event["event_type"].as_str().unwrap().to_owned();
    let mut data = event["data"].clone();
    change(&mut data);
    let fields = data.as_object_mut().unwrap();
    let value = fields.remove(is).unwrap();
    fields.insert(was.to_owned(), value);
    let mut metadata = event["metadata"].clone();
    metadata["event_id"] = json!(uuid::Uuid::now_v7());
    metadata["recorded_at"] = json!(Utc::now());
    cqrs_es::persist::SerializedEvent::new(
        event["aggregate_id"].as_str().unwrap().to_owned(),
        sequence,
        event["aggregate_type"].as_str().unwrap().to_owned(),
        event_type.clone(),
        FORMER.to_owned(),
        json!({ event_type: data }),
        metadata,
    )
}

async fn events_of_a_former_shape_read_in_the_current_one_everywhere(backend: Backend) {
    register_former_shapes();
    let server = TestServer::start(backend).await;
    let store = server.config().open_store(&[]).await.unwrap();

    // A conversation with one message as this release stores it, and one as the former did.
    let conversation = server.conversation().await;
    server.customer_message(&conversation, "as stored now").await;
    let events = server.all_events("conversations", &conversation).await;
    let message = events.iter().find(|e| e["event_type"] == "MessageAdded").unwrap();
    let former = in_former_shape(message, events.len() + 1, "body", "content", |data| {
        data["message_id"] = json!(uuid::Uuid::now_v7());
        data["content"]["text"] = json!("as stored by a former release");
    });
    let message_at = store.append(vec![former]).await.unwrap();

    // A group whose latest member was added by the former release.
    let inbox = server.contact().await;
    let (first, second, later) = (server.contact().await, server.contact().await, server.contact().await);
    let created = server
        .post(
            "/v1/groups",
            json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Former", "participants": [first]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let group = created.body["id"].as_str().unwrap().to_owned();
    let added = server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": [second]})).await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    let events = server.all_events("groups", &group).await;
    let added = events.iter().rfind(|e| e["event_type"] == "MemberAdded").unwrap();
    let former = in_former_shape(added, events.len() + 1, "member_id", "contact_id", |data| {
        data["contact_id"] = json!(later);
        data["added_at"] = json!(Utc::now());
    });
    let member_at = store.append(vec![former]).await.unwrap();
    store.close().await;

    // The aggregates: the conversation's messages, and the group's members, both commands and reads.
    let messages = server.get(&format!("/v1/conversations/{conversation}/messages?limit=10")).await;
    assert_eq!(messages.status, StatusCode::OK, "{:?}", messages.body);
    let texts: Vec<&str> =
        messages.body["data"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.contains(&"as stored by a former release"), "{texts:?}");
    let shown = server.get(&format!("/v1/groups/{group}")).await;
    assert_eq!((shown.status, &shown.body["member_count"]), (StatusCode::OK, &json!(4)), "{:?}", shown.body);

    // The read models: the inbox list's last message, and the group's members as projected.
    let list = server.get(&format!("/v1/conversations?min_position={message_at}&limit=100")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let item =
        list.body["data"].as_array().unwrap().iter().find(|c| c["id"] == conversation.as_str()).cloned();
    let preview = item.as_ref().map(|c| c["last_message"]["preview"].clone());
    assert_eq!(preview, Some(json!("as stored by a former release")), "{item:?}");
    // A command on the conversation reads it too.
    let reply = server.customer_message(&conversation, "and after it").await;
    assert!(reply > message_at);
    let groups = server.get(&format!("/v1/contacts/{later}/groups?min_position={member_at}")).await;
    assert_eq!(groups.status, StatusCode::OK, "{:?}", groups.body);
    assert_eq!(groups.body["data"][0]["group_id"], group.as_str(), "{:?}", groups.body);
    let members = server.get(&format!("/v1/groups/{group}/members?limit=10")).await;
    assert_eq!(members.status, StatusCode::OK, "{:?}", members.body);
    assert!(members.body["data"].as_array().unwrap().iter().any(|m| m["contact_id"] == later.as_str()));

    // The `as_of` fold: the member is there a moment after, and not a moment before.
    let at = |moment: chrono::DateTime<Utc>| {
        moment.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B")
    };
    let then = server.get(&format!("/v1/groups/{group}/members?limit=10&as_of={}", at(Utc::now()))).await;
    assert_eq!(then.status, StatusCode::OK, "{:?}", then.body);
    assert!(then.body["data"].as_array().unwrap().iter().any(|m| m["contact_id"] == later.as_str()));

    // The pages of events and the live stream: each event in the current shape and version.
    let events = server.all_events("conversations", &conversation).await;
    let upcast = events.iter().find(|e| e["position"] == message_at).unwrap();
    assert_eq!(upcast["event_version"], colloquy_domain::EVENT_VERSION_1);
    assert_eq!(upcast["data"]["content"]["text"], "as stored by a former release");
    assert!(upcast["data"].get("body").is_none());
    let log = server.get(&format!("/v1/events?after={}&limit=1", message_at - 1)).await;
    assert_eq!(log.body["data"][0]["event_version"], colloquy_domain::EVENT_VERSION_1, "{:?}", log.body);
    let mut stream = Subscription::open(&server, &format!("?after={}", member_at - 1), None).await;
    let (position, envelope) = stream.take(1).await.remove(0);
    assert_eq!(position, member_at);
    assert_eq!(envelope["eventversion"], colloquy_domain::EVENT_VERSION_1);
    assert_eq!(envelope["data"]["contact_id"], later.as_str());
    server.stop().await;
}

on_both_stores!(events_of_a_former_shape_read_in_the_current_one_everywhere);
