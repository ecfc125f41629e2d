//! Given/when/then tests for every Conversation command, refusals included.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::context::{Actor, ActorKind};

type ConversationTest = TestFramework<Conversation>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time")
}

fn services() -> CommandContext {
    CommandContext::new(now(), Actor { kind: ActorKind::Token, id: "test".into() })
}

fn services_at(at: DateTime<Utc>) -> CommandContext {
    CommandContext::new(at, Actor { kind: ActorKind::Token, id: "test".into() })
}

fn conversation_id() -> ConversationId {
    ConversationId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_00c1))
}

fn contact_id() -> ContactId {
    ContactId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_00a1))
}

fn message_id(n: u128) -> MessageId {
    MessageId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_1000 + n))
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

fn opened() -> ConversationEvent {
    opened_as(GroupType::Individual, None)
}

fn opened_as(group_type: GroupType, group_id: Option<GroupId>) -> ConversationEvent {
    ConversationEvent::ConversationOpened {
        conversation_id: conversation_id(),
        tenant_id: tenant(),
        number: 7,
        contact_id: contact_id(),
        channel: Channel::Whatsapp,
        inbox_id: Some("inbox-1".into()),
        subject: Some("Order status".into()),
        priority: Priority::Medium,
        status: Status::Open,
        custom_fields: Map::new(),
        labels: vec![],
        group_type,
        group_id,
        opened_at: now(),
    }
}

fn deleted() -> ConversationEvent {
    ConversationEvent::ConversationDeleted { deleted_at: now() }
}

fn status_changed(from: Status, to: Status, snoozed_until: Option<DateTime<Utc>>) -> ConversationEvent {
    ConversationEvent::StatusChanged {
        from,
        to,
        snoozed_until,
        reason: StatusReason::Requested,
        changed_at: now(),
    }
}

fn customer() -> Sender {
    Sender { kind: SenderKind::Customer, id: None }
}

fn agent(id: &str) -> Sender {
    Sender { kind: SenderKind::User, id: Some(id.into()) }
}

fn text(body: &str) -> MessageContent {
    MessageContent { message_type: MessageType::Text, text: Some(body.into()), ..MessageContent::default() }
}

fn add_text_from(n: u128, sender: Sender, body: &str) -> ConversationCommand {
    ConversationCommand::AddMessage(NewMessage {
        message_id: message_id(n),
        sender,
        visibility: Visibility::Public,
        content: text(body),
    })
}

fn customer_said(n: u128, body: &str, at: DateTime<Utc>) -> ConversationEvent {
    ConversationEvent::MessageAdded {
        message_id: message_id(n),
        sender: Sender { kind: SenderKind::Customer, id: Some(contact_id().to_string()) },
        visibility: Visibility::Public,
        content: text(body),
        response_time_ms: None,
        created_at: at,
    }
}

fn agent_said(n: u128, body: &str, response_time_ms: Option<i64>, at: DateTime<Utc>) -> ConversationEvent {
    ConversationEvent::MessageAdded {
        message_id: message_id(n),
        sender: agent("agent-1"),
        visibility: Visibility::Public,
        content: text(body),
        response_time_ms,
        created_at: at,
    }
}

fn state_after(events: Vec<ConversationEvent>) -> Conversation {
    let mut conversation = Conversation::default();
    for event in events {
        conversation.apply(event);
    }
    conversation
}

fn open_command(conversation: NewConversation) -> ConversationCommand {
    ConversationCommand::OpenConversation {
        conversation_id: conversation_id(),
        tenant_id: tenant(),
        number: 7,
        conversation,
    }
}

fn whatsapp_conversation() -> NewConversation {
    NewConversation {
        contact_id: Some(contact_id()),
        channel: Some(Channel::Whatsapp),
        inbox_id: Some("inbox-1".into()),
        subject: Some(" Order status ".into()),
        ..NewConversation::default()
    }
}

// ---- open ----

#[test]
fn opening_a_conversation_records_its_number_contact_and_channel() {
    ConversationTest::with(services())
        .given_no_previous_events()
        .when(open_command(whatsapp_conversation()))
        .then_expect_events(vec![opened()]);
}

#[test]
fn a_conversation_cannot_be_opened_twice() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(open_command(whatsapp_conversation()))
        .then_expect_error(ConversationError::AlreadyExists(conversation_id()));
}

#[test]
fn a_conversation_needs_a_contact_and_a_channel() {
    ConversationTest::with(services())
        .given_no_previous_events()
        .when(open_command(NewConversation { contact_id: None, ..whatsapp_conversation() }))
        .then_expect_error(FieldError::new("contact_id", "is required").into());
    ConversationTest::with(services())
        .given_no_previous_events()
        .when(open_command(NewConversation { channel: None, ..whatsapp_conversation() }))
        .then_expect_error(FieldError::new("channel", "is required").into());
}

#[test]
fn a_conversation_cannot_open_closed_or_snoozed() {
    let result = ConversationTest::with(services())
        .given_no_previous_events()
        .when(open_command(NewConversation { status: Some(Status::Closed), ..whatsapp_conversation() }))
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "status"));
}

#[test]
fn commands_on_a_conversation_that_was_never_opened_are_refused() {
    ConversationTest::with(services())
        .given_no_previous_events()
        .when(add_text_from(1, customer(), "hi"))
        .then_expect_error(ConversationError::NotFound);
}

// ---- details ----

#[test]
fn a_patch_records_one_event_per_changed_detail() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::UpdateConversation(ConversationPatch {
            subject: Some(Some("Refund".into())),
            priority: Some(Priority::Urgent),
            custom_fields: Some(json!({"order": "A-1"}).as_object().cloned().unwrap_or_default()),
            starred: Some(true),
        }))
        .then_expect_events(vec![
            ConversationEvent::SubjectChanged { subject: Some("Refund".into()), changed_at: now() },
            ConversationEvent::PriorityChanged {
                from: Priority::Medium,
                to: Priority::Urgent,
                changed_at: now(),
            },
            ConversationEvent::CustomFieldsChanged {
                custom_fields: json!({"order": "A-1"}).as_object().cloned().unwrap_or_default(),
                changed_at: now(),
            },
            ConversationEvent::ConversationStarred { starred_at: now() },
        ]);
}

#[test]
fn a_patch_that_changes_nothing_records_nothing() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::UpdateConversation(ConversationPatch {
            subject: Some(Some("Order status".into())),
            priority: Some(Priority::Medium),
            starred: Some(false),
            custom_fields: None,
        }))
        .then_expect_events(vec![]);
}

