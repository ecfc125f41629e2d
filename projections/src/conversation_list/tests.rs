use chrono::TimeZone;
use serde_json::Map;

use colloquy_domain::contact::{ContactEvent, ContactField};
use colloquy_domain::conversation::{
    ConversationEvent, GroupType, MessageContent, MessageType, Priority, Responder, Sender, SenderKind,
    Status, StatusReason, Visibility,
};
use colloquy_domain::{Channel, ContactId, ConversationId, MessageId, TenantId};

use super::*;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, minute, 0).single().expect("valid time")
}

pub(super) fn opened() -> ConversationEvent {
    ConversationEvent::ConversationOpened {
        conversation_id: ConversationId::new_v7(),
        tenant_id: TenantId::parse("acme").expect("valid"),
        number: 4,
        contact_id: ContactId::new_v7(),
        channel: Channel::Sms,
        inbox_id: None,
        subject: Some("Hi".into()),
        priority: Priority::High,
        status: Status::Open,
        custom_fields: Map::new(),
        labels: vec!["b".into(), "a".into()],
        group_type: GroupType::Individual,
        group_id: None,
        opened_at: at(0),
    }
}

fn message(kind: SenderKind, visibility: Visibility, text: &str, minute: u32) -> ConversationEvent {
    ConversationEvent::MessageAdded {
        message_id: MessageId::new_v7(),
        sender: Sender { kind, id: Some(if kind == SenderKind::User { "agent-1" } else { "c" }.into()) },
        visibility,
        content: MessageContent {
            message_type: MessageType::Text,
            text: Some(text.into()),
            mentions: if visibility == Visibility::Internal { vec!["agent-2".into()] } else { vec![] },
            ..MessageContent::default()
        },
        response_time_ms: None,
        created_at: at(minute),
    }
}

fn reply(text: &str, minute: u32, waited_ms: i64) -> ConversationEvent {
    let ConversationEvent::MessageAdded { message_id, sender, visibility, content, created_at, .. } =
        message(SenderKind::User, Visibility::Public, text, minute)
    else {
        unreachable!("message() builds a MessageAdded")
    };
    ConversationEvent::MessageAdded {
        message_id,
        sender,
        visibility,
        content,
        response_time_ms: Some(waited_ms),
        created_at,
    }
}

fn fold(events: &[ConversationEvent]) -> Option<ConversationRow> {
    events
        .iter()
        .enumerate()
        .fold(None, |row, (i, event)| ConversationRow::apply(row, event, "c-1", i as i64 + 1))
}

