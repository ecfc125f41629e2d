//! The Conversation aggregate: a thread with one contact over one channel, its workflow (status,
//! snooze, assignment, labels, priority, custom fields, stars, read receipts, deletion) and the
//! messages inside it with their reactions, edits and delivery status. It keeps the response
//! statistics the inbox and SLA screens show: who spoke last, since when the customer waits,
//! response count and times.

mod commands;
mod events;
mod message;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::fmt;

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

use cqrs_es::event_sink::EventSink;

use cqrs_es::{Aggregate, DomainEvent};

pub use commands::*;
pub use events::ConversationEvent;
pub use rules::*;

pub use message::{
    validate_emoji, Attachment, DeliveryError, DeliveryStatus, Direction, Edit, EmailEnvelope, Location,
    Message, MessageContent, MessageType, NewMessage, Reaction, Sender, SenderKind, Visibility,
    MAX_ATTACHMENTS, MAX_MENTIONS, PREVIEW_CHARS,
};

use crate::channel::Channel;

use crate::context::CommandContext;

use crate::footprint::{self, Footprint};

use crate::group::{Group, GroupId, SendRefusal};

use crate::ids::{ContactId, ConversationId, MessageId, TenantId};

use crate::validate::{self, FieldError, MAX_LABELS, MAX_SHORT_TEXT};

use crate::{TenantOwned, EVENT_VERSION_1};

/// Where a conversation is in its workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Waiting for the team.
    #[default]
    Open,
    /// Waiting on something outside the team (often the customer).
    Pending,
    /// Put aside until a time, or until the customer writes again.
    Snoozed,
    /// Resolved.
    Closed,
    /// Handled by a bot until handed over.
    Bot,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 5] = [Self::Open, Self::Pending, Self::Snoozed, Self::Closed, Self::Bot];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Pending => "pending",
            Self::Snoozed => "snoozed",
            Self::Closed => "closed",
            Self::Bot => "bot",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a conversation is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Priority {
    /// Low.
    Low,
    /// Medium, the default.
    #[default]
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

/// Whether a conversation is one-to-one or a group chat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupType {
    /// With one contact.
    #[default]
    Individual,
    /// In a group chat.
    Group,
}

/// Why a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReason {
    /// Someone asked for it.
    Requested,
    /// The customer wrote to a snoozed or closed conversation, which reopens it.
    CustomerMessage,
    /// A timed snooze ran out.
    SnoozeExpired,
    /// The inbox left (or was removed from) the conversation's group; the event's causation id is
    /// the group's leave event.
    GroupLeft,
}

/// Which side spoke last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Responder {
    /// The customer.
    Customer,
    /// An agent, bot or AI assistant.
    Agent,
}

/// A user's read receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReceipt {
    /// When they last read.
    pub read_at: DateTime<Utc>,
    /// The latest message then.
    pub last_read_message_id: Option<MessageId>,
    /// How many customer messages the conversation had then.
    pub customer_messages_seen: u64,
}

/// The Conversation aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id, once opened.
    pub id: Option<ConversationId>,
    /// The owning tenant, once opened.
    pub tenant_id: Option<TenantId>,
    /// Per-tenant display number.
    pub number: u64,
    /// The contact.
    pub contact_id: Option<ContactId>,
    /// The channel.
    pub channel: Option<Channel>,
    /// The inbox.
    pub inbox_id: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Priority.
    pub priority: Priority,
    /// Status.
    pub status: Status,
    /// When a timed snooze ends.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// Custom fields.
    pub custom_fields: Map<String, Value>,
    /// Starred.
    pub starred: bool,
    /// Assigned user.
    pub assignee_id: Option<String>,
    /// Assigned team.
    pub team_id: Option<String>,
    /// Labels, sorted.
    pub labels: BTreeSet<String>,
    /// Individual or group.
    pub group_type: GroupType,
    /// The group chat, for a group conversation.
    pub group_id: Option<GroupId>,
    /// Deleted (a tombstone).
    pub deleted: bool,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    #[serde(skip)]
    message_index: HashMap<MessageId, usize>,
    /// What the messages own on the heap, estimated; kept as they change, so that weighing a long
    /// conversation does not walk its messages.
    #[serde(skip)]
    message_heap: usize,
    /// Public customer messages, for unread counts.
    pub customer_message_count: u64,
    /// Users who sent a message.
    pub participant_ids: BTreeSet<String>,
    /// Users mentioned in a message.
    pub mentioned_ids: BTreeSet<String>,
    /// Read receipts by user.
    pub readers: BTreeMap<String, ReadReceipt>,
    /// Preview of the latest public message.
    pub last_message_preview: Option<String>,
    /// When the latest public message came.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Type of the latest public message.
    pub last_message_type: Option<MessageType>,
    /// Sender kind of the latest public message.
    pub last_message_sender_kind: Option<SenderKind>,
    /// Which side spoke last.
    pub last_responder: Option<Responder>,
    /// When the customer last wrote.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// When an agent last wrote.
    pub last_agent_message_at: Option<DateTime<Utc>>,
    /// Since when the customer waits for a human answer.
    pub customer_waiting_since: Option<DateTime<Utc>>,
    /// When a human first answered.
    pub first_reply_at: Option<DateTime<Utc>>,
    /// How many times a human answered a waiting customer.
    pub response_count: u64,
    /// Sum of those waits, ms.
    pub total_response_time_ms: i64,
    /// Opened at.
    pub created_at: Option<DateTime<Utc>>,
    /// Last change of any kind.
    pub updated_at: Option<DateTime<Utc>>,
    /// Last message, status or assignment change: what lists sort by.
    pub last_activity_at: Option<DateTime<Utc>>,
}

