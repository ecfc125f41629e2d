//! The JSON shapes the API answers with, built from aggregate state and stored events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use colloquy_domain::contact::ContactStatus;
use colloquy_domain::conversation::{
    Attachment, DeliveryError, DeliveryStatus, Edit, EmailEnvelope, GroupType, Location, Message,
    MessageType, Priority, Reaction, Responder, Sender, Status, Visibility,
};
use colloquy_domain::{Channel, Contact, ContactId, Conversation, ConversationId, MessageId};
use colloquy_infra::StoredEvent;
use colloquy_projections::conversation_list::{ContactSummary, ConversationRow};

/// A contact.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    id: Option<ContactId>,
    first_name: String,
    last_name: Option<String>,
    full_name: String,
    phone: Option<String>,
    email: Option<String>,
    preferred_channel: Option<Channel>,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    labels: Vec<String>,
    status: ContactStatus,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    /// When its personal data was erased (`POST /v1/contacts/{id}/erase`); absent before.
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_at: Option<DateTime<Utc>>,
    version: usize,
}

impl ContactView {
    /// The view of `contact` at `version`.
    pub fn of(contact: &Contact, version: usize) -> Self {
        Self {
            id: contact.id,
            first_name: contact.first_name.clone(),
            last_name: contact.last_name.clone(),
            full_name: contact.full_name.clone(),
            phone: contact.phone.clone(),
            email: contact.email.clone(),
            preferred_channel: contact.preferred_channel,
            metadata: contact.metadata.clone(),
            labels: contact.labels.clone(),
            status: contact.status,
            created_at: contact.created_at,
            updated_at: contact.updated_at,
            erased_at: contact.erased_at,
            version,
        }
    }
}

/// One reader's receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReaderView {
    user_id: String,
    read_at: DateTime<Utc>,
    last_read_message_id: Option<String>,
    unread_count: u64,
    /// Group activity newer than this reader's last read.
    unseen_activity: bool,
}

/// The latest public message, for list screens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastMessageView {
    preview: Option<String>,
    at: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    message_type: Option<MessageType>,
    sender_kind: Option<colloquy_domain::conversation::SenderKind>,
}

/// A conversation with its workflow state and response statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    id: Option<ConversationId>,
    number: u64,
    contact_id: Option<ContactId>,
    /// The contact's name, e-mail and phone: in reads served by the inbox read model.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::ContactSummarySchema>)]
    contact: Option<ContactSummary>,
    channel: Option<Channel>,
    inbox_id: Option<String>,
    subject: Option<String>,
    status: Status,
    snoozed_until: Option<DateTime<Utc>>,
    priority: Priority,
    #[schema(value_type = Object)]
    custom_fields: Map<String, Value>,
    starred: bool,
    assignee_id: Option<String>,
    team_id: Option<String>,
    labels: Vec<String>,
    group_type: GroupType,
    /// The group chat, for a group conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<String>,
    /// The group's latest activity the provider reported (groups whose messages are not
    /// processed one by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    group_activity_at: Option<DateTime<Utc>>,
    deleted: bool,
    message_count: usize,
    unread_count: u64,
    /// Group activity newer than anyone's last read: shows a group as unread when its messages
    /// are not processed one by one.
    unseen_activity: bool,
    last_message: LastMessageView,
    last_responder: Option<Responder>,
    is_customer_responded_last: bool,
    last_customer_message_at: Option<DateTime<Utc>>,
    last_agent_message_at: Option<DateTime<Utc>>,
    customer_waiting_since: Option<DateTime<Utc>>,
    first_reply_at: Option<DateTime<Utc>>,
    response_count: u64,
    total_response_time_ms: i64,
    average_response_time_ms: Option<i64>,
    participant_ids: Vec<String>,
    mentioned_ids: Vec<String>,
    readers: Vec<ReaderView>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    last_activity_at: Option<DateTime<Utc>>,
    version: usize,
    /// How it stands against its SLA: the worst state of its live timers and their next due.
    /// In lists (from the SLA projection, which may trail the list a moment); absent without a
    /// live timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    sla: Option<SlaDueView>,
}

