//! Participants named by contact id or by phone number, resolved to contacts of the tenant (a
//! new contact, with an id derived from tenant and number, for a number no contact has).

use axum::http::HeaderMap;
use serde::Deserialize;
use uuid::Uuid;

use colloquy_domain::contact::{ContactCommand, ContactError, NewContact};
use colloquy_domain::{Channel, ContactId};
use colloquy_infra::tokens::Principal;
use colloquy_infra::{CommandError, Intent};
use colloquy_projections::conversation_list;

use crate::extract::require;
use crate::problem::{command_failed, ApiError};
use crate::routes::origin;
use crate::state::AppState;

/// A participant named by contact id, or by E.164 phone number: the contact of this tenant with
/// that number (as the contact summaries know it), or else a new contact with that number, whose
/// id is derived from tenant and number so that concurrent requests create it once.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Participant {
    /// A contact id.
    Contact(Uuid),
    /// An E.164 phone number such as `+5511999990001`.
    Phone(String),
}

/// The id of the contact created for a number no contact has: a UUID v8 made of the first 16
/// bytes of SHA-256 over tenant and number, so that every request for that number names one contact.
///
/// The store's secret goes into the hash: without it any tenant could compute another's id for
/// a number and create a contact under it first, blocking that number for the other for good.
pub fn phone_contact_id(secret: &str, tenant: &str, phone: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("colloquy/phone-contact/{secret}/{tenant}/{phone}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Resolves participants to contact ids, creating contacts for numbers no contact has.
pub async fn resolve_participants(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    participants: Vec<Participant>,
) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::with_capacity(participants.len());
    for participant in participants {
        match participant {
            Participant::Contact(id) => ids.push(id),
            Participant::Phone(number) => {
                ids.push(contact_for_phone(state, principal, headers, &number).await?)
            }
        }
    }
    Ok(ids)
}

pub async fn contact_for_phone(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    number: &str,
) -> Result<Uuid, ApiError> {
    let phone = colloquy_domain::validate::phone("participants", number).map_err(ApiError::invalid)?;
    let tenant = principal.tenant.to_string();
    let known = conversation_list::contacts_with_phone(state.store(), &tenant, &phone).await?;
    if let Some(id) = known.iter().find_map(|id| Uuid::parse_str(id).ok()) {
        return Ok(id);
    }
    require(principal, "contacts:write")?;
    let contact_id = phone_contact_id(state.store().secret(), &tenant, &phone);
    let command = ContactCommand::CreateContact {
        contact_id: ContactId(contact_id),
        tenant_id: principal.tenant.clone(),
        contact: NewContact {
            first_name: phone.clone(),
            last_name: None,
            full_name: None,
            phone: Some(phone),
            email: None,
            preferred_channel: Some(Channel::Whatsapp),
            metadata: serde_json::Map::new(),
            labels: Vec::new(),
        },
    };
    let origin = origin(principal, headers)?;
    match state
        .contacts()
        .execute(&contact_id.to_string(), command, Intent::Create, None, &origin, |_, _| ())
        .await
    {
        // Created now, or by an earlier request for the same number.
        Ok(_) | Err(CommandError::Rejected(ContactError::AlreadyExists(_))) => Ok(contact_id),
        Err(other) => Err(command_failed(other, format!("contact {contact_id}"))),
    }
}
