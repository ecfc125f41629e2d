//! The rules a conversation's commands are decided by: each command's decision (`Conversation`'s
//! `handle_*`), the checks they share, and the errors that name the rule a refusal broke.

use super::*;

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

pub(super) const MAX_CUSTOM_FIELDS_BYTES: usize = 16 * 1024;

/// How a group message names a member it mentions: `mention://contact/<contact id>`, as the
/// help desk in the seeds writes it (it may carry `/<display name>` after the id).
pub const CONTACT_MENTION_PREFIX: &str = "mention://contact/";

/// Whether a mention is `@everyone` (also written `everyone`, `@all`).
pub(super) fn is_everyone(mention: &str) -> bool {
    matches!(mention.trim_start_matches('@').to_ascii_lowercase().as_str(), "everyone" | "all")
}

/// A group mention as a member's contact id: `mention://contact/<id>[/<name>]` or the bare id.
pub(super) fn mentioned_contact(mention: &str) -> Option<ContactId> {
    let id = mention.strip_prefix(CONTACT_MENTION_PREFIX).unwrap_or(mention);
    let id = id.split('/').next().unwrap_or(id);
    uuid::Uuid::parse_str(id).ok().map(ContactId)
}

/// A group message's mentions, normalized to `mention://contact/<id>` once each, in order: each
/// must name a member now; with `everyone`, every member but the inbox's own follows them.
pub(super) fn group_mentions(
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
pub(super) fn group_sender_may_send(
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

pub(super) fn check_custom_fields(fields: &Map<String, Value>) -> Result<(), FieldError> {
    let size = serde_json::to_vec(fields).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_CUSTOM_FIELDS_BYTES {
        return Err(FieldError::new(
            "custom_fields",
            format!("must serialize to at most {MAX_CUSTOM_FIELDS_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub(super) fn optional_id(field: &str, value: Option<&str>) -> Result<Option<String>, FieldError> {
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

    pub(super) fn require_live(&self) -> Result<ConversationId, ConversationError> {
        let id = self.id.ok_or(ConversationError::NotFound)?;
        if self.deleted {
            return Err(ConversationError::Deleted(id));
        }
        Ok(id)
    }

    /// Changes the message with this id, if there is one, and weighs it again.
    pub(super) fn change_message(&mut self, message_id: MessageId, change: impl FnOnce(&mut Message)) {
        if let Some(message) = self.message_index.get(&message_id).map(|&i| &mut self.messages[i]) {
            let before = message.heap_footprint();
            change(message);
            self.message_heap = self.message_heap.saturating_sub(before) + message.heap_footprint();
        }
    }

    pub(super) fn open(
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

    pub(super) fn update(
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

    pub(super) fn change_status(
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

    pub(super) fn assign(
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

    pub(super) fn change_labels(
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

    pub(super) fn add_message(
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
    pub(super) fn message_events(
        &self,
        added: ConversationEvent,
        now: DateTime<Utc>,
    ) -> Vec<ConversationEvent> {
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

    pub(super) fn update_message(
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

    pub(super) fn update_delivery(
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

    pub(super) fn apply_message_added(
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
