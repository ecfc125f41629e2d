//! The inbox read model, `conversation_list`: one row per conversation holding everything a list
//! screen shows (workflow state, contact summary, last message, response statistics, readers),
//! plus counters of live conversations per status and assignee, so counts never scan.
//!
//! The fold over Conversation events (`ConversationRow::apply`) is pure; `store` loads and writes
//! rows inside the projector's transaction; `query` answers lists and counts.

mod query;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use colloquy_domain::contact::{ContactEvent, ContactField};
use colloquy_domain::conversation::{
    ConversationEvent, GroupType, MessageType, Priority, Responder, SenderKind, Status, Visibility,
    CONTACT_MENTION_PREFIX,
};
use colloquy_domain::Channel;

pub use query::{
    contacts_with_phone, count_waiting, counts, dump, explainable, get, list, opened_between, Counts, Cursor,
    Direction, LabelMatch, ListFilter, Page, Sort, SortKey,
};
pub use store::ConversationList;

/// The projection's name.
pub const NAME: &str = "conversation_list";

/// The contact's details a conversation row shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContactSummary {
    /// Display name.
    pub name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// E.164 phone.
    pub phone: Option<String>,
}

impl ContactSummary {
    /// Folds a Contact event into the summary (`None` before the contact exists).
    pub fn apply(summary: Option<Self>, event: &ContactEvent) -> Option<Self> {
        match event {
            ContactEvent::ContactCreated { full_name, email, phone, .. } => {
                Some(Self { name: Some(full_name.clone()), email: email.clone(), phone: phone.clone() })
            }
            ContactEvent::ContactUpdated { changes, .. } => {
                let mut summary = summary?;
                for change in changes {
                    match change {
                        ContactField::FullName(name) => summary.name = Some(name.clone()),
                        ContactField::Email(email) => summary.email = email.clone(),
                        ContactField::Phone(phone) => summary.phone = phone.clone(),
                        _ => {}
                    }
                }
                Some(summary)
            }
            ContactEvent::ContactStatusChanged { .. } => summary,
            // What its events read as from now on (docs/adr/0011).
            ContactEvent::ContactErased { .. } => summary.map(|_| Self {
                name: Some(colloquy_domain::personal::ERASED.to_owned()),
                email: None,
                phone: None,
            }),
        }
    }
}

/// One user's read receipt, as the row keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reader {
    /// When they last read.
    pub read_at: DateTime<Utc>,
    /// The latest message then.
    pub last_read_message_id: Option<String>,
    /// How many public customer messages the conversation had then.
    pub customer_messages_seen: i64,
}

/// One conversation as lists show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display number.
    pub number: i64,
    /// Contact.
    pub contact_id: String,
    /// The contact's name, e-mail and phone.
    pub contact: ContactSummary,
    /// Channel.
    pub channel: Channel,
    /// Inbox.
    pub inbox_id: Option<String>,
    /// Individual or group.
    pub group_type: GroupType,
    /// The group chat, for a group conversation.
    pub group_id: Option<String>,
    /// The group's latest activity the provider reported, for a group conversation.
    pub group_activity_at: Option<DateTime<Utc>>,
    /// Subject.
    pub subject: Option<String>,
    /// Status.
    pub status: Status,
    /// End of a timed snooze.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// Priority.
    pub priority: Priority,
    /// Assigned user.
    pub assignee_id: Option<String>,
    /// Assigned team.
    pub team_id: Option<String>,
    /// Labels, sorted.
    pub labels: Vec<String>,
    /// Starred.
    pub starred: bool,
    /// Deleted.
    pub deleted: bool,
    /// Custom fields.
    pub custom_fields: Map<String, Value>,
    /// Messages of every visibility.
    pub message_count: i64,
    /// Public messages from the customer's side, for unread counts.
    pub customer_message_count: i64,
    /// Preview of the latest public message.
    pub last_message_preview: Option<String>,
    /// Time of the latest public message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Type of the latest public message.
    pub last_message_type: Option<MessageType>,
    /// Sender kind of the latest public message.
    pub last_message_sender_kind: Option<SenderKind>,
    /// Who sent it, when the message named them (a group member, for a group's).
    pub last_message_sender_id: Option<String>,
    /// Which side spoke last.
    pub last_responder: Option<Responder>,
    /// When the customer last wrote.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// When an agent last wrote.
    pub last_agent_message_at: Option<DateTime<Utc>>,
    /// Since when the customer waits for a human answer.
    pub waiting_since: Option<DateTime<Utc>>,
    /// When a human first answered.
    pub first_reply_at: Option<DateTime<Utc>>,
    /// Answers to a waiting customer.
    pub response_count: i64,
    /// Sum of those waits, ms.
    pub total_response_time_ms: i64,
    /// Users who sent a message, sorted.
    pub participants: Vec<String>,
    /// Users mentioned in a message, sorted.
    pub mentioned: Vec<String>,
    /// Read receipts by user.
    pub readers: BTreeMap<String, Reader>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Last change of any kind.
    pub updated_at: DateTime<Utc>,
    /// Latest message, status or assignment change.
    pub last_activity_at: DateTime<Utc>,
    /// The stream version the row reflects.
    pub version: i64,
}

