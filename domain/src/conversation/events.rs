//! The Conversation's events: the stored contract. Each is a past-tense fact with every field a
//! projector needs; a shape, once stored, changes only with a new `event_version` and an
//! upcaster.

use super::*;

/// Facts about a conversation.
// Stored shapes stay flat (no Box) so the JSON is exactly the fields; size in memory is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    /// The conversation was opened.
    ConversationOpened {
        /// Its id.
        conversation_id: ConversationId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// Per-tenant display number.
        number: u64,
        /// The contact.
        contact_id: ContactId,
        /// The channel.
        channel: Channel,
        /// The inbox.
        inbox_id: Option<String>,
        /// Subject.
        subject: Option<String>,
        /// Priority.
        priority: Priority,
        /// Starting status.
        status: Status,
        /// Custom fields.
        custom_fields: Map<String, Value>,
        /// Starting labels.
        labels: Vec<String>,
        /// Individual or group.
        group_type: GroupType,
        /// The group chat, for a group conversation. Absent in events stored before groups.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_id: Option<GroupId>,
        /// When.
        opened_at: DateTime<Utc>,
    },
    /// The subject changed.
    SubjectChanged {
        /// The new subject.
        subject: Option<String>,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// The priority changed.
    PriorityChanged {
        /// Before.
        from: Priority,
        /// Now.
        to: Priority,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// Custom fields changed; carries the whole object after the change.
    CustomFieldsChanged {
        /// The custom fields now.
        custom_fields: Map<String, Value>,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// Starred.
    ConversationStarred {
        /// When.
        starred_at: DateTime<Utc>,
    },
    /// Unstarred.
    ConversationUnstarred {
        /// When.
        unstarred_at: DateTime<Utc>,
    },
    /// The status changed.
    StatusChanged {
        /// Before.
        from: Status,
        /// Now.
        to: Status,
        /// When a snooze ends, for `Snoozed`.
        snoozed_until: Option<DateTime<Utc>>,
        /// Why.
        reason: StatusReason,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// The assignment changed; carries the whole assignment after the change.
    ConversationAssigned {
        /// The assigned user now.
        assignee_id: Option<String>,
        /// The assigned team now.
        team_id: Option<String>,
        /// The user before.
        previous_assignee_id: Option<String>,
        /// The team before.
        previous_team_id: Option<String>,
        /// When.
        assigned_at: DateTime<Utc>,
    },
    /// Nobody is assigned any more.
    ConversationUnassigned {
        /// The user before.
        previous_assignee_id: Option<String>,
        /// The team before.
        previous_team_id: Option<String>,
        /// When.
        unassigned_at: DateTime<Utc>,
    },
    /// Labels were added (only those not already there).
    LabelsAdded {
        /// The added labels.
        labels: Vec<String>,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// Labels were removed (only those that were there).
    LabelsRemoved {
        /// The removed labels.
        labels: Vec<String>,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// A user read the conversation up to a message.
    ConversationRead {
        /// The reader.
        user_id: String,
        /// The latest message when they read.
        last_read_message_id: Option<MessageId>,
        /// Customer messages they had not read before this.
        unread_before: u64,
        /// When.
        read_at: DateTime<Utc>,
    },
    /// The conversation was deleted.
    ConversationDeleted {
        /// When.
        deleted_at: DateTime<Utc>,
    },
    /// A message was added.
    MessageAdded {
        /// Its id.
        message_id: MessageId,
        /// Who sent it (for customers, the id is the contact's).
        sender: Sender,
        /// Who may see it.
        visibility: Visibility,
        /// Its content.
        content: MessageContent,
        /// For an agent's first reply to a waiting customer: how long the customer waited, ms.
        response_time_ms: Option<i64>,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A message's text was edited.
    MessageEdited {
        /// The message.
        message_id: MessageId,
        /// The text before.
        previous_text: Option<String>,
        /// The text now.
        text: String,
        /// When.
        edited_at: DateTime<Utc>,
    },
    /// A message's visibility changed.
    MessageVisibilityChanged {
        /// The message.
        message_id: MessageId,
        /// Before.
        from: Visibility,
        /// Now.
        to: Visibility,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// Someone reacted to a message.
    ReactionAdded {
        /// The message.
        message_id: MessageId,
        /// The reaction.
        reaction: Reaction,
        /// When.
        reacted_at: DateTime<Utc>,
    },
    /// Someone took a reaction back.
    ReactionRemoved {
        /// The message.
        message_id: MessageId,
        /// The reaction.
        reaction: Reaction,
        /// When.
        removed_at: DateTime<Utc>,
    },
    /// The provider reported a new delivery status.
    DeliveryStatusChanged {
        /// The message.
        message_id: MessageId,
        /// Before.
        from: Option<DeliveryStatus>,
        /// Now.
        to: DeliveryStatus,
        /// Why it failed.
        error: Option<DeliveryError>,
        /// When.
        changed_at: DateTime<Utc>,
    },
}

impl ConversationEvent {
    /// When the fact happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            ConversationEvent::ConversationOpened { opened_at, .. } => *opened_at,
            ConversationEvent::SubjectChanged { changed_at, .. }
            | ConversationEvent::PriorityChanged { changed_at, .. }
            | ConversationEvent::CustomFieldsChanged { changed_at, .. }
            | ConversationEvent::StatusChanged { changed_at, .. }
            | ConversationEvent::LabelsAdded { changed_at, .. }
            | ConversationEvent::LabelsRemoved { changed_at, .. }
            | ConversationEvent::MessageVisibilityChanged { changed_at, .. }
            | ConversationEvent::DeliveryStatusChanged { changed_at, .. } => *changed_at,
            ConversationEvent::ConversationStarred { starred_at } => *starred_at,
            ConversationEvent::ConversationUnstarred { unstarred_at } => *unstarred_at,
            ConversationEvent::ConversationAssigned { assigned_at, .. } => *assigned_at,
            ConversationEvent::ConversationUnassigned { unassigned_at, .. } => *unassigned_at,
            ConversationEvent::ConversationRead { read_at, .. } => *read_at,
            ConversationEvent::ConversationDeleted { deleted_at } => *deleted_at,
            ConversationEvent::MessageAdded { created_at, .. } => *created_at,
            ConversationEvent::MessageEdited { edited_at, .. } => *edited_at,
            ConversationEvent::ReactionAdded { reacted_at, .. } => *reacted_at,
            ConversationEvent::ReactionRemoved { removed_at, .. } => *removed_at,
        }
    }
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConversationOpened { .. } => "ConversationOpened",
            Self::SubjectChanged { .. } => "SubjectChanged",
            Self::PriorityChanged { .. } => "PriorityChanged",
            Self::CustomFieldsChanged { .. } => "CustomFieldsChanged",
            Self::ConversationStarred { .. } => "ConversationStarred",
            Self::ConversationUnstarred { .. } => "ConversationUnstarred",
            Self::StatusChanged { .. } => "StatusChanged",
            Self::ConversationAssigned { .. } => "ConversationAssigned",
            Self::ConversationUnassigned { .. } => "ConversationUnassigned",
            Self::LabelsAdded { .. } => "LabelsAdded",
            Self::LabelsRemoved { .. } => "LabelsRemoved",
            Self::ConversationRead { .. } => "ConversationRead",
            Self::ConversationDeleted { .. } => "ConversationDeleted",
            Self::MessageAdded { .. } => "MessageAdded",
            Self::MessageEdited { .. } => "MessageEdited",
            Self::MessageVisibilityChanged { .. } => "MessageVisibilityChanged",
            Self::ReactionAdded { .. } => "ReactionAdded",
            Self::ReactionRemoved { .. } => "ReactionRemoved",
            Self::DeliveryStatusChanged { .. } => "DeliveryStatusChanged",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