impl Footprint for Conversation {
    fn footprint(&self) -> usize {
        let readers = self.readers.keys().map(|user| footprint::string(user)).sum();
        size_of::<Self>()
            + footprint::vec(&self.messages, self.messages.capacity(), |_| 0)
            + self.message_heap
            + footprint::map_entries::<MessageId, usize>(self.message_index.capacity(), 0)
            + footprint::optional_strings([
                &self.inbox_id,
                &self.subject,
                &self.assignee_id,
                &self.team_id,
                &self.last_message_preview,
            ])
            + footprint::json_object(&self.custom_fields)
            + footprint::strings(&self.labels)
            + footprint::strings(&self.participant_ids)
            + footprint::strings(&self.mentioned_ids)
            + footprint::map_entries::<String, ReadReceipt>(self.readers.len(), readers)
    }
}

impl TenantOwned for Conversation {
    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = CommandContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        ctx: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = ctx.now;
        // Every branch decides all its events before writing any, so a refusal leaves the
        // aggregate untouched (the store relies on that to keep its cached copy).
        let events = match command {
            ConversationCommand::OpenConversation { conversation_id, tenant_id, number, conversation } => {
                vec![self.open(conversation_id, tenant_id, number, conversation, ctx)?]
            }
            command => {
                self.require_live()?;
                match command {
                    ConversationCommand::OpenConversation { .. } => {
                        return Err(ConversationError::AlreadyExists(self.require_live()?))
                    }
                    ConversationCommand::UpdateConversation(patch) => self.update(patch, now)?,
                    ConversationCommand::ChangeStatus { status, snoozed_until } => {
                        vec![self.change_status(status, snoozed_until, now)?]
                    }
                    ConversationCommand::WakeFromSnooze => {
                        if self.status != Status::Snoozed {
                            return Err(ConversationError::NotSnoozed);
                        }
                        if self.snoozed_until.is_none_or(|until| until > now) {
                            return Err(ConversationError::SnoozeNotDue);
                        }
                        vec![ConversationEvent::StatusChanged {
                            from: Status::Snoozed,
                            to: Status::Open,
                            snoozed_until: None,
                            reason: StatusReason::SnoozeExpired,
                            changed_at: now,
                        }]
                    }
                    ConversationCommand::Assign { assignee_id, team_id } => {
                        self.assign(assignee_id, team_id, now)?.into_iter().collect()
                    }
                    ConversationCommand::Unassign => {
                        if self.assignee_id.is_none() && self.team_id.is_none() {
                            vec![]
                        } else {
                            vec![ConversationEvent::ConversationUnassigned {
                                previous_assignee_id: self.assignee_id.clone(),
                                previous_team_id: self.team_id.clone(),
                                unassigned_at: now,
                            }]
                        }
                    }
                    ConversationCommand::ChangeLabels { add, remove } => {
                        self.change_labels(&add, &remove, now)?
                    }
                    ConversationCommand::MarkRead { user_id } => {
                        let user_id = validate::external_id("user_id", &user_id)?;
                        let unread_before = self.unread_count_for(&user_id);
                        let last_read_message_id = self.messages.last().map(|m| m.id);
                        let already = self
                            .readers
                            .get(&user_id)
                            .is_some_and(|r| r.last_read_message_id == last_read_message_id);
                        if already {
                            vec![]
                        } else {
                            vec![ConversationEvent::ConversationRead {
                                user_id,
                                last_read_message_id,
                                unread_before,
                                read_at: now,
                            }]
                        }
                    }
                    ConversationCommand::DeleteConversation => {
                        vec![ConversationEvent::ConversationDeleted { deleted_at: now }]
                    }
                    ConversationCommand::CloseForLeftGroup => {
                        if self.group_id.is_none() {
                            return Err(ConversationError::NotAGroupConversation);
                        }
                        if matches!(self.status, Status::Open | Status::Pending) {
                            vec![ConversationEvent::StatusChanged {
                                from: self.status,
                                to: Status::Closed,
                                snoozed_until: None,
                                reason: StatusReason::GroupLeft,
                                changed_at: now,
                            }]
                        } else {
                            vec![]
                        }
                    }
                    ConversationCommand::AddMessage(message) => {
                        self.message_events(self.add_message(message, None, now)?, now)
                    }
                    ConversationCommand::AddGroupMessage { message, group } => {
                        self.message_events(self.add_message(message, Some(&group), now)?, now)
                    }
                    ConversationCommand::UpdateMessage { message_id, patch } => {
                        self.update_message(message_id, patch, now)?
                    }
                    ConversationCommand::UpdateDelivery { message_id, status, error } => {
                        self.update_delivery(message_id, status, error, now)?.into_iter().collect()
                    }
                }
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let at = event.occurred_at();
        self.updated_at = Some(at);
        match event {
            ConversationEvent::ConversationOpened {
                conversation_id,
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
            } => {
                *self = Conversation {
                    id: Some(conversation_id),
                    tenant_id: Some(tenant_id),
                    number,
                    contact_id: Some(contact_id),
                    channel: Some(channel),
                    inbox_id,
                    subject,
                    priority,
                    status,
                    custom_fields,
                    labels: labels.into_iter().collect(),
                    group_type,
                    group_id,
                    created_at: Some(opened_at),
                    updated_at: Some(opened_at),
                    last_activity_at: Some(opened_at),
                    ..Conversation::default()
                };
            }
            ConversationEvent::SubjectChanged { subject, .. } => self.subject = subject,
            ConversationEvent::PriorityChanged { to, .. } => self.priority = to,
            ConversationEvent::CustomFieldsChanged { custom_fields, .. } => {
                self.custom_fields = custom_fields
            }
            ConversationEvent::ConversationStarred { .. } => self.starred = true,
            ConversationEvent::ConversationUnstarred { .. } => self.starred = false,
            ConversationEvent::StatusChanged { to, snoozed_until, changed_at, .. } => {
                self.status = to;
                self.snoozed_until = snoozed_until;
                self.last_activity_at = Some(changed_at);
            }
            ConversationEvent::ConversationAssigned { assignee_id, team_id, assigned_at, .. } => {
                self.assignee_id = assignee_id;
                self.team_id = team_id;
                self.last_activity_at = Some(assigned_at);
            }
            ConversationEvent::ConversationUnassigned { unassigned_at, .. } => {
                self.assignee_id = None;
                self.team_id = None;
                self.last_activity_at = Some(unassigned_at);
            }
            ConversationEvent::LabelsAdded { labels, .. } => self.labels.extend(labels),
            ConversationEvent::LabelsRemoved { labels, .. } => {
                for label in labels {
                    self.labels.remove(&label);
                }
            }
            ConversationEvent::ConversationRead { user_id, last_read_message_id, read_at, .. } => {
                let receipt = ReadReceipt {
                    read_at,
                    last_read_message_id,
                    customer_messages_seen: self.customer_message_count,
                };
                self.readers.insert(user_id, receipt);
            }
            ConversationEvent::ConversationDeleted { .. } => self.deleted = true,
            ConversationEvent::MessageAdded {
                message_id,
                sender,
                visibility,
                content,
                response_time_ms,
                created_at,
            } => {
                self.apply_message_added(
                    message_id,
                    sender,
                    visibility,
                    content,
                    response_time_ms,
                    created_at,
                );
            }
            ConversationEvent::MessageEdited { message_id, previous_text, text, edited_at } => {
                self.change_message(message_id, |message| message.edit(previous_text, text, edited_at));
            }
            ConversationEvent::MessageVisibilityChanged { message_id, to, changed_at, .. } => {
                self.change_message(message_id, |message| {
                    message.visibility = to;
                    message.updated_at = changed_at;
                });
            }
            ConversationEvent::ReactionAdded { message_id, reaction, reacted_at } => {
                self.change_message(message_id, |message| message.react(reaction, reacted_at));
            }
            ConversationEvent::ReactionRemoved { message_id, reaction, removed_at } => {
                self.change_message(message_id, |message| message.unreact(&reaction, removed_at));
            }
            ConversationEvent::DeliveryStatusChanged { message_id, to, error, changed_at, .. } => {
                self.change_message(message_id, |message| message.deliver(to, error, changed_at));
            }
        }
    }
}