/// How a conversation stands against its SLA, on its inbox row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlaDueView {
    /// The worst state of its live timers.
    state: colloquy_domain::sla::DueState,
    /// The earliest due of its running timers (past, once breached); null while all are paused.
    next_due_at: Option<DateTime<Utc>>,
}

impl ConversationView {
    /// The view of `conversation` at `version`.
    pub fn of(conversation: &Conversation, version: usize) -> Self {
        let average = (conversation.response_count > 0)
            .then(|| conversation.total_response_time_ms / conversation.response_count as i64);
        Self {
            id: conversation.id,
            number: conversation.number,
            contact_id: conversation.contact_id,
            contact: None,
            channel: conversation.channel,
            inbox_id: conversation.inbox_id.clone(),
            subject: conversation.subject.clone(),
            status: conversation.status,
            snoozed_until: conversation.snoozed_until,
            priority: conversation.priority,
            custom_fields: conversation.custom_fields.clone(),
            starred: conversation.starred,
            assignee_id: conversation.assignee_id.clone(),
            team_id: conversation.team_id.clone(),
            labels: conversation.labels.iter().cloned().collect(),
            group_type: conversation.group_type,
            group_id: conversation.group_id.map(|g| g.to_string()),
            group_activity_at: None,
            deleted: conversation.deleted,
            message_count: conversation.messages.len(),
            unread_count: conversation.unread_count(),
            unseen_activity: false,
            last_message: LastMessageView {
                preview: conversation.last_message_preview.clone(),
                at: conversation.last_message_at,
                message_type: conversation.last_message_type,
                sender_kind: conversation.last_message_sender_kind,
            },
            last_responder: conversation.last_responder,
            is_customer_responded_last: conversation.last_responder == Some(Responder::Customer),
            last_customer_message_at: conversation.last_customer_message_at,
            last_agent_message_at: conversation.last_agent_message_at,
            customer_waiting_since: conversation.customer_waiting_since,
            first_reply_at: conversation.first_reply_at,
            response_count: conversation.response_count,
            total_response_time_ms: conversation.total_response_time_ms,
            average_response_time_ms: average,
            participant_ids: conversation.participant_ids.iter().cloned().collect(),
            mentioned_ids: conversation.mentioned_ids.iter().cloned().collect(),
            readers: conversation
                .readers
                .iter()
                .map(|(user_id, receipt)| ReaderView {
                    user_id: user_id.clone(),
                    read_at: receipt.read_at,
                    last_read_message_id: receipt.last_read_message_id.map(|id| id.to_string()),
                    unread_count: conversation.unread_count_for(user_id),
                    unseen_activity: false,
                })
                .collect(),
            created_at: conversation.created_at,
            updated_at: conversation.updated_at,
            last_activity_at: conversation.last_activity_at,
            version,
            sla: None,
        }
    }
}

