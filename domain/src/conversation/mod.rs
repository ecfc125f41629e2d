//! The Conversation aggregate: a thread with one contact over one channel, its workflow (status,
//! snooze, assignment, labels, priority, custom fields, stars, read receipts, deletion) and the
//! messages inside it with their reactions, edits and delivery status. It keeps the response
//! statistics the inbox and SLA screens show: who spoke last, since when the customer waits,
//! response count and times.

mod events;
mod message;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};

pub use events::ConversationEvent;
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

/// The fields a conversation is opened with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewConversation {
    /// The contact it is with.
    pub contact_id: Option<ContactId>,
    /// The channel it runs over.
    pub channel: Option<Channel>,
    /// The inbox (channel account) it arrived in.
    pub inbox_id: Option<String>,
    /// A subject line.
    pub subject: Option<String>,
    /// Priority; medium when absent.
    pub priority: Option<Priority>,
    /// The status it starts in: open (default), pending or bot.
    pub status: Option<Status>,
    /// Integrator-owned JSON object.
    pub custom_fields: Map<String, Value>,
    /// Labels it starts with.
    pub labels: Vec<String>,
    /// The group chat it belongs to; its `group_type` is then `group`.
    pub group_id: Option<GroupId>,
}

/// A partial update of a conversation's details. `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationPatch {
    /// New subject, or `Some(None)` to clear it.
    pub subject: Option<Option<String>>,
    /// New priority.
    pub priority: Option<Priority>,
    /// Merged key by key; a `null` value removes the key.
    pub custom_fields: Option<Map<String, Value>>,
    /// Star or unstar.
    pub starred: Option<bool>,
}

/// A change to a message: a text edit, a visibility change, reactions added or removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagePatch {
    /// New text; the old one goes into the edit history.
    pub text: Option<String>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// Reactions to add.
    pub add_reactions: Vec<Reaction>,
    /// Reactions to remove.
    pub remove_reactions: Vec<Reaction>,
}

/// Commands a Conversation accepts.
// A message carries its content inline; commands are built once and moved, so their size is of
// no consequence and boxing would only obscure construction.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    /// Opens the conversation. `number` is the tenant's next display number, allocated outside.
    OpenConversation {
        /// The new conversation's id.
        conversation_id: ConversationId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// Its per-tenant display number.
        number: u64,
        /// The details.
        conversation: NewConversation,
    },
    /// Changes subject, priority, custom fields or star.
    UpdateConversation(ConversationPatch),
    /// Moves the conversation to a status; `snoozed_until` only with `Snoozed`.
    ChangeStatus {
        /// The new status.
        status: Status,
        /// When a snooze ends; `None` snoozes until the customer writes.
        snoozed_until: Option<DateTime<Utc>>,
    },
    /// Reopens a snoozed conversation whose time has come; sent by the snooze timer.
    WakeFromSnooze,
    /// Assigns to a user and/or team; a `None` side keeps its current value.
    Assign {
        /// The user to assign.
        assignee_id: Option<String>,
        /// The team (department) to assign.
        team_id: Option<String>,
    },
    /// Removes both user and team assignment.
    Unassign,
    /// Adds and removes labels.
    ChangeLabels {
        /// Labels to add.
        add: Vec<String>,
        /// Labels to remove.
        remove: Vec<String>,
    },
    /// Records that a user has read the conversation up to its latest message.
    MarkRead {
        /// The reader.
        user_id: String,
    },
    /// Deletes the conversation: the stream stays, later commands are refused.
    DeleteConversation,
    /// Adds a message to a one-to-one conversation.
    AddMessage(NewMessage),
    /// Adds a message to a group conversation, checked against the group as it is now: a
    /// customer must be a current member, the inbox may not send while `announce` is on unless
    /// it is an admin (nor at all once it has left), mentions must name members, and `@everyone`
    /// is expanded to the members of this moment.
    AddGroupMessage {
        /// The message.
        message: NewMessage,
        /// The conversation's group, read just before.
        group: Box<Group>,
    },
    /// Closes an open or pending conversation because the inbox left its group (sent by the
    /// process manager that reacts to `GroupLeft`); other statuses are left alone.
    CloseForLeftGroup,
    /// Edits a message, changes its visibility, or adds and removes reactions.
    UpdateMessage {
        /// The message.
        message_id: MessageId,
        /// The changes.
        patch: MessagePatch,
    },
    /// Records a delivery report for an outgoing message.
    UpdateDelivery {
        /// The message.
        message_id: MessageId,
        /// The status reported.
        status: DeliveryStatus,
        /// Why it failed, with `Failed`.
        error: Option<DeliveryError>,
    },
}

