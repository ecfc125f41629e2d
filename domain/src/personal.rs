//! Personal data: which values of an event are a contact's (their names, phone, e-mail,
//! metadata, and what they wrote and sent), so that the store can keep them under that contact's
//! key and erase them by destroying it (docs/adr/0011). The domain only names the values; how
//! they are sealed is the store's.

use cqrs_es::Aggregate;
use serde_json::{json, Value};

use crate::contact::{Contact, ContactEvent, ContactField};
use crate::conversation::{Conversation, ConversationEvent};
use crate::ids::ContactId;

/// What a required text field reads as once its contact is erased (an optional one reads as
/// `null`, an object as `{}`).
pub const ERASED: &str = "[erased]";

/// One value of an event that is a contact's personal data.
#[derive(Debug, Clone, PartialEq)]
pub struct Personal {
    /// Whose it is.
    pub subject: ContactId,
    /// Where it is in the stored payload (`{"<event_type>": {fields}}`), as a JSON pointer.
    pub pointer: String,
    /// What it reads as once the subject is erased.
    pub erased: Value,
}

impl Personal {
    fn new(subject: ContactId, pointer: String, erased: Value) -> Self {
        Self { subject, pointer, erased }
    }
}

/// An aggregate whose events may carry personal data.
pub trait PersonalData: Aggregate {
    /// The personal data in `event`, which `self` has just applied (so it knows, say, who sent
    /// the message an edit changes). Values that are `null` are left out by the store.
    fn personal_data(&self, _event: &Self::Event) -> Vec<Personal> {
        Vec::new()
    }

    /// The contact whose personal data `event` erases, if it does.
    fn erases(&self, _event: &Self::Event) -> Option<ContactId> {
        None
    }
}

impl PersonalData for Contact {
    fn personal_data(&self, event: &ContactEvent) -> Vec<Personal> {
        let Some(subject) = self.id else { return Vec::new() };
        let at = |pointer: String, erased: Value| Personal::new(subject, pointer, erased);
        match event {
            ContactEvent::ContactCreated { .. } => [
                ("first_name", json!(ERASED)),
                ("last_name", Value::Null),
                ("full_name", json!(ERASED)),
                ("phone", Value::Null),
                ("email", Value::Null),
                ("metadata", json!({})),
            ]
            .into_iter()
            .map(|(field, erased)| at(format!("/ContactCreated/{field}"), erased))
            .collect(),
            ContactEvent::ContactUpdated { changes, .. } => changes
                .iter()
                .enumerate()
                .filter_map(|(i, change)| {
                    let (name, erased) = match change {
                        ContactField::FirstName(_) => ("first_name", json!(ERASED)),
                        ContactField::FullName(_) => ("full_name", json!(ERASED)),
                        ContactField::LastName(_) => ("last_name", Value::Null),
                        ContactField::Phone(_) => ("phone", Value::Null),
                        ContactField::Email(_) => ("email", Value::Null),
                        ContactField::Metadata(_) => ("metadata", json!({})),
                        ContactField::PreferredChannel(_) | ContactField::Labels(_) => return None,
                    };
                    Some(at(format!("/ContactUpdated/changes/{i}/{name}"), erased))
                })
                .collect(),
            ContactEvent::ContactStatusChanged { .. } | ContactEvent::ContactErased { .. } => Vec::new(),
        }
    }

    fn erases(&self, event: &ContactEvent) -> Option<ContactId> {
        matches!(event, ContactEvent::ContactErased { .. }).then_some(self.id).flatten()
    }
}

impl PersonalData for Conversation {
    fn personal_data(&self, event: &ConversationEvent) -> Vec<Personal> {
        match event {
            ConversationEvent::MessageAdded { sender, content, .. } if sender.kind.is_incoming() => {
                let Some(subject) = self.sender_contact(sender.id.as_deref()) else { return Vec::new() };
                let base = "/MessageAdded/content";
                let mut values = vec![
                    Personal::new(subject, format!("{base}/text"), Value::Null),
                    Personal::new(subject, format!("{base}/email"), Value::Null),
                    Personal::new(subject, format!("{base}/location"), Value::Null),
                ];
                for i in 0..content.attachments.len() {
                    values.push(Personal::new(subject, format!("{base}/attachments/{i}/url"), json!(ERASED)));
                    values.push(Personal::new(subject, format!("{base}/attachments/{i}/name"), Value::Null));
                }
                values
            }
            ConversationEvent::MessageEdited { message_id, .. } => {
                let Some(message) = self.message(*message_id).filter(|m| m.sender.kind.is_incoming()) else {
                    return Vec::new();
                };
                let Some(subject) = self.sender_contact(message.sender.id.as_deref()) else {
                    return Vec::new();
                };
                vec![
                    Personal::new(subject, "/MessageEdited/text".into(), json!(ERASED)),
                    Personal::new(subject, "/MessageEdited/previous_text".into(), Value::Null),
                ]
            }
            _ => Vec::new(),
        }
    }
}

impl Conversation {
    /// The contact an incoming message of sender `id` is from: the member who wrote it in a
    /// group, else the conversation's contact.
    fn sender_contact(&self, id: Option<&str>) -> Option<ContactId> {
        id.and_then(|id| id.parse::<uuid::Uuid>().ok()).map(ContactId).or(self.contact_id)
    }
}

impl PersonalData for crate::group::Group {}
impl PersonalData for crate::sla::ConversationSla {}
impl<D: crate::definition::Definition> PersonalData for crate::definition::Defined<D> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erased_values_keep_each_field_readable_as_its_type() {
        // A required text reads as the marker, an optional one as null: both deserialize.
        let created = json!({"ContactCreated": {
            "contact_id": uuid::Uuid::nil(), "tenant_id": "acme", "first_name": ERASED, "last_name": null,
            "full_name": ERASED, "phone": null, "email": null, "preferred_channel": null, "metadata": {},
            "labels": ["vip"], "created_at": "2026-12-06T10:00:00Z"
        }});
        let event: ContactEvent = serde_json::from_value(created).expect("an erased event reads");
        assert!(matches!(event, ContactEvent::ContactCreated { first_name, .. } if first_name == ERASED));
    }
}