fn insert_sorted(list: &mut Vec<String>, value: &str) {
    if let Err(at) = list.binary_search_by(|v| v.as_str().cmp(value)) {
        list.insert(at, value.to_owned());
    }
}

impl ConversationRow {
    /// Whether its last message came from contact `contact`: the customer or visitor it names,
    /// or, where it names none, the conversation's contact.
    pub fn last_message_is_from(&self, contact: &str) -> bool {
        self.last_message_sender_kind.is_some_and(SenderKind::is_incoming)
            && match &self.last_message_sender_id {
                Some(id) => id == contact,
                None => self.contact_id == contact,
            }
    }

    /// Customer messages since the latest read by anyone.
    pub fn unread_count(&self) -> i64 {
        let seen = self.readers.values().map(|r| r.customer_messages_seen).max().unwrap_or(0);
        (self.customer_message_count - seen).max(0)
    }

    /// Group activity newer than anyone's last read: for groups whose messages are not processed
    /// one by one, the sign that something happened (the unread count cannot say it).
    pub fn unseen_activity(&self) -> bool {
        let last_read = self.readers.values().map(|r| r.read_at).max();
        self.group_activity_at.is_some_and(|at| last_read.is_none_or(|read| at > read))
    }

    /// Group activity newer than `user_id`'s last read.
    pub fn unseen_activity_for(&self, user_id: &str) -> bool {
        let last_read = self.readers.get(user_id).map(|r| r.read_at);
        self.group_activity_at.is_some_and(|at| last_read.is_none_or(|read| at > read))
    }

    /// Notes group activity at `at`: the latest activity moves forward, never back.
    pub fn note_group_activity(&mut self, at: DateTime<Utc>) {
        self.group_activity_at = self.group_activity_at.max(Some(at));
        self.last_activity_at = self.last_activity_at.max(at);
    }

    /// Customer messages `user_id` has not read.
    pub fn unread_count_for(&self, user_id: &str) -> i64 {
        let seen = self.readers.get(user_id).map_or(0, |r| r.customer_messages_seen);
        (self.customer_message_count - seen).max(0)
    }

    /// The rank `sort=priority` orders by.
    pub fn priority_rank(&self) -> i64 {
        priority_rank(self.priority)
    }

    /// Folds one event into the row (`None` before the conversation is opened). The contact
    /// summary is not in Conversation events; the projection fills it in.
    ///
    /// The statistics mirror `Conversation::apply` in the domain: this is the read model's own
    /// copy of them, kept without the messages the aggregate holds.
    pub fn apply(
        row: Option<Self>,
        event: &ConversationEvent,
        aggregate_id: &str,
        sequence: i64,
    ) -> Option<Self> {
        let mut row = row;
        Self::apply_in_place(&mut row, event, aggregate_id, sequence);
        row
    }