impl ConversationView {
    /// The view of a row of the inbox read model: the same shape as [`ConversationView::of`],
    /// with the contact's summary.
    pub fn from_row(row: ConversationRow) -> Self {
        let average = (row.response_count > 0).then(|| row.total_response_time_ms / row.response_count);
        let readers = row
            .readers
            .iter()
            .map(|(user_id, receipt)| ReaderView {
                user_id: user_id.clone(),
                read_at: receipt.read_at,
                last_read_message_id: receipt.last_read_message_id.clone(),
                unread_count: u64::try_from(row.unread_count_for(user_id)).unwrap_or(0),
                unseen_activity: row.unseen_activity_for(user_id),
            })
            .collect();
        Self {
            id: row.id.parse().ok().map(ConversationId),
            number: u64::try_from(row.number).unwrap_or(0),
            contact_id: row.contact_id.parse().ok().map(ContactId),
            contact: Some(row.contact.clone()),
            channel: Some(row.channel),
            inbox_id: row.inbox_id.clone(),
            subject: row.subject.clone(),
            status: row.status,
            snoozed_until: row.snoozed_until,
            priority: row.priority,
            custom_fields: row.custom_fields.clone(),
            starred: row.starred,
            assignee_id: row.assignee_id.clone(),
            team_id: row.team_id.clone(),
            labels: row.labels.clone(),
            group_type: row.group_type,
            group_id: row.group_id.clone(),
            group_activity_at: row.group_activity_at,
            deleted: row.deleted,
            message_count: usize::try_from(row.message_count).unwrap_or(0),
            unread_count: u64::try_from(row.unread_count()).unwrap_or(0),
            unseen_activity: row.unseen_activity(),
            last_message: LastMessageView {
                preview: row.last_message_preview.clone(),
                at: row.last_message_at,
                message_type: row.last_message_type,
                sender_kind: row.last_message_sender_kind,
            },
            last_responder: row.last_responder,
            is_customer_responded_last: row.last_responder == Some(Responder::Customer),
            last_customer_message_at: row.last_customer_message_at,
            last_agent_message_at: row.last_agent_message_at,
            customer_waiting_since: row.waiting_since,
            first_reply_at: row.first_reply_at,
            response_count: u64::try_from(row.response_count).unwrap_or(0),
            total_response_time_ms: row.total_response_time_ms,
            average_response_time_ms: average,
            participant_ids: row.participants.clone(),
            mentioned_ids: row.mentioned.clone(),
            readers,
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
            last_activity_at: Some(row.last_activity_at),
            version: usize::try_from(row.version).unwrap_or(0),
            sla: None,
        }
    }

    /// The same view with its row's SLA.
    pub fn with_sla(mut self, due: Option<colloquy_domain::sla::Due>) -> Self {
        self.sla = due.map(|due| SlaDueView { state: due.state, next_due_at: due.next_due_at });
        self
    }

    /// The same view with the contact's summary.
    pub fn with_contact(mut self, contact: ContactSummary) -> Self {
        self.contact = Some(contact);
        self
    }
}

/// Delivery state of an outgoing message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    status: Option<DeliveryStatus>,
    error: Option<DeliveryError>,
}

/// A message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    id: MessageId,
    conversation_id: Option<ConversationId>,
    position: u64,
    #[serde(rename = "type")]
    message_type: MessageType,
    sender: Sender,
    visibility: Visibility,
    text: Option<String>,
    attachments: Vec<Attachment>,
    reply_to: Option<MessageId>,
    forwarded: bool,
    mentions: Vec<String>,
    /// In a group, whether the sender wrote `@everyone` (`mentions` then lists the members of
    /// that moment).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mentions_everyone: bool,
    email: Option<EmailEnvelope>,
    location: Option<Location>,
    template: Option<Value>,
    interactive: Option<Value>,
    contacts: Option<Value>,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    reactions: Vec<Reaction>,
    edit_history: Vec<Edit>,
    delivery: DeliveryView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl MessageView {
    /// The view of one message of `conversation`.
    pub fn of(conversation: &Conversation, message: &Message) -> Self {
        let content = message.content();
        Self {
            id: message.id,
            conversation_id: conversation.id,
            position: message.position,
            message_type: content.message_type,
            sender: message.sender.clone(),
            visibility: message.visibility,
            text: content.text,
            attachments: content.attachments,
            reply_to: content.reply_to,
            forwarded: content.forwarded,
            mentions: content.mentions,
            mentions_everyone: content.mentions_everyone,
            email: content.email.map(|e| *e),
            location: content.location.map(|l| *l),
            template: content.template.map(|t| *t),
            interactive: content.interactive.map(|i| *i),
            contacts: content.contacts.map(|c| *c),
            metadata: content.metadata,
            reactions: message.reactions().to_vec(),
            edit_history: message.edit_history().to_vec(),
            delivery: DeliveryView {
                status: message.delivery_status,
                error: message.delivery_error().cloned(),
            },
            created_at: message.created_at,
            updated_at: message.updated_at,
        }
    }
}