#[test]
fn unstarring_a_starred_conversation_records_it() {
    ConversationTest::with(services())
        .given(vec![opened(), ConversationEvent::ConversationStarred { starred_at: now() }])
        .when(ConversationCommand::UpdateConversation(ConversationPatch {
            starred: Some(false),
            ..ConversationPatch::default()
        }))
        .then_expect_events(vec![ConversationEvent::ConversationUnstarred { unstarred_at: now() }]);
}

#[test]
fn custom_fields_are_merged_and_null_removes_a_key() {
    let given = ConversationEvent::CustomFieldsChanged {
        custom_fields: json!({"order": "A-1", "tier": "gold"}).as_object().cloned().unwrap_or_default(),
        changed_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), given])
        .when(ConversationCommand::UpdateConversation(ConversationPatch {
            custom_fields: Some(json!({"tier": null}).as_object().cloned().unwrap_or_default()),
            ..ConversationPatch::default()
        }))
        .then_expect_events(vec![ConversationEvent::CustomFieldsChanged {
            custom_fields: json!({"order": "A-1"}).as_object().cloned().unwrap_or_default(),
            changed_at: now(),
        }]);
}

#[test]
fn a_subject_with_control_characters_is_refused() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::UpdateConversation(ConversationPatch {
            subject: Some(Some("bad\u{7}".into())),
            ..ConversationPatch::default()
        }))
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "subject"));
}

// ---- status ----

#[test]
fn closing_an_open_conversation_records_the_change() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::ChangeStatus { status: Status::Closed, snoozed_until: None })
        .then_expect_events(vec![status_changed(Status::Open, Status::Closed, None)]);
}

#[test]
fn closing_a_closed_conversation_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Closed, None)])
        .when(ConversationCommand::ChangeStatus { status: Status::Closed, snoozed_until: None })
        .then_expect_error(ConversationError::AlreadyInStatus(Status::Closed));
}

#[test]
fn snoozing_until_a_future_time_records_the_time() {
    let until = now() + Duration::hours(2);
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::ChangeStatus { status: Status::Snoozed, snoozed_until: Some(until) })
        .then_expect_events(vec![status_changed(Status::Open, Status::Snoozed, Some(until))]);
}

#[test]
fn snoozing_past_year_9999_is_refused() {
    let until = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("a date");
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::ChangeStatus { status: Status::Snoozed, snoozed_until: Some(until) })
        .then_expect_error(ConversationError::Invalid(FieldError::new(
            "snoozed_until",
            validate::INSTANT_RANGE,
        )));
}

#[test]
fn snoozing_until_a_past_time_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::ChangeStatus { status: Status::Snoozed, snoozed_until: Some(now()) })
        .then_expect_error(ConversationError::SnoozeInPast);
}

#[test]
fn a_snooze_time_with_another_status_is_refused() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::ChangeStatus {
            status: Status::Pending,
            snoozed_until: Some(now() + Duration::hours(1)),
        })
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "snoozed_until"));
}

#[test]
fn a_snoozed_conversation_can_be_snoozed_again_to_another_time() {
    let first = now() + Duration::hours(1);
    let second = now() + Duration::hours(3);
    ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Snoozed, Some(first))])
        .when(ConversationCommand::ChangeStatus { status: Status::Snoozed, snoozed_until: Some(second) })
        .then_expect_events(vec![status_changed(Status::Snoozed, Status::Snoozed, Some(second))]);
}

#[test]
fn a_customer_message_wakes_a_conversation_snoozed_without_a_time() {
    let later = now();
    ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Snoozed, None)])
        .when(add_text_from(1, customer(), "any news?"))
        .then_expect_events(vec![
            customer_said(1, "any news?", later),
            ConversationEvent::StatusChanged {
                from: Status::Snoozed,
                to: Status::Open,
                snoozed_until: None,
                reason: StatusReason::CustomerMessage,
                changed_at: later,
            },
        ]);
}

#[test]
fn a_customer_message_reopens_a_closed_conversation() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Closed, None)])
        .when(add_text_from(1, customer(), "one more thing"))
        .inspect_result()
        .expect("accepted");
    assert!(matches!(
        result.last(),
        Some(ConversationEvent::StatusChanged {
            to: Status::Open,
            reason: StatusReason::CustomerMessage,
            ..
        })
    ));
}

#[test]
fn an_agent_message_does_not_reopen_a_closed_conversation() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Closed, None)])
        .when(add_text_from(1, agent("agent-1"), "follow-up"))
        .inspect_result()
        .expect("accepted");
    assert_eq!(result.len(), 1);
}

#[test]
fn the_snooze_timer_reopens_a_conversation_whose_time_has_come() {
    let until = now() + Duration::hours(1);
    ConversationTest::with(services_at(until))
        .given(vec![opened(), status_changed(Status::Open, Status::Snoozed, Some(until))])
        .when(ConversationCommand::WakeFromSnooze)
        .then_expect_events(vec![ConversationEvent::StatusChanged {
            from: Status::Snoozed,
            to: Status::Open,
            snoozed_until: None,
            reason: StatusReason::SnoozeExpired,
            changed_at: until,
        }]);
}

#[test]
fn the_snooze_timer_refuses_an_early_wake_up_and_a_conversation_that_is_not_snoozed() {
    let until = now() + Duration::hours(1);
    ConversationTest::with(services())
        .given(vec![opened(), status_changed(Status::Open, Status::Snoozed, Some(until))])
        .when(ConversationCommand::WakeFromSnooze)
        .then_expect_error(ConversationError::SnoozeNotDue);
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::WakeFromSnooze)
        .then_expect_error(ConversationError::NotSnoozed);
}

// ---- assignment ----

#[test]
fn assigning_a_user_and_team_records_both() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::Assign {
            assignee_id: Some("agent-1".into()),
            team_id: Some("billing".into()),
        })
        .then_expect_events(vec![ConversationEvent::ConversationAssigned {
            assignee_id: Some("agent-1".into()),
            team_id: Some("billing".into()),
            previous_assignee_id: None,
            previous_team_id: None,
            assigned_at: now(),
        }]);
}

