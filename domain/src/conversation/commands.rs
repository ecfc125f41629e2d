//! What can be asked of a conversation: its commands and the inputs they carry.

use super::*;

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