/// Why a Conversation refused a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    /// Open on an id that is taken.
    #[error("conversation {0} already exists")]
    AlreadyExists(ConversationId),
    /// A command other than open on an id with no conversation.
    #[error("conversation does not exist")]
    NotFound,
    /// Any command after deletion.
    #[error("conversation {0} is deleted")]
    Deleted(ConversationId),
    /// A field breaks its rule.
    #[error("invalid {0}")]
    Invalid(#[from] FieldError),
    /// A status change to the status the conversation already has.
    #[error("conversation is already {0}")]
    AlreadyInStatus(Status),
    /// A snooze that would end in the past.
    #[error("snoozed_until must be in the future")]
    SnoozeInPast,
    /// A wake-up of a conversation that is not snoozed.
    #[error("conversation is not snoozed")]
    NotSnoozed,
    /// A wake-up before the snooze's time, or of a snooze that waits for the customer.
    #[error("the snooze has not run out yet")]
    SnoozeNotDue,
    /// A message id that the conversation already holds.
    #[error("message {0} already exists in this conversation")]
    DuplicateMessage(MessageId),
    /// A message id that the conversation does not hold.
    #[error("message {0} does not exist in this conversation")]
    UnknownMessage(MessageId),
    /// A reply to a message that the conversation does not hold.
    #[error("reply_to names message {0}, which is not in this conversation")]
    UnknownReplyTarget(MessageId),
    /// A customer or visitor message that is not public.
    #[error("messages from a customer or visitor are always public")]
    CustomerMessageNotPublic,
    /// A customer message whose sender is not the conversation's contact.
    #[error("sender {0} is not the contact of this conversation")]
    SenderNotInConversation(String),
    /// A user message without the user's id.
    #[error("a message from a user must carry sender.id")]
    UserSenderWithoutId,
    /// A text edit of a message type that has no editable text.
    #[error("{} messages cannot be edited", .0.as_str())]
    NotEditable(MessageType),
    /// A delivery report on a message that came in from the customer.
    #[error("message {0} came from the customer; delivery reports are for outgoing messages")]
    NotOutgoing(MessageId),
    /// A delivery report after a final status.
    #[error("delivery of this message is already final ({0:?})")]
    DeliveryFinal(DeliveryStatus),
    /// More labels than allowed.
    #[error("a conversation carries at most {MAX_LABELS} labels")]
    TooManyLabels,
    /// A plain message to a group conversation, which needs the group to be checked against.
    #[error("this is a group conversation; its messages are checked against the group")]
    GroupRequired,
    /// A group command to a conversation of no group, or of another group.
    #[error("this conversation does not belong to that group")]
    NotAGroupConversation,
    /// A customer message in a group from someone who is not a member now.
    #[error("sender {0} is not a member of this group")]
    SenderNotGroupMember(String),
    /// A mention in a group of someone who is not a member now.
    #[error("mention {0} names no member of this group")]
    MentionNotGroupMember(String),
    /// The inbox may not send to the group now: it left, or announce is on and it is no admin.
    #[error("{0}")]
    GroupRefusesSend(SendRefusal),
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

const MAX_CUSTOM_FIELDS_BYTES: usize = 16 * 1024;

/// How a group message names a member it mentions: `mention://contact/<contact id>`, as the
/// help desk in the seeds writes it (it may carry `/<display name>` after the id).
pub const CONTACT_MENTION_PREFIX: &str = "mention://contact/";

/// Whether a mention is `@everyone` (also written `everyone`, `@all`).
fn is_everyone(mention: &str) -> bool {
    matches!(mention.trim_start_matches('@').to_ascii_lowercase().as_str(), "everyone" | "all")
}

/// A group mention as a member's contact id: `mention://contact/<id>[/<name>]` or the bare id.
fn mentioned_contact(mention: &str) -> Option<ContactId> {
    let id = mention.strip_prefix(CONTACT_MENTION_PREFIX).unwrap_or(mention);
    let id = id.split('/').next().unwrap_or(id);
    uuid::Uuid::parse_str(id).ok().map(ContactId)
}

/// A group message's mentions, normalized to `mention://contact/<id>` once each, in order: each
/// must name a member now; with `everyone`, every member but the inbox's own follows them.
fn group_mentions(
    group: &Group,
    mentions: &[String],
    everyone: bool,
) -> Result<Vec<String>, ConversationError> {
    let mut contacts = Vec::new();
    for mention in mentions {
        match mentioned_contact(mention) {
            Some(contact) if group.is_member(contact) => contacts.push(contact),
            _ => return Err(ConversationError::MentionNotGroupMember(mention.clone())),
        }
    }
    if everyone {
        contacts.extend(group.expand_everyone());
    }
    let mut seen = BTreeSet::new();
    Ok(contacts
        .into_iter()
        .filter(|contact| seen.insert(*contact))
        .map(|contact| format!("{CONTACT_MENTION_PREFIX}{contact}"))
        .collect())
}

/// Whether `sender` may send `visibility` to `group` now: a customer must be a current member
/// (named by `sender.id`); the inbox's public messages follow [`Group::can_inbox_send`]. Notes
/// stay inside the team and system messages report what the provider did, so neither is checked.
fn group_sender_may_send(
    group: &Group,
    sender: &Sender,
    visibility: Visibility,
) -> Result<(), ConversationError> {
    if sender.kind.is_incoming() {
        let id = sender.id.clone().unwrap_or_default();
        return match uuid::Uuid::parse_str(&id).ok().map(ContactId) {
            Some(contact) if group.is_member(contact) => Ok(()),
            _ => Err(ConversationError::SenderNotGroupMember(id)),
        };
    }
    let sent_to_group = visibility == Visibility::Public
        && matches!(sender.kind, SenderKind::User | SenderKind::Bot | SenderKind::AiAssistant);
    if sent_to_group {
        group.can_inbox_send().map_err(ConversationError::GroupRefusesSend)?;
    }
    Ok(())
}

fn check_custom_fields(fields: &Map<String, Value>) -> Result<(), FieldError> {
    let size = serde_json::to_vec(fields).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_CUSTOM_FIELDS_BYTES {
        return Err(FieldError::new(
            "custom_fields",
            format!("must serialize to at most {MAX_CUSTOM_FIELDS_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn optional_id(field: &str, value: Option<&str>) -> Result<Option<String>, FieldError> {
    value.map(|v| validate::external_id(field, v)).transpose()
}

impl Conversation {
    /// The message with this id.
    pub fn message(&self, message_id: MessageId) -> Option<&Message> {
        self.message_index.get(&message_id).map(|&i| &self.messages[i])
    }

    /// Customer messages `user_id` has not read; all of them for a user who never read.
    pub fn unread_count_for(&self, user_id: &str) -> u64 {
        let seen = self.readers.get(user_id).map_or(0, |r| r.customer_messages_seen);
        self.customer_message_count.saturating_sub(seen)
    }

    /// Customer messages since the latest read by anyone.
    pub fn unread_count(&self) -> u64 {
        let seen = self.readers.values().map(|r| r.customer_messages_seen).max().unwrap_or(0);
        self.customer_message_count.saturating_sub(seen)
    }

    fn require_live(&self) -> Result<ConversationId, ConversationError> {
        let id = self.id.ok_or(ConversationError::NotFound)?;
        if self.deleted {
            return Err(ConversationError::Deleted(id));
        }
        Ok(id)
    }

    /// Changes the message with this id, if there is one, and weighs it again.
    fn change_message(&mut self, message_id: MessageId, change: impl FnOnce(&mut Message)) {
        if let Some(message) = self.message_index.get(&message_id).map(|&i| &mut self.messages[i]) {
            let before = message.heap_footprint();
            change(message);
            self.message_heap = self.message_heap.saturating_sub(before) + message.heap_footprint();
        }
    }

    fn open(
        &self,
        conversation_id: ConversationId,
        tenant_id: TenantId,
        number: u64,
        new: NewConversation,
        ctx: &CommandContext,
    ) -> Result<ConversationEvent, ConversationError> {
        if let Some(existing) = self.id {
            return Err(ConversationError::AlreadyExists(existing));
        }
        let contact_id = new.contact_id.ok_or_else(|| FieldError::new("contact_id", "is required"))?;
        let channel = new.channel.ok_or_else(|| FieldError::new("channel", "is required"))?;
        let status = new.status.unwrap_or_default();
        if !matches!(status, Status::Open | Status::Pending | Status::Bot) {
            return Err(FieldError::new("status", "a conversation opens as open, pending or bot").into());
        }
        check_custom_fields(&new.custom_fields)?;
        Ok(ConversationEvent::ConversationOpened {
            conversation_id,
            tenant_id,
            number,
            contact_id,
            channel,
            inbox_id: optional_id("inbox_id", new.inbox_id.as_deref())?,
            subject: validate::optional_text("subject", new.subject.as_deref(), MAX_SHORT_TEXT)?,
            priority: new.priority.unwrap_or_default(),
            status,
            custom_fields: new.custom_fields,
            labels: validate::labels("labels", &new.labels)?,
            group_type: if new.group_id.is_some() { GroupType::Group } else { GroupType::Individual },
            group_id: new.group_id,
            opened_at: ctx.now,
        })
    }

    fn update(
        &self,
        patch: ConversationPatch,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        let mut events = Vec::new();
        if let Some(subject) = patch.subject {
            let subject = validate::optional_text("subject", subject.as_deref(), MAX_SHORT_TEXT)?;
            if subject != self.subject {
                events.push(ConversationEvent::SubjectChanged { subject, changed_at: now });
            }
        }
        if let Some(priority) = patch.priority.filter(|p| *p != self.priority) {
            events.push(ConversationEvent::PriorityChanged {
                from: self.priority,
                to: priority,
                changed_at: now,
            });
        }
        if let Some(merge) = patch.custom_fields {
            let mut custom_fields = self.custom_fields.clone();
            for (key, value) in merge {
                if value.is_null() {
                    custom_fields.remove(&key);
                } else {
                    custom_fields.insert(key, value);
                }
            }
            check_custom_fields(&custom_fields)?;
            if custom_fields != self.custom_fields {
                events.push(ConversationEvent::CustomFieldsChanged { custom_fields, changed_at: now });
            }
        }
        match patch.starred {
            Some(true) if !self.starred => {
                events.push(ConversationEvent::ConversationStarred { starred_at: now })
            }
            Some(false) if self.starred => {
                events.push(ConversationEvent::ConversationUnstarred { unstarred_at: now })
            }
            _ => {}
        }
        Ok(events)
    }

    fn change_status(
        &self,
        status: Status,
        snoozed_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<ConversationEvent, ConversationError> {
        if snoozed_until.is_some() && status != Status::Snoozed {
            return Err(FieldError::new("snoozed_until", "is only allowed with status snoozed").into());
        }
        if let Some(until) = snoozed_until {
            validate::instant("snoozed_until", until)?;
        }
        if snoozed_until.is_some_and(|until| until <= now) {
            return Err(ConversationError::SnoozeInPast);
        }
        if status == self.status && (status != Status::Snoozed || snoozed_until == self.snoozed_until) {
            return Err(ConversationError::AlreadyInStatus(status));
        }
        Ok(ConversationEvent::StatusChanged {
            from: self.status,
            to: status,
            snoozed_until,
            reason: StatusReason::Requested,
            changed_at: now,
        })
    }

    fn assign(
        &self,
        assignee_id: Option<String>,
        team_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<ConversationEvent>, ConversationError> {
        if assignee_id.is_none() && team_id.is_none() {
            return Err(FieldError::new("assignee_id", "give assignee_id, team_id or both").into());
        }
        let assignee_id =
            optional_id("assignee_id", assignee_id.as_deref())?.or_else(|| self.assignee_id.clone());
        let team_id = optional_id("team_id", team_id.as_deref())?.or_else(|| self.team_id.clone());
        if assignee_id == self.assignee_id && team_id == self.team_id {
            return Ok(None);
        }
        Ok(Some(ConversationEvent::ConversationAssigned {
            assignee_id,
            team_id,
            previous_assignee_id: self.assignee_id.clone(),
            previous_team_id: self.team_id.clone(),
            assigned_at: now,
        }))
    }

    fn change_labels(
        &self,
        add: &[String],
        remove: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        let add = validate::labels("add", add)?;
        let remove = validate::labels("remove", remove)?;
        let removed: Vec<String> =
            remove.into_iter().filter(|label| self.labels.contains(label) && !add.contains(label)).collect();
        let added: Vec<String> = add.into_iter().filter(|label| !self.labels.contains(label)).collect();
        if self.labels.len() + added.len() - removed.len() > MAX_LABELS {
            return Err(ConversationError::TooManyLabels);
        }
        let mut events = Vec::new();
        if !removed.is_empty() {
            events.push(ConversationEvent::LabelsRemoved { labels: removed, changed_at: now });
        }
        if !added.is_empty() {
            events.push(ConversationEvent::LabelsAdded { labels: added, changed_at: now });
        }
        Ok(events)
    }

    fn add_message(
        &self,
        message: NewMessage,
        group: Option<&Group>,
        now: DateTime<Utc>,
    ) -> Result<ConversationEvent, ConversationError> {
        match (self.group_id, group) {
            (Some(_), None) => return Err(ConversationError::GroupRequired),
            (mine, Some(group)) if group.id.is_none() || group.id != mine => {
                return Err(ConversationError::NotAGroupConversation)
            }
            _ => {}
        }
        let NewMessage { message_id, mut sender, visibility, mut content } = message;
        if self.message_index.contains_key(&message_id) {
            return Err(ConversationError::DuplicateMessage(message_id));
        }
        let everyone = group.is_some() && content.mentions.iter().any(|m| is_everyone(m));
        if everyone {
            content.mentions.retain(|m| !is_everyone(m));
        }
        let mut content = content.validated()?;
        if let Some(group) = group {
            content.mentions = group_mentions(group, &content.mentions, everyone)?;
            content.mentions_everyone = everyone;
        }
        if let Some(reply_to) = content.reply_to {
            if !self.message_index.contains_key(&reply_to) {
                return Err(ConversationError::UnknownReplyTarget(reply_to));
            }
        }
        sender.id = optional_id("sender.id", sender.id.as_deref())?;
        if sender.kind.is_incoming() && visibility != Visibility::Public {
            return Err(ConversationError::CustomerMessageNotPublic);
        }
        if let Some(group) = group {
            group_sender_may_send(group, &sender, visibility)?;
        } else if sender.kind == SenderKind::Customer {
            let contact = self.contact_id.map(|c| c.to_string());
            match &sender.id {
                None => sender.id = contact,
                Some(id) if Some(id) != contact.as_ref() => {
                    return Err(ConversationError::SenderNotInConversation(id.clone()));
                }
                Some(_) => {}
            }
        }
        if sender.kind == SenderKind::User && sender.id.is_none() {
            return Err(ConversationError::UserSenderWithoutId);
        }
        // Only a human agent's public reply ends the customer's wait; bots and notes do not.
        let response_time_ms = match (sender.kind, visibility, self.customer_waiting_since) {
            (SenderKind::User, Visibility::Public, Some(since)) => {
                Some((now - since).num_milliseconds().max(0))
            }
            _ => None,
        };
        Ok(ConversationEvent::MessageAdded {
            message_id,
            sender,
            visibility,
            content,
            response_time_ms,
            created_at: now,
        })
    }

    /// The events of an added message: the message, and for a customer writing to a snoozed or
    /// resolved conversation, the reopening.
    fn message_events(&self, added: ConversationEvent, now: DateTime<Utc>) -> Vec<ConversationEvent> {
        let incoming =
            matches!(&added, ConversationEvent::MessageAdded { sender, .. } if sender.kind.is_incoming());
        let mut events = vec![added];
        if incoming && matches!(self.status, Status::Snoozed | Status::Closed) {
            events.push(ConversationEvent::StatusChanged {
                from: self.status,
                to: Status::Open,
                snoozed_until: None,
                reason: StatusReason::CustomerMessage,
                changed_at: now,
            });
        }
        events
    }

    fn update_message(
        &self,
        message_id: MessageId,
        patch: MessagePatch,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        let message = self.message(message_id).ok_or(ConversationError::UnknownMessage(message_id))?;
        let mut events = Vec::new();
        if let Some(text) = patch.text {
            if !matches!(message.message_type, MessageType::Text | MessageType::Email | MessageType::Media) {
                return Err(ConversationError::NotEditable(message.message_type));
            }
            let text = validate::text("text", &text, validate::MAX_MESSAGE_TEXT, true)?;
            if Some(text.as_str()) != message.text() {
                events.push(ConversationEvent::MessageEdited {
                    message_id,
                    previous_text: message.text().map(str::to_owned),
                    text,
                    edited_at: now,
                });
            }
        }
        if let Some(to) = patch.visibility.filter(|v| *v != message.visibility) {
            events.push(ConversationEvent::MessageVisibilityChanged {
                message_id,
                from: message.visibility,
                to,
                changed_at: now,
            });
        }
        let mut reactions = message.reactions().to_vec();
        for reaction in patch.remove_reactions {
            let reaction = Reaction { emoji: validate_emoji(&reaction.emoji)?, sender: reaction.sender };
            if let Some(i) = reactions.iter().position(|r| *r == reaction) {
                reactions.remove(i);
                events.push(ConversationEvent::ReactionRemoved { message_id, reaction, removed_at: now });
            }
        }
        for reaction in patch.add_reactions {
            let reaction = Reaction { emoji: validate_emoji(&reaction.emoji)?, sender: reaction.sender };
            optional_id("reactions.sender.id", reaction.sender.id.as_deref())?;
            if !reactions.contains(&reaction) {
                reactions.push(reaction.clone());
                events.push(ConversationEvent::ReactionAdded { message_id, reaction, reacted_at: now });
            }
        }
        Ok(events)
    }

    fn update_delivery(
        &self,
        message_id: MessageId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
        now: DateTime<Utc>,
    ) -> Result<Option<ConversationEvent>, ConversationError> {
        let message = self.message(message_id).ok_or(ConversationError::UnknownMessage(message_id))?;
        if message.sender.kind.is_incoming() {
            return Err(ConversationError::NotOutgoing(message_id));
        }
        let error = match (status, error) {
            (DeliveryStatus::Failed, Some(error)) => Some(DeliveryError {
                code: optional_id("error.code", error.code.as_deref())?,
                reason: validate::text("error.reason", &error.reason, 1024, true)?,
            }),
            (DeliveryStatus::Failed, None) => {
                return Err(FieldError::new("error", "a failed delivery needs error.reason").into())
            }
            (_, Some(_)) => return Err(FieldError::new("error", "is only allowed with status failed").into()),
            (_, None) => None,
        };
        let current = message.delivery_status;
        match current {
            Some(DeliveryStatus::Failed) => {
                return Err(ConversationError::DeliveryFinal(DeliveryStatus::Failed))
            }
            Some(DeliveryStatus::Read) if status == DeliveryStatus::Failed => {
                return Err(ConversationError::DeliveryFinal(DeliveryStatus::Read))
            }
            // Providers report out of order; a status behind the current one changes nothing.
            Some(current) if status.rank() <= current.rank() => return Ok(None),
            _ => {}
        }
        Ok(Some(ConversationEvent::DeliveryStatusChanged {
            message_id,
            from: current,
            to: status,
            error,
            changed_at: now,
        }))
    }

    fn apply_message_added(
        &mut self,
        message_id: MessageId,
        sender: Sender,
        visibility: Visibility,
        content: MessageContent,
        response_time_ms: Option<i64>,
        created_at: DateTime<Utc>,
    ) {
        let public = visibility == Visibility::Public;
        if public {
            self.last_message_preview = Some(content.preview());
            self.last_message_at = Some(created_at);
            self.last_message_type = Some(content.message_type);
            self.last_message_sender_kind = Some(sender.kind);
            if sender.kind.is_incoming() {
                self.customer_message_count += 1;
                self.last_responder = Some(Responder::Customer);
                self.last_customer_message_at = Some(created_at);
                self.customer_waiting_since.get_or_insert(created_at);
            } else if matches!(sender.kind, SenderKind::User | SenderKind::Bot | SenderKind::AiAssistant) {
                self.last_responder = Some(Responder::Agent);
                self.last_agent_message_at = Some(created_at);
            }
        }
        if let Some(waited) = response_time_ms {
            self.response_count += 1;
            self.total_response_time_ms += waited;
            self.first_reply_at.get_or_insert(created_at);
            self.customer_waiting_since = None;
        }
        if sender.kind == SenderKind::User {
            if let Some(id) = &sender.id {
                self.participant_ids.insert(id.clone());
            }
        }
        // Group mentions name contacts, not users; `mentioned_ids` is the users' "mentions me".
        self.mentioned_ids
            .extend(content.mentions.iter().filter(|m| !m.starts_with(CONTACT_MENTION_PREFIX)).cloned());
        self.message_index.insert(message_id, self.messages.len());
        let position = self.messages.len() as u64 + 1;
        let message = Message::new(message_id, position, sender, visibility, content, created_at);
        self.message_heap += message.heap_footprint();
        self.messages.push(message);
        self.last_activity_at = Some(created_at);
    }

    /// Rebuilds the message index and weight after deserialising a state that skipped them.
    pub fn reindex(&mut self) {
        self.message_index = self.messages.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        self.message_heap = self.messages.iter().map(Message::heap_footprint).sum();
    }
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