#[test]
fn assigning_only_a_team_keeps_the_assigned_user() {
    let assigned = ConversationEvent::ConversationAssigned {
        assignee_id: Some("agent-1".into()),
        team_id: None,
        previous_assignee_id: None,
        previous_team_id: None,
        assigned_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), assigned])
        .when(ConversationCommand::Assign { assignee_id: None, team_id: Some("billing".into()) })
        .then_expect_events(vec![ConversationEvent::ConversationAssigned {
            assignee_id: Some("agent-1".into()),
            team_id: Some("billing".into()),
            previous_assignee_id: Some("agent-1".into()),
            previous_team_id: None,
            assigned_at: now(),
        }]);
}

#[test]
fn an_assignment_naming_nobody_is_refused() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::Assign { assignee_id: None, team_id: None })
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(_))));
}

#[test]
fn unassigning_records_who_was_assigned_and_unassigning_nobody_records_nothing() {
    let assigned = ConversationEvent::ConversationAssigned {
        assignee_id: Some("agent-1".into()),
        team_id: None,
        previous_assignee_id: None,
        previous_team_id: None,
        assigned_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), assigned])
        .when(ConversationCommand::Unassign)
        .then_expect_events(vec![ConversationEvent::ConversationUnassigned {
            previous_assignee_id: Some("agent-1".into()),
            previous_team_id: None,
            unassigned_at: now(),
        }]);
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::Unassign)
        .then_expect_events(vec![]);
}

// ---- labels ----

#[test]
fn labels_are_added_and_removed_only_where_they_change_something() {
    let added = ConversationEvent::LabelsAdded { labels: vec!["billing".into()], changed_at: now() };
    ConversationTest::with(services())
        .given(vec![opened(), added])
        .when(ConversationCommand::ChangeLabels {
            add: vec!["Billing".into(), "vip".into()],
            remove: vec!["billing-old".into(), "billing".into()],
        })
        .then_expect_events(vec![ConversationEvent::LabelsAdded {
            labels: vec!["vip".into()],
            changed_at: now(),
        }]);
}

#[test]
fn removing_a_label_records_it() {
    let added =
        ConversationEvent::LabelsAdded { labels: vec!["billing".into(), "vip".into()], changed_at: now() };
    ConversationTest::with(services())
        .given(vec![opened(), added])
        .when(ConversationCommand::ChangeLabels { add: vec![], remove: vec!["vip".into()] })
        .then_expect_events(vec![ConversationEvent::LabelsRemoved {
            labels: vec!["vip".into()],
            changed_at: now(),
        }]);
}

#[test]
fn more_than_the_label_limit_is_refused() {
    let many: Vec<String> = (0..MAX_LABELS).map(|i| format!("l{i}")).collect();
    let added = ConversationEvent::LabelsAdded { labels: many, changed_at: now() };
    ConversationTest::with(services())
        .given(vec![opened(), added])
        .when(ConversationCommand::ChangeLabels { add: vec!["one-more".into()], remove: vec![] })
        .then_expect_error(ConversationError::TooManyLabels);
}

// ---- read receipts ----

#[test]
fn marking_read_records_the_unread_count_it_clears() {
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "a", now()), customer_said(2, "b", now())])
        .when(ConversationCommand::MarkRead { user_id: "agent-1".into() })
        .then_expect_events(vec![ConversationEvent::ConversationRead {
            user_id: "agent-1".into(),
            last_read_message_id: Some(message_id(2)),
            unread_before: 2,
            read_at: now(),
        }]);
}

#[test]
fn marking_read_twice_without_new_messages_records_nothing() {
    let read = ConversationEvent::ConversationRead {
        user_id: "agent-1".into(),
        last_read_message_id: Some(message_id(1)),
        unread_before: 1,
        read_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "a", now()), read])
        .when(ConversationCommand::MarkRead { user_id: "agent-1".into() })
        .then_expect_events(vec![]);
}

#[test]
fn unread_counts_are_per_reader_and_count_customer_messages_since_their_read() {
    let read = ConversationEvent::ConversationRead {
        user_id: "agent-1".into(),
        last_read_message_id: Some(message_id(1)),
        unread_before: 1,
        read_at: now(),
    };
    let conversation = state_after(vec![
        opened(),
        customer_said(1, "a", now()),
        read,
        agent_said(2, "reply", Some(0), now()),
        customer_said(3, "b", now()),
        customer_said(4, "c", now()),
    ]);
    assert_eq!(conversation.unread_count_for("agent-1"), 2);
    assert_eq!(conversation.unread_count_for("agent-2"), 3);
    assert_eq!(conversation.unread_count(), 2);
}

// ---- delete ----

#[test]
fn a_deleted_conversation_refuses_new_messages() {
    ConversationTest::with(services())
        .given(vec![opened(), deleted()])
        .when(add_text_from(1, customer(), "hi"))
        .then_expect_error(ConversationError::Deleted(conversation_id()));
}

#[test]
fn a_deleted_conversation_refuses_every_other_command_too() {
    for command in [
        ConversationCommand::DeleteConversation,
        ConversationCommand::ChangeStatus { status: Status::Closed, snoozed_until: None },
        ConversationCommand::Unassign,
        ConversationCommand::MarkRead { user_id: "agent-1".into() },
    ] {
        ConversationTest::with(services())
            .given(vec![opened(), deleted()])
            .when(command)
            .then_expect_error(ConversationError::Deleted(conversation_id()));
    }
}

#[test]
fn deleting_records_a_tombstone() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::DeleteConversation)
        .then_expect_events(vec![deleted()]);
}

// ---- messages ----

#[test]
fn a_customer_message_is_recorded_with_the_contact_as_sender() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(add_text_from(1, customer(), "hi"))
        .then_expect_events(vec![customer_said(1, "hi", now())]);
}

#[test]
fn a_customer_message_from_someone_else_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(add_text_from(1, Sender { kind: SenderKind::Customer, id: Some("stranger".into()) }, "hi"))
        .then_expect_error(ConversationError::SenderNotInConversation("stranger".into()));
}

#[test]
fn a_customer_cannot_post_an_internal_note() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(1),
            sender: customer(),
            visibility: Visibility::Internal,
            content: text("psst"),
        }))
        .then_expect_error(ConversationError::CustomerMessageNotPublic);
}

#[test]
fn a_user_message_needs_the_user_id() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(add_text_from(1, Sender { kind: SenderKind::User, id: None }, "hello"))
        .then_expect_error(ConversationError::UserSenderWithoutId);
}