#[test]
fn opening_makes_a_row_with_sorted_labels() {
    let row = fold(&[opened()]).expect("a row");
    assert_eq!(row.labels, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(row.priority, Priority::High);
    assert_eq!(row.priority_rank(), 3);
    assert_eq!(row.status, Status::Open);
    assert_eq!(row.version, 1);
    assert_eq!(row.group_type, GroupType::Individual);
}

#[test]
fn internal_notes_count_but_do_not_change_the_preview() {
    let row = fold(&[
        opened(),
        message(SenderKind::Customer, Visibility::Public, "hello", 1),
        message(SenderKind::User, Visibility::Internal, "note", 2),
    ])
    .expect("a row");
    assert_eq!(row.message_count, 2);
    assert_eq!(row.last_message_preview.as_deref(), Some("hello"));
    assert_eq!(row.last_message_at, Some(at(1)));
    assert_eq!(row.last_message_sender_kind, Some(SenderKind::Customer));
    assert_eq!(row.last_activity_at, at(2));
    assert_eq!(row.mentioned, vec!["agent-2".to_owned()]);
    assert_eq!(row.participants, vec!["agent-1".to_owned()]);
}

#[test]
fn a_waiting_customer_is_answered_and_unread_counts_follow_reads() {
    let waiting = fold(&[
        opened(),
        message(SenderKind::Customer, Visibility::Public, "one", 1),
        message(SenderKind::Customer, Visibility::Public, "two", 2),
    ])
    .expect("a row");
    assert_eq!(waiting.waiting_since, Some(at(1)));
    assert_eq!(waiting.last_responder, Some(Responder::Customer));
    assert_eq!(waiting.unread_count(), 2);

    let read = ConversationRow::apply(
        Some(waiting),
        &ConversationEvent::ConversationRead {
            user_id: "agent-1".into(),
            last_read_message_id: None,
            unread_before: 2,
            read_at: at(3),
        },
        "c-1",
        4,
    )
    .expect("a row");
    assert_eq!(read.unread_count(), 0);
    assert_eq!(read.unread_count_for("agent-9"), 2);

    let answered = ConversationRow::apply(Some(read), &reply("hi", 5, 240_000), "c-1", 5).expect("a row");
    assert_eq!(answered.waiting_since, None);
    assert_eq!(answered.first_reply_at, Some(at(5)));
    assert_eq!(answered.response_count, 1);
    assert_eq!(answered.total_response_time_ms, 240_000);
    assert_eq!(answered.last_responder, Some(Responder::Agent));
    assert_eq!(answered.updated_at, at(5));
}

#[test]
fn status_changes_move_activity_and_events_before_opening_make_no_row() {
    let row = fold(&[
        opened(),
        ConversationEvent::StatusChanged {
            from: Status::Open,
            to: Status::Snoozed,
            snoozed_until: Some(at(30)),
            reason: StatusReason::Requested,
            changed_at: at(5),
        },
    ])
    .expect("a row");
    assert_eq!(row.status, Status::Snoozed);
    assert_eq!(row.snoozed_until, Some(at(30)));
    assert_eq!(row.last_activity_at, at(5));
    assert_eq!(fold(&[message(SenderKind::Customer, Visibility::Public, "orphan", 1)]), None);
}

#[test]
fn labels_stay_sorted_and_unique() {
    let row = fold(&[
        opened(),
        ConversationEvent::LabelsAdded {
            labels: vec!["c".into(), "a".into(), "0".into()],
            changed_at: at(1),
        },
        ConversationEvent::LabelsRemoved { labels: vec!["b".into()], changed_at: at(2) },
    ])
    .expect("a row");
    assert_eq!(row.labels, vec!["0".to_owned(), "a".to_owned(), "c".to_owned()]);
}

#[test]
fn contact_summaries_follow_name_email_and_phone_changes() {
    let created = ContactEvent::ContactCreated {
        contact_id: ContactId::new_v7(),
        tenant_id: TenantId::parse("acme").expect("valid"),
        first_name: "Ann".into(),
        last_name: Some("Lee".into()),
        full_name: "Ann Lee".into(),
        phone: Some("+4915112345678".into()),
        email: None,
        preferred_channel: None,
        metadata: Map::new(),
        labels: vec![],
        created_at: at(0),
    };
    let summary = ContactSummary::apply(None, &created).expect("a summary");
    assert_eq!(summary.name.as_deref(), Some("Ann Lee"));
    let updated = ContactEvent::ContactUpdated {
        changes: vec![
            ContactField::FirstName("Anna".into()),
            ContactField::FullName("Anna Lee".into()),
            ContactField::Email(Some("anna@example.com".into())),
            ContactField::Phone(None),
        ],
        updated_at: at(1),
    };
    let summary = ContactSummary::apply(Some(summary), &updated).expect("a summary");
    assert_eq!(
        summary,
        ContactSummary { name: Some("Anna Lee".into()), email: Some("anna@example.com".into()), phone: None }
    );
    assert_eq!(ContactSummary::apply(None, &updated), None);
}

#[test]
fn the_last_message_is_from_the_sender_it_names_else_from_the_conversations_contact() {
    let mut row =
        fold(&[opened(), message(SenderKind::Customer, Visibility::Public, "hi", 1)]).expect("a row");
    // The sender named "c" (a group's member, say) wrote it; the conversation's contact did not.
    assert!(row.last_message_is_from("c"));
    assert!(!row.last_message_is_from(&row.contact_id.clone()));
    row.last_message_sender_id = None;
    assert!(row.last_message_is_from(&row.contact_id.clone()));
    let answered =
        fold(&[opened(), message(SenderKind::User, Visibility::Public, "hello", 1)]).expect("a row");
    assert!(!answered.last_message_is_from("agent-1"), "an agent's message is no contact's");
}
