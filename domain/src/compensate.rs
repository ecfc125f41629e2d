//! Compensation: the commands that undo what one request did to an aggregate (`POST
//! /v1/commands/{correlation_id}/revert`). History is never rewritten; the undo is new events,
//! decided by the same rules as any command. Each aggregate compares its state just before the
//! request with its state now (nothing may have happened since: the caller checks the version)
//! and asks for the fields the request changed back; an event that cannot be undone refuses the
//! whole revert with its reason.

use std::collections::BTreeSet;

use cqrs_es::Aggregate;
use serde_json::{Map, Value};

use crate::contact::{Contact, ContactCommand, ContactEvent, ContactPatch, ContactStatus};
use crate::conversation::{
    Conversation, ConversationCommand, ConversationEvent, ConversationPatch, MessagePatch,
};

/// An aggregate whose requests can be undone.
pub trait Compensate: Aggregate + Sized {
    /// The commands that bring `now` back to `before` for what `events` (one request's, in
    /// order, the last ones of the stream) changed; or why they cannot.
    fn compensate(before: &Self, now: &Self, events: &[Self::Event]) -> Result<Vec<Self::Command>, String>;
}

/// What `now` must be patched with to read as `before`, key by key (`null` removes a key).
fn merge_back(before: &Map<String, Value>, now: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut patch = Map::new();
    for key in now.keys().filter(|k| !before.contains_key(*k)) {
        patch.insert(key.clone(), Value::Null);
    }
    for (key, value) in before.iter().filter(|(k, v)| now.get(*k) != Some(*v)) {
        patch.insert(key.clone(), value.clone());
    }
    (!patch.is_empty()).then_some(patch)
}

impl Compensate for Conversation {
    fn compensate(
        before: &Self,
        now: &Self,
        events: &[ConversationEvent],
    ) -> Result<Vec<ConversationCommand>, String> {
        let mut messages = BTreeSet::new();
        for event in events {
            let refusal = match event {
                ConversationEvent::ConversationOpened { .. } => {
                    "opening a conversation is not undone (delete it)"
                }
                ConversationEvent::MessageAdded { .. } => "a message that was sent cannot be unsent",
                ConversationEvent::ConversationDeleted { .. } => "a deleted conversation stays deleted",
                ConversationEvent::DeliveryStatusChanged { .. } => "a delivery report is the provider's fact",
                ConversationEvent::ConversationRead { .. } => "a read receipt records that someone read",
                ConversationEvent::MessageEdited { message_id, .. }
                | ConversationEvent::MessageVisibilityChanged { message_id, .. }
                | ConversationEvent::ReactionAdded { message_id, .. }
                | ConversationEvent::ReactionRemoved { message_id, .. } => {
                    messages.insert(*message_id);
                    continue;
                }
                _ => continue,
            };
            return Err(format!("{}: {refusal}", cqrs_es::DomainEvent::event_type(event)));
        }
        let mut commands = Vec::new();
        let patch = ConversationPatch {
            subject: (before.subject != now.subject).then(|| before.subject.clone()),
            priority: (before.priority != now.priority).then_some(before.priority),
            custom_fields: merge_back(&before.custom_fields, &now.custom_fields),
            starred: (before.starred != now.starred).then_some(before.starred),
        };
        if patch != ConversationPatch::default() {
            commands.push(ConversationCommand::UpdateConversation(patch));
        }
        if (before.status, before.snoozed_until) != (now.status, now.snoozed_until) {
            commands.push(ConversationCommand::ChangeStatus {
                status: before.status,
                snoozed_until: before.snoozed_until,
            });
        }
        let (was, is) = ((&before.assignee_id, &before.team_id), (&now.assignee_id, &now.team_id));
        if was != is {
            // An assignment keeps a side it is not given: one the request added goes first.
            if (was.0.is_none() && is.0.is_some()) || (was.1.is_none() && is.1.is_some()) {
                commands.push(ConversationCommand::Unassign);
            }
            if was.0.is_some() || was.1.is_some() {
                commands
                    .push(ConversationCommand::Assign { assignee_id: was.0.clone(), team_id: was.1.clone() });
            }
        }
        if before.labels != now.labels {
            commands.push(ConversationCommand::ChangeLabels {
                add: before.labels.difference(&now.labels).cloned().collect(),
                remove: now.labels.difference(&before.labels).cloned().collect(),
            });
        }
        for message_id in messages {
            let (Some(was), Some(is)) = (before.message(message_id), now.message(message_id)) else {
                return Err(format!("message {message_id} was not there before the request"));
            };
            let text = match (was.text(), is.text()) {
                (a, b) if a == b => None,
                (Some(text), _) => Some(text.to_owned()),
                (None, _) => return Err(format!("message {message_id} had no text to restore")),
            };
            let reacted = |from: &Conversation, to: &Conversation| -> Vec<_> {
                let to = to.message(message_id).map(|m| m.reactions()).unwrap_or_default();
                let from = from.message(message_id).map(|m| m.reactions()).unwrap_or_default();
                from.iter().filter(|r| !to.contains(r)).cloned().collect()
            };
            let patch = MessagePatch {
                text,
                visibility: (was.visibility != is.visibility).then_some(was.visibility),
                add_reactions: reacted(before, now),
                remove_reactions: reacted(now, before),
            };
            if patch != MessagePatch::default() {
                commands.push(ConversationCommand::UpdateMessage { message_id, patch });
            }
        }
        Ok(commands)
    }
}