#[test]
fn an_agent_reply_records_how_long_the_customer_waited() {
    let asked = now() - Duration::seconds(90);
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "hi", asked)])
        .when(add_text_from(2, agent("agent-1"), "hello!"))
        .then_expect_events(vec![agent_said(2, "hello!", Some(90_000), now())]);
}

#[test]
fn an_internal_note_does_not_end_the_customers_wait() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "hi", now())])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(2),
            sender: agent("agent-1"),
            visibility: Visibility::Internal,
            content: text("looking into it"),
        }))
        .inspect_result()
        .expect("accepted");
    assert!(matches!(result.as_slice(), [ConversationEvent::MessageAdded { response_time_ms: None, .. }]));
}

#[test]
fn a_duplicate_message_id_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "hi", now())])
        .when(add_text_from(1, customer(), "hi again"))
        .then_expect_error(ConversationError::DuplicateMessage(message_id(1)));
}

#[test]
fn a_reply_to_a_message_that_is_not_there_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(2),
            sender: agent("agent-1"),
            visibility: Visibility::Public,
            content: MessageContent { reply_to: Some(message_id(1)), ..text("re") },
        }))
        .then_expect_error(ConversationError::UnknownReplyTarget(message_id(1)));
}

#[test]
fn a_reply_to_an_existing_message_is_recorded() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "hi", now())])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(2),
            sender: agent("agent-1"),
            visibility: Visibility::Public,
            content: MessageContent {
                reply_to: Some(message_id(1)),
                forwarded: true,
                mentions: vec!["agent-2".into()],
                ..text("re")
            },
        }))
        .inspect_result();
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn each_message_type_requires_its_content() {
    let cases = [
        (MessageType::Text, "text"),
        (MessageType::Media, "attachments"),
        (MessageType::Template, "template"),
        (MessageType::Interactive, "interactive"),
        (MessageType::Location, "location"),
        (MessageType::Contacts, "contacts"),
        (MessageType::Sticker, "attachments"),
        (MessageType::Email, "email"),
        (MessageType::System, "text"),
    ];
    for (message_type, field) in cases {
        let result = ConversationTest::with(services())
            .given(vec![opened()])
            .when(ConversationCommand::AddMessage(NewMessage {
                message_id: message_id(1),
                sender: agent("agent-1"),
                visibility: Visibility::Public,
                content: MessageContent { message_type, ..MessageContent::default() },
            }))
            .inspect_result();
        assert!(
            matches!(&result, Err(ConversationError::Invalid(e)) if e.field == field),
            "{message_type:?}: {result:?}"
        );
    }
}

#[test]
fn an_email_message_with_its_envelope_is_recorded_with_normalised_addresses() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(1),
            sender: customer(),
            visibility: Visibility::Public,
            content: MessageContent {
                message_type: MessageType::Email,
                text: Some("Hello".into()),
                email: Some(Box::new(EmailEnvelope {
                    from: "ann@Example.com".into(),
                    to: vec!["support@Acme.io".into()],
                    cc: vec![],
                    bcc: vec![],
                    subject: Some("Order".into()),
                    thread_id: Some("t-1".into()),
                    in_reply_to: None,
                    reply_to: None,
                    direction: Direction::Inbound,
                })),
                ..MessageContent::default()
            },
        }))
        .inspect_result()
        .expect("accepted");
    match result.as_slice() {
        [ConversationEvent::MessageAdded { content, .. }] => {
            let envelope = content.email.as_ref().expect("envelope kept");
            assert_eq!(envelope.from, "ann@example.com");
            assert_eq!(envelope.to, vec!["support@acme.io".to_owned()]);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn an_email_with_a_bad_recipient_is_refused() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(1),
            sender: agent("agent-1"),
            visibility: Visibility::Public,
            content: MessageContent {
                message_type: MessageType::Email,
                text: Some("Hello".into()),
                email: Some(Box::new(EmailEnvelope {
                    from: "support@acme.io".into(),
                    to: vec!["not an address".into()],
                    cc: vec![],
                    bcc: vec![],
                    subject: None,
                    thread_id: None,
                    in_reply_to: None,
                    reply_to: None,
                    direction: Direction::Outbound,
                })),
                ..MessageContent::default()
            },
        }))
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "email.to"));
}

#[test]
fn attachments_need_an_http_url_and_locations_valid_coordinates() {
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(1),
            sender: customer(),
            visibility: Visibility::Public,
            content: MessageContent {
                message_type: MessageType::Media,
                attachments: vec![Attachment {
                    url: "file:///etc/passwd".into(),
                    name: None,
                    mime_type: None,
                    size: None,
                }],
                ..MessageContent::default()
            },
        }))
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "attachments.url"));
    let result = ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::AddMessage(NewMessage {
            message_id: message_id(1),
            sender: customer(),
            visibility: Visibility::Public,
            content: MessageContent {
                message_type: MessageType::Location,
                location: Some(Box::new(Location {
                    latitude: 91.0,
                    longitude: 0.0,
                    name: None,
                    address: None,
                })),
                ..MessageContent::default()
            },
        }))
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "location.latitude"));
}

#[test]
fn message_statistics_follow_the_thread() {
    let t0 = now();
    let conversation = state_after(vec![
        opened(),
        customer_said(1, "hi", t0),
        customer_said(2, "anyone?", t0 + Duration::seconds(30)),
        agent_said(3, "hello", Some(60_000), t0 + Duration::seconds(60)),
        customer_said(4, "thanks", t0 + Duration::seconds(120)),
        agent_said(5, "welcome", Some(30_000), t0 + Duration::seconds(150)),
    ]);
    assert_eq!(conversation.messages.len(), 5);
    assert_eq!(conversation.response_count, 2);
    assert_eq!(conversation.total_response_time_ms, 90_000);
    assert_eq!(conversation.first_reply_at, Some(t0 + Duration::seconds(60)));
    assert_eq!(conversation.customer_waiting_since, None);
    assert_eq!(conversation.last_responder, Some(Responder::Agent));
    assert_eq!(conversation.last_customer_message_at, Some(t0 + Duration::seconds(120)));
    assert_eq!(conversation.last_agent_message_at, Some(t0 + Duration::seconds(150)));
    assert_eq!(conversation.last_message_preview.as_deref(), Some("welcome"));
    assert_eq!(conversation.participant_ids.iter().collect::<Vec<_>>(), vec!["agent-1"]);
}