/// An event's fields: cqrs-es stores an event as `{"EventName": {...fields}}`, and the name is
/// already in `event_type`, so this is the fields alone.
pub fn event_data(event: &StoredEvent) -> Value {
    match event.payload.to_value() {
        Value::Object(mut map) if map.len() == 1 && map.contains_key(&event.event_type) => {
            map.remove(&event.event_type).unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// A stored event, as auditors and reporting services read it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    position: Option<i64>,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    /// The event's fields (its name is `event_type`).
    data: Value,
    /// Who did it and why: event id, tenant, actor, request, correlation and causation ids, time.
    metadata: Value,
}

impl From<StoredEvent> for EventView {
    /// The event in the current shape of its type (as stored where an upcaster refuses it).
    fn from(event: StoredEvent) -> Self {
        let current = match event.upcast_or_as_stored() {
            std::borrow::Cow::Owned(current) => Some(current),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let event = current.unwrap_or(event);
        let data = event_data(&event);
        Self {
            position: event.position,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            data,
            metadata: event.metadata.to_value(),
        }
    }
}

/// One group a contact is a member of (`GET /v1/contacts/{id}/groups`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactGroupView {
    /// The group.
    pub group_id: String,
    /// The contact's role: `member`, `admin` or `superadmin`.
    pub role: String,
    /// Member since.
    pub since: DateTime<Utc>,
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A group, as `GET /v1/groups/{id}` answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    id: Option<colloquy_domain::GroupId>,
    inbox_id: String,
    inbox_contact_id: Option<ContactId>,
    inbox_role: Option<colloquy_domain::group::Role>,
    owner_id: Option<ContactId>,
    provider_group_id: Option<String>,
    subject: String,
    description: Option<String>,
    avatar_url: Option<String>,
    settings: colloquy_domain::group::GroupSettings,
    member_count: usize,
    pending_join_requests: usize,
    left: bool,
    left_at: Option<DateTime<Utc>>,
    invite_code: Option<String>,
    invite_url: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    last_activity_at: Option<DateTime<Utc>>,
    last_sync_requested_at: Option<DateTime<Utc>>,
    version: usize,
}

impl GroupView {
    /// The view of `group` at `version`.
    pub fn of(group: &colloquy_domain::Group, version: usize) -> Self {
        Self {
            id: group.id,
            inbox_id: group.inbox_id.clone(),
            inbox_contact_id: group.inbox_contact_id,
            inbox_role: group.inbox_role(),
            owner_id: group.owner(),
            provider_group_id: group.provider_group_id.clone(),
            subject: group.subject.clone(),
            description: group.description.clone(),
            avatar_url: group.avatar_url.clone(),
            settings: group.settings,
            member_count: group.member_count(),
            pending_join_requests: group.join_requests.len(),
            left: group.left,
            left_at: group.left_at,
            invite_code: group.invite_code.clone(),
            invite_url: group.invite_url(),
            created_at: group.created_at,
            updated_at: group.updated_at,
            last_activity_at: group.last_activity_at,
            last_sync_requested_at: group.last_sync_requested_at,
            version,
        }
    }
}

/// A member of a group and their role.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupMemberView {
    /// The member's contact.
    pub contact_id: ContactId,
    /// Their role.
    pub role: colloquy_domain::group::Role,
    /// Whether this member is the inbox's own number.
    pub is_inbox: bool,
}

/// A page of a group's members, current or `as_of` a moment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupMembersPage {
    /// The moment the list describes; `null` for now.
    pub as_of: Option<DateTime<Utc>>,
    /// How many members the group had then (all pages).
    pub member_count: usize,
    /// The members on this page: the inbox's own first, then admins, then members.
    pub data: Vec<GroupMemberView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A group's invite link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupInviteView {
    /// The current code; `null` when none is known.
    pub invite_code: Option<String>,
    /// The link for the code.
    pub invite_url: Option<String>,
}

/// A pending join request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JoinRequestView {
    /// The contact asking.
    pub contact_id: ContactId,
    /// How they asked.
    pub via: colloquy_domain::group::RequestVia,
    /// When.
    pub requested_at: DateTime<Utc>,
}