    /// [`ConversationRow::apply`] on the row where it is held, without moving it.
    pub fn apply_in_place(
        slot: &mut Option<Self>,
        event: &ConversationEvent,
        aggregate_id: &str,
        sequence: i64,
    ) {
        if let ConversationEvent::ConversationOpened {
            tenant_id,
            number,
            contact_id,
            channel,
            inbox_id,
            subject,
            priority,
            status,
            custom_fields,
            labels,
            group_type,
            group_id,
            opened_at,
            ..
        } = event
        {
            let mut labels = labels.clone();
            labels.sort();
            labels.dedup();
            *slot = Some(Self {
                id: aggregate_id.to_owned(),
                tenant_id: tenant_id.to_string(),
                number: i64::try_from(*number).unwrap_or(i64::MAX),
                contact_id: contact_id.to_string(),
                contact: ContactSummary::default(),
                channel: *channel,
                inbox_id: inbox_id.clone(),
                group_type: *group_type,
                group_id: group_id.map(|g| g.to_string()),
                group_activity_at: None,
                subject: subject.clone(),
                status: *status,
                snoozed_until: None,
                priority: *priority,
                assignee_id: None,
                team_id: None,
                labels,
                starred: false,
                deleted: false,
                custom_fields: custom_fields.clone(),
                message_count: 0,
                customer_message_count: 0,
                last_message_preview: None,
                last_message_at: None,
                last_message_type: None,
                last_message_sender_kind: None,
                last_message_sender_id: None,
                last_responder: None,
                last_customer_message_at: None,
                last_agent_message_at: None,
                waiting_since: None,
                first_reply_at: None,
                response_count: 0,
                total_response_time_ms: 0,
                participants: Vec::new(),
                mentioned: Vec::new(),
                readers: BTreeMap::new(),
                created_at: *opened_at,
                updated_at: *opened_at,
                last_activity_at: *opened_at,
                version: sequence,
            });
            return;
        }
        let Some(row) = slot.as_mut() else { return };
        row.version = sequence;
        row.updated_at = event.occurred_at();
        match event {
            ConversationEvent::ConversationOpened { .. } => {}
            ConversationEvent::SubjectChanged { subject, .. } => row.subject = subject.clone(),
            ConversationEvent::PriorityChanged { to, .. } => row.priority = *to,
            ConversationEvent::CustomFieldsChanged { custom_fields, .. } => {
                row.custom_fields = custom_fields.clone()
            }
            ConversationEvent::ConversationStarred { .. } => row.starred = true,
            ConversationEvent::ConversationUnstarred { .. } => row.starred = false,
            ConversationEvent::StatusChanged { to, snoozed_until, changed_at, .. } => {
                row.status = *to;
                row.snoozed_until = *snoozed_until;
                row.last_activity_at = *changed_at;
            }
            ConversationEvent::ConversationAssigned { assignee_id, team_id, assigned_at, .. } => {
                row.assignee_id = assignee_id.clone();
                row.team_id = team_id.clone();
                row.last_activity_at = *assigned_at;
            }
            ConversationEvent::ConversationUnassigned { unassigned_at, .. } => {
                row.assignee_id = None;
                row.team_id = None;
                row.last_activity_at = *unassigned_at;
            }
            ConversationEvent::LabelsAdded { labels, .. } => {
                for label in labels {
                    insert_sorted(&mut row.labels, label);
                }
            }
            ConversationEvent::LabelsRemoved { labels, .. } => row.labels.retain(|l| !labels.contains(l)),
            ConversationEvent::ConversationRead { user_id, last_read_message_id, read_at, .. } => {
                row.readers.insert(
                    user_id.clone(),
                    Reader {
                        read_at: *read_at,
                        last_read_message_id: last_read_message_id.map(|id| id.to_string()),
                        customer_messages_seen: row.customer_message_count,
                    },
                );
            }
            ConversationEvent::ConversationDeleted { .. } => row.deleted = true,
            ConversationEvent::MessageAdded {
                sender,
                visibility,
                content,
                response_time_ms,
                created_at,
                ..
            } => {
                row.message_count += 1;
                if *visibility == Visibility::Public {
                    row.last_message_preview = Some(content.preview());
                    row.last_message_at = Some(*created_at);
                    row.last_message_type = Some(content.message_type);
                    row.last_message_sender_kind = Some(sender.kind);
                    row.last_message_sender_id = sender.id.clone();
                    if sender.kind.is_incoming() {
                        row.customer_message_count += 1;
                        row.last_responder = Some(Responder::Customer);
                        row.last_customer_message_at = Some(*created_at);
                        row.waiting_since.get_or_insert(*created_at);
                    } else if matches!(
                        sender.kind,
                        SenderKind::User | SenderKind::Bot | SenderKind::AiAssistant
                    ) {
                        row.last_responder = Some(Responder::Agent);
                        row.last_agent_message_at = Some(*created_at);
                    }
                }
                if let Some(waited) = response_time_ms {
                    row.response_count += 1;
                    row.total_response_time_ms += waited;
                    row.first_reply_at.get_or_insert(*created_at);
                    row.waiting_since = None;
                }
                if sender.kind == SenderKind::User {
                    if let Some(id) = &sender.id {
                        insert_sorted(&mut row.participants, id);
                    }
                }
                // Users mentioned; a group's `mention://contact/...` names a member, not a user.
                for mention in content.mentions.iter().filter(|m| !m.starts_with(CONTACT_MENTION_PREFIX)) {
                    insert_sorted(&mut row.mentioned, mention);
                }
                row.last_activity_at = *created_at;
            }
            ConversationEvent::MessageEdited { .. }
            | ConversationEvent::MessageVisibilityChanged { .. }
            | ConversationEvent::ReactionAdded { .. }
            | ConversationEvent::ReactionRemoved { .. }
            | ConversationEvent::DeliveryStatusChanged { .. } => {}
        }
    }
}

/// The rank `sort=priority` orders by: low 1 to urgent 4.
pub fn priority_rank(priority: Priority) -> i64 {
    match priority {
        Priority::Low => 1,
        Priority::Medium => 2,
        Priority::High => 3,
        Priority::Urgent => 4,
    }
}

/// The snake_case name of a unit enum variant, as serde writes it.
pub(crate) fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The unit enum variant called `name`.
pub(crate) fn parse_name<T: for<'de> Deserialize<'de>>(name: &str) -> Option<T> {
    serde_json::from_value(Value::String(name.to_owned())).ok()
}

#[cfg(test)]
mod tests;