#[test]
fn five_messages_applied_once_each_count_five() {
    // Guards against the double apply cqrs-es 0.5.0's snapshot stores do: the count must equal
    // the number of MessageAdded events, no more.
    let mut events = vec![opened()];
    events.extend((1..=5).map(|n| customer_said(n, "hi", now())));
    let conversation = state_after(events);
    assert_eq!(conversation.messages.len(), 5);
    assert_eq!(conversation.customer_message_count, 5);
}

// ---- message updates ----

#[test]
fn editing_a_message_keeps_the_previous_text_in_history() {
    ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "helo", None, now())])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(1),
            patch: MessagePatch { text: Some("hello".into()), ..MessagePatch::default() },
        })
        .then_expect_events(vec![ConversationEvent::MessageEdited {
            message_id: message_id(1),
            previous_text: Some("helo".into()),
            text: "hello".into(),
            edited_at: now(),
        }]);
    let conversation = state_after(vec![
        opened(),
        agent_said(1, "helo", None, now()),
        ConversationEvent::MessageEdited {
            message_id: message_id(1),
            previous_text: Some("helo".into()),
            text: "hello".into(),
            edited_at: now(),
        },
    ]);
    let message = conversation.message(message_id(1)).expect("message kept");
    assert_eq!(message.text(), Some("hello"));
    assert_eq!(message.content().text.as_deref(), Some("hello"));
    assert_eq!(message.edit_history().len(), 1);
    assert_eq!(message.edit_history()[0].previous_text.as_deref(), Some("helo"));
}

#[test]
fn a_location_message_cannot_be_edited() {
    let location = ConversationEvent::MessageAdded {
        message_id: message_id(1),
        sender: agent("agent-1"),
        visibility: Visibility::Public,
        content: MessageContent {
            message_type: MessageType::Location,
            location: Some(Box::new(Location { latitude: 1.0, longitude: 2.0, name: None, address: None })),
            ..MessageContent::default()
        },
        response_time_ms: None,
        created_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), location])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(1),
            patch: MessagePatch { text: Some("x".into()), ..MessagePatch::default() },
        })
        .then_expect_error(ConversationError::NotEditable(MessageType::Location));
}

#[test]
fn updating_a_message_that_is_not_there_is_refused() {
    ConversationTest::with(services())
        .given(vec![opened()])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(9),
            patch: MessagePatch::default(),
        })
        .then_expect_error(ConversationError::UnknownMessage(message_id(9)));
}

#[test]
fn reactions_are_added_once_per_sender_and_emoji_and_can_be_removed() {
    let thumbs = Reaction { emoji: "👍".into(), sender: customer() };
    ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "done", None, now())])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(1),
            patch: MessagePatch {
                add_reactions: vec![thumbs.clone(), thumbs.clone()],
                ..MessagePatch::default()
            },
        })
        .then_expect_events(vec![ConversationEvent::ReactionAdded {
            message_id: message_id(1),
            reaction: thumbs.clone(),
            reacted_at: now(),
        }]);
    ConversationTest::with(services())
        .given(vec![
            opened(),
            agent_said(1, "done", None, now()),
            ConversationEvent::ReactionAdded {
                message_id: message_id(1),
                reaction: thumbs.clone(),
                reacted_at: now(),
            },
        ])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(1),
            patch: MessagePatch { remove_reactions: vec![thumbs.clone()], ..MessagePatch::default() },
        })
        .then_expect_events(vec![ConversationEvent::ReactionRemoved {
            message_id: message_id(1),
            reaction: thumbs,
            removed_at: now(),
        }]);
}

#[test]
fn changing_a_messages_visibility_records_from_and_to() {
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "rude words", now())])
        .when(ConversationCommand::UpdateMessage {
            message_id: message_id(1),
            patch: MessagePatch { visibility: Some(Visibility::Hidden), ..MessagePatch::default() },
        })
        .then_expect_events(vec![ConversationEvent::MessageVisibilityChanged {
            message_id: message_id(1),
            from: Visibility::Public,
            to: Visibility::Hidden,
            changed_at: now(),
        }]);
}

// ---- delivery ----

#[test]
fn delivery_moves_forward_and_late_reports_change_nothing() {
    let delivered = ConversationEvent::DeliveryStatusChanged {
        message_id: message_id(1),
        from: None,
        to: DeliveryStatus::Delivered,
        error: None,
        changed_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "hi", None, now())])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Delivered,
            error: None,
        })
        .then_expect_events(vec![delivered.clone()]);
    ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "hi", None, now()), delivered])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Sent,
            error: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_failed_delivery_needs_a_reason_and_is_final() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "hi", None, now())])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Failed,
            error: None,
        })
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "error"));
    let failed = ConversationEvent::DeliveryStatusChanged {
        message_id: message_id(1),
        from: None,
        to: DeliveryStatus::Failed,
        error: Some(DeliveryError {
            code: Some("131047".into()),
            reason: "re-engagement window closed".into(),
        }),
        changed_at: now(),
    };
    ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "hi", None, now()), failed])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Read,
            error: None,
        })
        .then_expect_error(ConversationError::DeliveryFinal(DeliveryStatus::Failed));
}

#[test]
fn delivery_reports_are_refused_for_customer_messages() {
    ConversationTest::with(services())
        .given(vec![opened(), customer_said(1, "hi", now())])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Read,
            error: None,
        })
        .then_expect_error(ConversationError::NotOutgoing(message_id(1)));
}

#[test]
fn an_error_with_a_non_failed_status_is_refused() {
    let result = ConversationTest::with(services())
        .given(vec![opened(), agent_said(1, "hi", None, now())])
        .when(ConversationCommand::UpdateDelivery {
            message_id: message_id(1),
            status: DeliveryStatus::Delivered,
            error: Some(DeliveryError { code: None, reason: "x".into() }),
        })
        .inspect_result();
    assert!(matches!(result, Err(ConversationError::Invalid(e)) if e.field == "error"));
}

