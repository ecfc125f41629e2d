//! The peer's own minimal aggregates (a contact; a conversation that opens, takes messages, is
//! assigned, changes status and gets labels) and its inbox view, written the plain cqrs-es way:
//! the clock is read in `handle`, no metadata, no versioned upcasting.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, View};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contact {
    created: bool,
}

#[derive(Debug)]
pub enum ContactCommand {
    Create { first_name: String, phone: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContactEvent {
    ContactCreated { first_name: String, phone: String, created_at: DateTime<Utc> },
}

impl DomainEvent for ContactEvent {
    fn event_type(&self) -> String {
        "ContactCreated".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl Aggregate for Contact {
    const TYPE: &'static str = "contact";
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ContactCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ConversationError> {
        let ContactCommand::Create { first_name, phone } = command;
        if self.created {
            return Err(ConversationError::AlreadyExists);
        }
        sink.write(ContactEvent::ContactCreated { first_name, phone, created_at: Utc::now() }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ContactEvent) {
        match event {
            ContactEvent::ContactCreated { .. } => self.created = true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Open,
    Pending,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Conversation {
    opened: bool,
    status: Status,
    assignee_id: Option<String>,
    labels: BTreeSet<String>,
}

#[derive(Debug)]
pub enum ConversationCommand {
    Open { contact_id: String, channel: String, inbox_id: Option<String> },
    AddMessage { message_id: String, sender: Sender, text: String },
    Assign { assignee_id: String },
    ChangeStatus { status: Status },
    AddLabels { labels: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationOpened {
        contact_id: String,
        channel: String,
        inbox_id: Option<String>,
        opened_at: DateTime<Utc>,
    },
    MessageAdded {
        message_id: String,
        sender: Sender,
        text: String,
        added_at: DateTime<Utc>,
    },
    ConversationAssigned {
        assignee_id: String,
        assigned_at: DateTime<Utc>,
    },
    StatusChanged {
        from: Status,
        to: Status,
        changed_at: DateTime<Utc>,
    },
    LabelAdded {
        label: String,
    },
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConversationOpened { .. } => "ConversationOpened",
            Self::MessageAdded { .. } => "MessageAdded",
            Self::ConversationAssigned { .. } => "ConversationAssigned",
            Self::StatusChanged { .. } => "StatusChanged",
            Self::LabelAdded { .. } => "LabelAdded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConversationError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("the conversation already has this status")]
    SameStatus,
    #[error("text must not be empty")]
    EmptyText,
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ConversationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ConversationError> {
        let now = Utc::now();
        if let ConversationCommand::Open { contact_id, channel, inbox_id } = command {
            if self.opened {
                return Err(ConversationError::AlreadyExists);
            }
            let event =
                ConversationEvent::ConversationOpened { contact_id, channel, inbox_id, opened_at: now };
            sink.write(event, self).await;
            return Ok(());
        }
        if !self.opened {
            return Err(ConversationError::NotFound);
        }
        match command {
            ConversationCommand::Open { .. } => unreachable!("handled above"),
            ConversationCommand::AddMessage { message_id, sender, text } => {
                if text.trim().is_empty() {
                    return Err(ConversationError::EmptyText);
                }
                sink.write(ConversationEvent::MessageAdded { message_id, sender, text, added_at: now }, self)
                    .await;
            }
            ConversationCommand::Assign { assignee_id } => {
                // Assigning the current assignee again changes nothing, as in Colloquy.
                if self.assignee_id.as_ref() != Some(&assignee_id) {
                    sink.write(
                        ConversationEvent::ConversationAssigned { assignee_id, assigned_at: now },
                        self,
                    )
                    .await;
                }
            }
            ConversationCommand::ChangeStatus { status } => {
                if status == self.status {
                    return Err(ConversationError::SameStatus);
                }
                let event =
                    ConversationEvent::StatusChanged { from: self.status, to: status, changed_at: now };
                sink.write(event, self).await;
            }
            ConversationCommand::AddLabels { labels } => {
                let new: BTreeSet<String> = labels.into_iter().filter(|l| !self.labels.contains(l)).collect();
                for label in new {
                    sink.write(ConversationEvent::LabelAdded { label }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        match event {
            ConversationEvent::ConversationOpened { .. } => self.opened = true,
            ConversationEvent::MessageAdded { .. } => {}
            ConversationEvent::ConversationAssigned { assignee_id, .. } => {
                self.assignee_id = Some(assignee_id)
            }
            ConversationEvent::StatusChanged { to, .. } => self.status = to,
            ConversationEvent::LabelAdded { label } => {
                self.labels.insert(label);
            }
        }
    }
}

/// The inbox-like view: one row per conversation with its status, assignee, labels and last
/// message, kept by a `GenericQuery` after each commit.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InboxView {
    pub contact_id: String,
    pub channel: String,
    pub status: Status,
    pub assignee_id: Option<String>,
    pub labels: BTreeSet<String>,
    pub last_message: Option<String>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub messages: u64,
}

impl View<Conversation> for InboxView {
    fn update(&mut self, event: &EventEnvelope<Conversation>) {
        match &event.payload {
            ConversationEvent::ConversationOpened { contact_id, channel, opened_at, .. } => {
                self.contact_id.clone_from(contact_id);
                self.channel.clone_from(channel);
                self.last_activity_at = Some(*opened_at);
            }
            ConversationEvent::MessageAdded { text, added_at, .. } => {
                self.last_message = Some(text.chars().take(140).collect());
                self.last_activity_at = Some(*added_at);
                self.messages += 1;
            }
            ConversationEvent::ConversationAssigned { assignee_id, .. } => {
                self.assignee_id = Some(assignee_id.clone());
            }
            ConversationEvent::StatusChanged { to, .. } => self.status = *to,
            ConversationEvent::LabelAdded { label } => {
                self.labels.insert(label.clone());
            }
        }
    }
}