impl Compensate for Contact {
    fn compensate(before: &Self, now: &Self, events: &[ContactEvent]) -> Result<Vec<ContactCommand>, String> {
        for event in events {
            let refusal = match event {
                ContactEvent::ContactCreated { .. } => "creating a contact is not undone (delete it)",
                ContactEvent::ContactErased { .. } => "an erasure is final",
                ContactEvent::ContactStatusChanged { to: ContactStatus::Deleted, .. } => {
                    "a deleted contact stays deleted"
                }
                _ => continue,
            };
            return Err(format!("{}: {refusal}", cqrs_es::DomainEvent::event_type(event)));
        }
        let changed = |a: &Option<String>, b: &Option<String>| (a != b).then(|| a.clone());
        let patch = ContactPatch {
            first_name: (before.first_name != now.first_name).then(|| before.first_name.clone()),
            last_name: changed(&before.last_name, &now.last_name),
            full_name: (before.full_name != now.full_name).then(|| Some(before.full_name.clone())),
            phone: changed(&before.phone, &now.phone),
            email: changed(&before.email, &now.email),
            preferred_channel: (before.preferred_channel != now.preferred_channel)
                .then_some(before.preferred_channel),
            metadata: merge_back(&before.metadata, &now.metadata),
            labels: (before.labels != now.labels).then(|| before.labels.clone()),
            status: (before.status != now.status).then_some(before.status),
        };
        if patch == ContactPatch::default() {
            return Ok(Vec::new());
        }
        Ok(vec![ContactCommand::UpdateContact(patch)])
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::conversation::{Priority, Status, StatusReason};

    fn at() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).single().expect("a time")
    }

    fn open() -> Conversation {
        let mut conversation = Conversation::default();
        conversation.labels = ["billing".to_owned()].into();
        conversation.custom_fields = json!({"plan": "pro"}).as_object().cloned().unwrap_or_default();
        conversation
    }

    #[test]
    fn a_bulk_resolve_and_a_label_sweep_are_undone_field_by_field() {
        let before = open();
        let mut now = before.clone();
        let events = vec![
            ConversationEvent::StatusChanged {
                from: Status::Open,
                to: Status::Closed,
                snoozed_until: None,
                reason: StatusReason::Requested,
                changed_at: at(),
            },
            ConversationEvent::LabelsAdded { labels: vec!["swept".into()], changed_at: at() },
            ConversationEvent::LabelsRemoved { labels: vec!["billing".into()], changed_at: at() },
            ConversationEvent::PriorityChanged {
                from: Priority::Medium,
                to: Priority::High,
                changed_at: at(),
            },
        ];
        for event in &events {
            now.apply(event.clone());
        }
        let commands = Conversation::compensate(&before, &now, &events).expect("undone");
        assert_eq!(
            commands,
            [
                ConversationCommand::UpdateConversation(ConversationPatch {
                    priority: Some(Priority::Medium),
                    ..ConversationPatch::default()
                }),
                ConversationCommand::ChangeStatus { status: Status::Open, snoozed_until: None },
                ConversationCommand::ChangeLabels {
                    add: vec!["billing".into()],
                    remove: vec!["swept".into()]
                },
            ]
        );
        // Nothing changed, nothing to do.
        assert_eq!(Conversation::compensate(&before, &before, &[]), Ok(Vec::new()));
    }

    #[test]
    fn a_deletion_refuses_the_revert_with_its_reason() {
        let before = open();
        let events = vec![ConversationEvent::ConversationDeleted { deleted_at: at() }];
        let refused = Conversation::compensate(&before, &before, &events).expect_err("refused");
        assert!(refused.contains("ConversationDeleted"), "{refused}");
    }

    #[test]
    fn custom_fields_and_metadata_are_merged_back_key_by_key() {
        let before = json!({"plan": "pro", "seats": 3}).as_object().cloned().unwrap_or_default();
        let now = json!({"plan": "free", "trial": true, "seats": 3}).as_object().cloned().unwrap_or_default();
        let patch = merge_back(&before, &now).expect("a change");
        assert_eq!(Value::Object(patch), json!({"plan": "pro", "trial": null}));
        assert_eq!(merge_back(&before, &before), None);
    }
}