#[test]
fn a_refused_command_leaves_the_aggregate_untouched() {
    // The store keeps its cached aggregate after a refusal; that is only sound if handle
    // decides before it writes.
    let mut conversation = state_after(vec![opened(), customer_said(1, "hi", now())]);
    let before = conversation.clone();
    let sink = cqrs_es::event_sink::EventSink::default();
    let runtime = tokio_runtime();
    let result =
        runtime.block_on(conversation.handle(add_text_from(1, customer(), "dup"), &services(), &sink));
    assert_eq!(result, Err(ConversationError::DuplicateMessage(message_id(1))));
    assert_eq!(conversation, before);
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

#[test]
fn previews_collapse_white_space_and_stop_at_the_limit() {
    let content = text("  Where   is\n\tmy order?  ");
    assert_eq!(content.preview(), "Where is my order?");
    let long = text(&"word ".repeat(100));
    assert_eq!(long.preview().chars().count(), PREVIEW_CHARS);
    assert!(long.preview().starts_with("word word"));
}

#[test]
fn repeated_mentions_are_kept_once_in_first_order() {
    let content =
        MessageContent { mentions: vec!["a".into(), "b".into(), "a".into()], ..text("hi @a @b @a") };
    assert_eq!(content.validated().expect("valid").mentions, vec!["a".to_owned(), "b".to_owned()]);
}

// ---- Group conversations ----

mod group_conversations {
    use super::*;
    use crate::group::{GroupActor, GroupEvent, GroupMember, GroupSettings, LeftBecause, Role};

    fn group_id() -> GroupId {
        GroupId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0a01))
    }

    fn contact(n: u128) -> ContactId {
        ContactId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0b00 + n))
    }

    fn inbox() -> ContactId {
        contact(0)
    }

    fn ann() -> ContactId {
        contact(1)
    }

    fn bob() -> ContactId {
        contact(2)
    }

    fn stranger() -> ContactId {
        contact(9)
    }

    /// The group as its events leave it: the inbox with `inbox_role`, Ann a member, Bob an admin
    /// (the owner when the inbox is not).
    fn group(inbox_role: Role, announce: bool) -> Box<Group> {
        let bob_role = if inbox_role == Role::Superadmin { Role::Admin } else { Role::Superadmin };
        let mut group = Group::default();
        group.apply(GroupEvent::GroupCreated {
            group_id: group_id(),
            tenant_id: tenant(),
            inbox_id: "inbox-1".into(),
            inbox_contact_id: inbox(),
            provider_group_id: None,
            subject: "Launch crew".into(),
            description: None,
            members: vec![
                GroupMember { contact_id: inbox(), role: inbox_role },
                GroupMember { contact_id: ann(), role: Role::Member },
                GroupMember { contact_id: bob(), role: bob_role },
            ],
            settings: GroupSettings { announce, ..GroupSettings::default() },
            invite_code: None,
            created_at: now(),
        });
        Box::new(group)
    }

    fn left(mut group: Box<Group>) -> Box<Group> {
        group.apply(GroupEvent::MemberLeft { contact_id: inbox(), left_at: now() });
        group.apply(GroupEvent::GroupLeft { because: LeftBecause::Left, left_at: now() });
        group
    }

    fn opened_in_group() -> ConversationEvent {
        opened_as(GroupType::Group, Some(group_id()))
    }

    fn from_member(contact: ContactId) -> Sender {
        Sender { kind: SenderKind::Customer, id: Some(contact.to_string()) }
    }

    fn group_message(
        sender: Sender,
        visibility: Visibility,
        mentions: &[&str],
        group: Box<Group>,
    ) -> ConversationCommand {
        let mut content = text("hello all");
        content.mentions = mentions.iter().map(|m| (*m).to_owned()).collect();
        ConversationCommand::AddGroupMessage {
            message: NewMessage { message_id: message_id(1), sender, visibility, content },
            group,
        }
    }

    fn mention(contact: ContactId) -> String {
        format!("{CONTACT_MENTION_PREFIX}{contact}")
    }

    fn added_content(events: Vec<ConversationEvent>) -> MessageContent {
        match events.into_iter().next() {
            Some(ConversationEvent::MessageAdded { content, .. }) => content,
            other => panic!("expected MessageAdded, got {other:?}"),
        }
    }

    fn handled(
        given: Vec<ConversationEvent>,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        ConversationTest::with(services()).given(given).when(command).inspect_result()
    }

    #[test]
    fn opening_with_a_group_makes_a_group_conversation() {
        let command = ConversationCommand::OpenConversation {
            conversation_id: conversation_id(),
            tenant_id: tenant(),
            number: 7,
            conversation: NewConversation {
                contact_id: Some(contact_id()),
                channel: Some(Channel::Whatsapp),
                inbox_id: Some("inbox-1".into()),
                subject: Some("Order status".into()),
                group_id: Some(group_id()),
                ..NewConversation::default()
            },
        };
        ConversationTest::with(services())
            .given_no_previous_events()
            .when(command)
            .then_expect_events(vec![opened_in_group()]);
        let state = state_after(vec![opened_in_group()]);
        assert_eq!((state.group_type, state.group_id), (GroupType::Group, Some(group_id())));
    }

    #[test]
    fn an_individual_conversation_event_stored_before_groups_reads_with_no_group() {
        let mut stored = serde_json::to_value(opened()).expect("serializes");
        assert!(stored["ConversationOpened"].get("group_id").is_none(), "an absent group is not written");
        stored["ConversationOpened"].as_object_mut().expect("object").remove("group_id");
        let read: ConversationEvent = serde_json::from_value(stored).expect("reads");
        assert_eq!(read, opened());
    }

    #[test]
    fn a_member_writes_to_the_group_conversation() {
        let events = handled(
            vec![opened_in_group()],
            group_message(from_member(ann()), Visibility::Public, &[], group(Role::Superadmin, false)),
        )
        .expect("accepted");
        assert!(
            matches!(&events[0], ConversationEvent::MessageAdded { sender, .. } if sender.id == Some(ann().to_string()))
        );
    }

    #[test]
    fn a_customer_message_from_someone_not_a_member_is_refused() {
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(group_message(
                from_member(stranger()),
                Visibility::Public,
                &[],
                group(Role::Superadmin, false),
            ))
            .then_expect_error(ConversationError::SenderNotGroupMember(stranger().to_string()));
    }

    #[test]
    fn a_customer_message_in_a_group_must_name_its_sender() {
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(group_message(customer(), Visibility::Public, &[], group(Role::Superadmin, false)))
            .then_expect_error(ConversationError::SenderNotGroupMember(String::new()));
    }

    #[test]
    fn with_announce_on_the_inbox_may_not_send_unless_it_is_an_admin() {
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(group_message(agent("agent-1"), Visibility::Public, &[], group(Role::Member, true)))
            .then_expect_error(ConversationError::GroupRefusesSend(SendRefusal::AnnounceOnly));
        for role in [Role::Admin, Role::Superadmin] {
            assert!(handled(
                vec![opened_in_group()],
                group_message(agent("agent-1"), Visibility::Public, &[], group(role, true))
            )
            .is_ok());
        }
    }

    #[test]
    fn with_announce_on_members_still_write_and_agents_still_leave_notes() {
        assert!(handled(
            vec![opened_in_group()],
            group_message(from_member(ann()), Visibility::Public, &[], group(Role::Member, true))
        )
        .is_ok());
        assert!(handled(
            vec![opened_in_group()],
            group_message(agent("agent-1"), Visibility::Internal, &[], group(Role::Member, true))
        )
        .is_ok());
    }

    #[test]
    fn once_the_inbox_left_it_may_not_send() {
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(group_message(
                agent("agent-1"),
                Visibility::Public,
                &[],
                left(group(Role::Superadmin, false)),
            ))
            .then_expect_error(ConversationError::GroupRefusesSend(SendRefusal::Left));
    }

    #[test]
    fn mentions_name_members_in_one_form() {
        let bare = ann().to_string();
        let named = format!("{}/Bob", mention(bob()));
        let content = added_content(
            handled(
                vec![opened_in_group()],
                group_message(
                    agent("agent-1"),
                    Visibility::Public,
                    &[&bare, &named, &mention(ann())],
                    group(Role::Superadmin, false),
                ),
            )
            .expect("accepted"),
        );
        assert_eq!(content.mentions, vec![mention(ann()), mention(bob())]);
        assert!(!content.mentions_everyone);
    }

    #[test]
    fn a_mention_of_someone_not_a_member_is_refused() {
        let outsider = mention(stranger());
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(group_message(
                agent("agent-1"),
                Visibility::Public,
                &[&outsider],
                group(Role::Superadmin, false),
            ))
            .then_expect_error(ConversationError::MentionNotGroupMember(outsider.clone()));
    }

    #[test]
    fn everyone_expands_to_the_members_of_that_moment_without_the_inbox() {
        let content = added_content(
            handled(
                vec![opened_in_group()],
                group_message(
                    agent("agent-1"),
                    Visibility::Public,
                    &["@everyone"],
                    group(Role::Superadmin, false),
                ),
            )
            .expect("accepted"),
        );
        assert!(content.mentions_everyone);
        assert_eq!(content.mentions, vec![mention(ann()), mention(bob())]);
        let mut smaller = group(Role::Superadmin, false);
        smaller.apply(GroupEvent::MemberRemoved {
            contact_id: ann(),
            by: GroupActor::Inbox,
            removed_at: now(),
        });
        let later = added_content(
            handled(
                vec![opened_in_group()],
                group_message(agent("agent-1"), Visibility::Public, &["@everyone"], smaller),
            )
            .expect("accepted"),
        );
        assert_eq!(later.mentions, vec![mention(bob())], "a member who left is not named");
    }

    #[test]
    fn group_mentions_do_not_count_as_user_mentions() {
        let state = state_after(vec![
            opened_in_group(),
            ConversationEvent::MessageAdded {
                message_id: message_id(1),
                sender: agent("agent-1"),
                visibility: Visibility::Public,
                content: MessageContent { mentions: vec![mention(ann()), "agent-2".into()], ..text("hi") },
                response_time_ms: None,
                created_at: now(),
            },
        ]);
        assert_eq!(state.mentioned_ids.into_iter().collect::<Vec<_>>(), vec!["agent-2".to_owned()]);
    }

    #[test]
    fn a_plain_message_to_a_group_conversation_is_refused() {
        ConversationTest::with(services())
            .given(vec![opened_in_group()])
            .when(add_text_from(1, agent("agent-1"), "hi"))
            .then_expect_error(ConversationError::GroupRequired);
    }

    #[test]
    fn a_group_message_to_a_one_to_one_conversation_is_refused() {
        ConversationTest::with(services())
            .given(vec![opened()])
            .when(group_message(from_member(ann()), Visibility::Public, &[], group(Role::Superadmin, false)))
            .then_expect_error(ConversationError::NotAGroupConversation);
    }

    #[test]
    fn leaving_the_group_closes_an_open_or_pending_conversation_with_the_reason() {
        for from in [Status::Open, Status::Pending] {
            let mut given = vec![opened_in_group()];
            if from != Status::Open {
                given.push(status_changed(Status::Open, from, None));
            }
            ConversationTest::with(services())
                .given(given)
                .when(ConversationCommand::CloseForLeftGroup)
                .then_expect_events(vec![ConversationEvent::StatusChanged {
                    from,
                    to: Status::Closed,
                    snoozed_until: None,
                    reason: StatusReason::GroupLeft,
                    changed_at: now(),
                }]);
        }
    }

    #[test]
    fn leaving_the_group_leaves_snoozed_and_closed_conversations_alone() {
        for to in [Status::Snoozed, Status::Closed] {
            ConversationTest::with(services())
                .given(vec![opened_in_group(), status_changed(Status::Open, to, None)])
                .when(ConversationCommand::CloseForLeftGroup)
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn only_a_group_conversation_is_closed_for_a_left_group() {
        ConversationTest::with(services())
            .given(vec![opened()])
            .when(ConversationCommand::CloseForLeftGroup)
            .then_expect_error(ConversationError::NotAGroupConversation);
    }
}

// ---- footprint ----

#[test]
fn a_conversation_weighs_more_with_each_message_and_its_text() {
    let short = state_after(vec![opened(), customer_said(1, "hi", now())]);
    let long = state_after(vec![opened(), customer_said(1, &"a".repeat(2_000), now())]);
    let five = state_after(
        std::iter::once(opened()).chain((1..=5).map(|n| customer_said(n, "hi", now()))).collect(),
    );
    let empty = state_after(vec![opened()]).footprint();
    assert!(short.footprint() > empty);
    assert!(long.footprint() >= short.footprint() + 1_990, "the text is counted");
    assert!(five.footprint() > short.footprint());
    assert!(five.footprint() >= empty + five.messages.capacity() * size_of::<Message>(), "so is the list");
}

#[test]
fn a_message_weighs_what_its_edits_and_reactions_add() {
    let reaction = Reaction { emoji: "👍".into(), sender: agent("agent-1") };
    let said = state_after(vec![opened(), agent_said(1, "helo", None, now())]);
    let changed = state_after(vec![
        opened(),
        agent_said(1, "helo", None, now()),
        ConversationEvent::MessageEdited {
            message_id: message_id(1),
            previous_text: Some("helo".repeat(100)),
            text: "hello".into(),
            edited_at: now(),
        },
        ConversationEvent::ReactionAdded { message_id: message_id(1), reaction, reacted_at: now() },
    ]);
    assert!(changed.footprint() >= said.footprint() + 400, "the previous text is kept");
    // Kept as messages change, the weight is what walking every message gives.
    let walked: usize = changed.messages.iter().map(Message::heap_footprint).sum();
    assert_eq!(changed.message_heap, walked);
    // A clone's vectors have no spare room, so it weighs a little less.
    let mut reindexed = changed.clone();
    reindexed.message_heap = 0;
    reindexed.reindex();
    let walked: usize = reindexed.messages.iter().map(Message::heap_footprint).sum();
    assert_eq!(reindexed.message_heap, walked);
    assert!(walked > 400);
}

#[test]
fn a_plain_message_keeps_only_its_text_beside_the_fields_every_message_has() {
    // The layout a cached conversation pays for each message; a larger one is a regression.
    assert!(size_of::<Message>() <= 112, "a message takes {} bytes", size_of::<Message>());
    let plain = Message::new(message_id(1), 1, customer(), Visibility::Public, text("hello"), now());
    assert_eq!(plain.heap_footprint(), footprint::string("hello"));
    let mut with_attachment = text("hello");
    with_attachment.attachments.push(Attachment {
        url: "https://files.example/a.png".into(),
        name: None,
        mime_type: None,
        size: None,
    });
    let attached = Message::new(message_id(2), 2, customer(), Visibility::Public, with_attachment, now());
    assert!(attached.heap_footprint() > plain.heap_footprint() + "https://files.example/a.png".len());
}

#[test]
fn a_message_gives_back_every_part_it_was_added_with() {
    let content = MessageContent {
        message_type: MessageType::Email,
        text: Some("Dear team".into()),
        attachments: vec![Attachment {
            url: "https://files.example/invoice.pdf".into(),
            name: Some("invoice.pdf".into()),
            mime_type: Some("application/pdf".into()),
            size: Some(1_024),
        }],
        reply_to: Some(message_id(7)),
        forwarded: true,
        mentions: vec!["agent-2".into()],
        mentions_everyone: true,
        email: Some(Box::new(EmailEnvelope {
            from: "ada@example.com".into(),
            to: vec!["help@example.com".into()],
            cc: vec![],
            bcc: vec![],
            subject: Some("Invoice".into()),
            thread_id: None,
            in_reply_to: None,
            reply_to: None,
            direction: Direction::Inbound,
        })),
        location: Some(Box::new(Location { latitude: 1.5, longitude: 2.5, name: None, address: None })),
        template: Some(Box::new(json!({"name": "welcome"}))),
        interactive: Some(Box::new(json!({"buttons": ["yes", "no"]}))),
        contacts: Some(Box::new(json!([{"name": "Grace"}]))),
        metadata: json!({"crm": 42}).as_object().cloned().unwrap_or_default(),
    };
    let message = Message::new(message_id(1), 1, customer(), Visibility::Public, content.clone(), now());
    assert_eq!(message.content(), content);
    assert_eq!(message.content().reply_to, Some(message_id(7)));
    assert_eq!(message.content().mentions, ["agent-2".to_owned()]);
    let plain = Message::new(message_id(2), 2, customer(), Visibility::Public, text("hi"), now());
    assert_eq!(plain.content(), text("hi"));
    assert_eq!(plain.content().reply_to, None);
    assert!(
        plain.content().mentions.is_empty()
            && plain.reactions().is_empty()
            && plain.edit_history().is_empty()
    );
}

#[test]
fn a_reaction_taken_back_or_a_delivery_error_cleared_leaves_the_message_as_it_was() {
    let reaction = Reaction { emoji: "👍".into(), sender: agent("agent-1") };
    let later = now() + Duration::minutes(1);
    let fresh = Message::new(message_id(1), 1, agent("agent-1"), Visibility::Public, text("hi"), now());
    let mut message = fresh.clone();
    message.react(reaction.clone(), later);
    assert_eq!(message.reactions(), std::slice::from_ref(&reaction));
    assert!(message.heap_footprint() > fresh.heap_footprint());
    message.unreact(&reaction, later);
    assert!(message.reactions().is_empty());
    assert_eq!(message.heap_footprint(), fresh.heap_footprint(), "no empty box is kept");
    assert_eq!(message.updated_at, later);

    let error = DeliveryError { code: Some("131026".into()), reason: "undeliverable".into() };
    message.deliver(DeliveryStatus::Failed, Some(error.clone()), later);
    assert_eq!(
        (message.delivery_status, message.delivery_error()),
        (Some(DeliveryStatus::Failed), Some(&error))
    );
    message.deliver(DeliveryStatus::Sent, None, later);
    assert_eq!(message.delivery_error(), None);
    assert_eq!(message.heap_footprint(), fresh.heap_footprint());
    message.delivery_status = None;
    message.updated_at = now();
    assert_eq!(message, fresh);
}

#[test]
fn a_snapshot_reads_back_as_the_state_it_was_taken_of() {
    use crate::Snapshot;
    let reaction = Reaction { emoji: "👍".into(), sender: agent("agent-1") };
    let state = state_after(vec![
        opened(),
        customer_said(1, "hi", now()),
        agent_said(2, "helo", Some(1_000), now()),
        ConversationEvent::MessageEdited {
            message_id: message_id(2),
            previous_text: Some("helo".into()),
            text: "hello".into(),
            edited_at: now(),
        },
        ConversationEvent::ReactionAdded { message_id: message_id(1), reaction, reacted_at: now() },
        status_changed(Status::Open, Status::Pending, None),
    ]);
    let mut restored: Conversation =
        serde_json::from_str(&serde_json::to_string(&state).expect("serialises")).expect("reads back");
    assert!(restored.message(message_id(2)).is_none(), "the index is not serialised");
    restored.restored();
    // Its weight is what its messages weigh as read back (their vectors' room differs).
    let walked: usize = restored.messages.iter().map(Message::heap_footprint).sum();
    assert_eq!(restored.message_heap, walked);
    restored.message_heap = state.message_heap;
    assert_eq!(restored, state);
    assert_eq!(restored.message(message_id(2)).and_then(Message::text), Some("hello"));
}
