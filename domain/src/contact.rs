//! The Contact aggregate: the customer behind conversations, with their names, E.164 phone,
//! e-mail, preferred channel, free-form metadata, labels and status.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};

use crate::channel::Channel;
use crate::context::CommandContext;
use crate::footprint::{self, Footprint};
use crate::ids::{ContactId, TenantId};
use crate::validate::{self, FieldError, MAX_SHORT_TEXT};
use crate::{TenantOwned, EVENT_VERSION_1};

/// Whether a contact is in use. `Deleted` is final: a deleted contact refuses every command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// In use.
    #[default]
    Active,
    /// Kept but not to be contacted.
    Inactive,
    /// Removed; kept only as history.
    Deleted,
}

/// A contact's profile as given when it is created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewContact {
    /// Given name; required.
    pub first_name: String,
    /// Family name.
    pub last_name: Option<String>,
    /// Display name; when absent, first and last name joined.
    pub full_name: Option<String>,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// The channel the contact prefers to be reached on.
    pub preferred_channel: Option<Channel>,
    /// Free-form JSON object the integrator owns.
    pub metadata: Map<String, Value>,
    /// Labels, lowercased and deduplicated.
    pub labels: Vec<String>,
}

/// A partial update: `None` keeps a field, `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactPatch {
    /// New given name.
    pub first_name: Option<String>,
    /// New family name, or `Some(None)` to clear it.
    pub last_name: Option<Option<String>>,
    /// New display name, or `Some(None)` to derive it from the names again.
    pub full_name: Option<Option<String>>,
    /// New phone, or `Some(None)` to clear it.
    pub phone: Option<Option<String>>,
    /// New e-mail, or `Some(None)` to clear it.
    pub email: Option<Option<String>>,
    /// New preferred channel, or `Some(None)` to clear it.
    pub preferred_channel: Option<Option<Channel>>,
    /// Merged into the metadata object key by key; a `null` value removes the key (RFC 7396).
    pub metadata: Option<Map<String, Value>>,
    /// Replaces the labels.
    pub labels: Option<Vec<String>>,
    /// New status; recorded after the field changes, in the same commit.
    pub status: Option<ContactStatus>,
}

/// Commands a Contact accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactCommand {
    /// Creates the contact in `tenant_id`.
    CreateContact {
        /// The new contact's id.
        contact_id: ContactId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// The profile.
        contact: NewContact,
    },
    /// Changes some fields of the profile.
    UpdateContact(ContactPatch),
    /// Marks the contact active, inactive or deleted.
    ChangeContactStatus {
        /// The new status.
        status: ContactStatus,
    },
    /// Erases the contact's personal data (the right to erasure): the store destroys the key
    /// it is kept under (docs/adr/0011). Final; a second erase changes nothing.
    EraseContact,
}

/// One changed field of a contact, carrying its new value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactField {
    /// The given name is now this.
    FirstName(String),
    /// The family name is now this (or none).
    LastName(Option<String>),
    /// The display name is now this.
    FullName(String),
    /// The phone is now this (or none).
    Phone(Option<String>),
    /// The e-mail is now this (or none).
    Email(Option<String>),
    /// The preferred channel is now this (or none).
    PreferredChannel(Option<Channel>),
    /// The whole metadata object after the merge.
    Metadata(Map<String, Value>),
    /// The whole label set after the change.
    Labels(Vec<String>),
}

/// Facts about a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContactEvent {
    /// The contact was created with this profile.
    ContactCreated {
        /// Its id.
        contact_id: ContactId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// Given name.
        first_name: String,
        /// Family name.
        last_name: Option<String>,
        /// Display name.
        full_name: String,
        /// E.164 phone.
        phone: Option<String>,
        /// E-mail.
        email: Option<String>,
        /// Preferred channel.
        preferred_channel: Option<Channel>,
        /// Metadata object.
        metadata: Map<String, Value>,
        /// Labels.
        labels: Vec<String>,
        /// When.
        created_at: chrono::DateTime<chrono::Utc>,
    },
    /// Some fields changed; each carries its new value.
    ContactUpdated {
        /// The changed fields, in a fixed order.
        changes: Vec<ContactField>,
        /// When.
        updated_at: chrono::DateTime<chrono::Utc>,
    },
    /// The status changed.
    ContactStatusChanged {
        /// The status before.
        from: ContactStatus,
        /// The status now.
        to: ContactStatus,
        /// When.
        changed_at: chrono::DateTime<chrono::Utc>,
    },
    /// The contact's personal data was erased: the key it was kept under is destroyed in the
    /// same commit, and every earlier event reads its values as erased.
    ContactErased {
        /// When.
        erased_at: chrono::DateTime<chrono::Utc>,
    },
}

impl DomainEvent for ContactEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ContactCreated { .. } => "ContactCreated",
            Self::ContactUpdated { .. } => "ContactUpdated",
            Self::ContactStatusChanged { .. } => "ContactStatusChanged",
            Self::ContactErased { .. } => "ContactErased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

/// Why a Contact refused a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContactError {
    /// Create on an id that is taken.
    #[error("contact {0} already exists")]
    AlreadyExists(ContactId),
    /// A command other than create on an id with no contact.
    #[error("contact does not exist")]
    NotFound,
    /// Any command on a deleted contact.
    #[error("contact {0} is deleted")]
    Deleted(ContactId),
    /// Any command but erase on an erased contact.
    #[error("contact {0} was erased")]
    Erased(ContactId),
    /// A field breaks its rule.
    #[error("invalid {0}")]
    Invalid(#[from] FieldError),
}

/// The Contact aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Its id, once created.
    pub id: Option<ContactId>,
    /// The owning tenant, once created.
    pub tenant_id: Option<TenantId>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: Option<String>,
    /// Display name.
    pub full_name: String,
    /// E.164 phone.
    pub phone: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Preferred channel.
    pub preferred_channel: Option<Channel>,
    /// Metadata object.
    pub metadata: Map<String, Value>,
    /// Labels.
    pub labels: Vec<String>,
    /// Status.
    pub status: ContactStatus,
    /// Creation time.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Time of the last change.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When its personal data was erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn derived_full_name(first_name: &str, last_name: Option<&str>) -> String {
    match last_name {
        Some(last) => format!("{first_name} {last}"),
        None => first_name.to_owned(),
    }
}

fn optional_phone(value: Option<&str>) -> Result<Option<String>, FieldError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => validate::phone("phone", v).map(Some),
    }
}

fn optional_email(value: Option<&str>) -> Result<Option<String>, FieldError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => validate::email("email", v).map(Some),
    }
}

const MAX_METADATA_BYTES: usize = 16 * 1024;

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), FieldError> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must serialize to at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl Contact {
    fn require_live(&self) -> Result<ContactId, ContactError> {
        let id = self.id.ok_or(ContactError::NotFound)?;
        if self.erased_at.is_some() {
            return Err(ContactError::Erased(id));
        }
        if self.status == ContactStatus::Deleted {
            return Err(ContactError::Deleted(id));
        }
        Ok(id)
    }

    fn create(
        &self,
        contact_id: ContactId,
        tenant_id: TenantId,
        contact: NewContact,
        ctx: &CommandContext,
    ) -> Result<ContactEvent, ContactError> {
        if let Some(existing) = self.id {
            return Err(ContactError::AlreadyExists(existing));
        }
        let first_name = validate::text("first_name", &contact.first_name, MAX_SHORT_TEXT, true)?;
        let last_name = validate::optional_text("last_name", contact.last_name.as_deref(), MAX_SHORT_TEXT)?;
        let full_name = validate::optional_text("full_name", contact.full_name.as_deref(), MAX_SHORT_TEXT)?
            .unwrap_or_else(|| derived_full_name(&first_name, last_name.as_deref()));
        check_metadata(&contact.metadata)?;
        Ok(ContactEvent::ContactCreated {
            contact_id,
            tenant_id,
            first_name,
            last_name,
            full_name,
            phone: optional_phone(contact.phone.as_deref())?,
            email: optional_email(contact.email.as_deref())?,
            preferred_channel: contact.preferred_channel,
            metadata: contact.metadata,
            labels: validate::labels("labels", &contact.labels)?,
            created_at: ctx.now,
        })
    }

    /// Works out which fields a patch really changes, validating each.
    fn changes(&self, patch: ContactPatch) -> Result<Vec<ContactField>, ContactError> {
        let mut changes = Vec::new();
        let first_name = match patch.first_name {
            Some(v) => validate::text("first_name", &v, MAX_SHORT_TEXT, true)?,
            None => self.first_name.clone(),
        };
        let last_name = match patch.last_name {
            Some(v) => validate::optional_text("last_name", v.as_deref(), MAX_SHORT_TEXT)?,
            None => self.last_name.clone(),
        };
        // The display name follows the names unless it is set explicitly in the same patch.
        let names_changed = first_name != self.first_name || last_name != self.last_name;
        let full_name = match patch.full_name {
            Some(Some(v)) => validate::text("full_name", &v, MAX_SHORT_TEXT, true)?,
            Some(None) => derived_full_name(&first_name, last_name.as_deref()),
            None if names_changed => derived_full_name(&first_name, last_name.as_deref()),
            None => self.full_name.clone(),
        };
        if first_name != self.first_name {
            changes.push(ContactField::FirstName(first_name));
        }
        if last_name != self.last_name {
            changes.push(ContactField::LastName(last_name));
        }
        if full_name != self.full_name {
            changes.push(ContactField::FullName(full_name));
        }
        if let Some(phone) = patch.phone {
            let phone = optional_phone(phone.as_deref())?;
            if phone != self.phone {
                changes.push(ContactField::Phone(phone));
            }
        }
        if let Some(email) = patch.email {
            let email = optional_email(email.as_deref())?;
            if email != self.email {
                changes.push(ContactField::Email(email));
            }
        }
        if let Some(channel) = patch.preferred_channel {
            if channel != self.preferred_channel {
                changes.push(ContactField::PreferredChannel(channel));
            }
        }
        if let Some(merge) = patch.metadata {
            let mut metadata = self.metadata.clone();
            for (key, value) in merge {
                if value.is_null() {
                    metadata.remove(&key);
                } else {
                    metadata.insert(key, value);
                }
            }
            check_metadata(&metadata)?;
            if metadata != self.metadata {
                changes.push(ContactField::Metadata(metadata));
            }
        }
        if let Some(labels) = patch.labels {
            let labels = validate::labels("labels", &labels)?;
            if labels != self.labels {
                changes.push(ContactField::Labels(labels));
            }
        }
        Ok(changes)
    }
}

impl TenantOwned for Contact {
    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }
}

impl Footprint for Contact {
    fn footprint(&self) -> usize {
        size_of::<Self>()
            + footprint::string(&self.first_name)
            + footprint::string(&self.full_name)
            + footprint::optional_strings([&self.last_name, &self.phone, &self.email])
            + footprint::json_object(&self.metadata)
            + footprint::vec(&self.labels, self.labels.capacity(), |label| footprint::string(label))
    }
}

impl Aggregate for Contact {
    const TYPE: &'static str = "contact";
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = ContactError;
    type Services = CommandContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        ctx: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ContactCommand::CreateContact { contact_id, tenant_id, contact } => {
                let event = self.create(contact_id, tenant_id, contact, ctx)?;
                sink.write(event, self).await;
            }
            ContactCommand::UpdateContact(patch) => {
                self.require_live()?;
                let status = patch.status.filter(|s| *s != self.status);
                let changes = self.changes(patch)?;
                // Both events are decided before either is written, so a refusal leaves the
                // aggregate untouched.
                let from = self.status;
                if !changes.is_empty() {
                    let event = ContactEvent::ContactUpdated { changes, updated_at: ctx.now };
                    sink.write(event, self).await;
                }
                if let Some(to) = status {
                    let event = ContactEvent::ContactStatusChanged { from, to, changed_at: ctx.now };
                    sink.write(event, self).await;
                }
            }
            ContactCommand::ChangeContactStatus { status } => {
                self.require_live()?;
                if status != self.status {
                    let event = ContactEvent::ContactStatusChanged {
                        from: self.status,
                        to: status,
                        changed_at: ctx.now,
                    };
                    sink.write(event, self).await;
                }
            }
            ContactCommand::EraseContact => {
                // A deleted contact may be erased too; an erased one is left as it is.
                self.id.ok_or(ContactError::NotFound)?;
                if self.erased_at.is_none() {
                    sink.write(ContactEvent::ContactErased { erased_at: ctx.now }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ContactEvent::ContactCreated {
                contact_id,
                tenant_id,
                first_name,
                last_name,
                full_name,
                phone,
                email,
                preferred_channel,
                metadata,
                labels,
                created_at,
            } => {
                *self = Contact {
                    id: Some(contact_id),
                    tenant_id: Some(tenant_id),
                    first_name,
                    last_name,
                    full_name,
                    phone,
                    email,
                    preferred_channel,
                    metadata,
                    labels,
                    status: ContactStatus::Active,
                    created_at: Some(created_at),
                    updated_at: Some(created_at),
                    erased_at: None,
                };
            }
            ContactEvent::ContactUpdated { changes, updated_at } => {
                for change in changes {
                    match change {
                        ContactField::FirstName(v) => self.first_name = v,
                        ContactField::LastName(v) => self.last_name = v,
                        ContactField::FullName(v) => self.full_name = v,
                        ContactField::Phone(v) => self.phone = v,
                        ContactField::Email(v) => self.email = v,
                        ContactField::PreferredChannel(v) => self.preferred_channel = v,
                        ContactField::Metadata(v) => self.metadata = v,
                        ContactField::Labels(v) => self.labels = v,
                    }
                }
                self.updated_at = Some(updated_at);
            }
            ContactEvent::ContactStatusChanged { to, changed_at, .. } => {
                self.status = to;
                self.updated_at = Some(changed_at);
            }
            ContactEvent::ContactErased { erased_at } => {
                // What the store reads for the erased values, so a cached contact shows what one
                // read afresh does.
                self.first_name = crate::personal::ERASED.to_owned();
                self.full_name = crate::personal::ERASED.to_owned();
                (self.last_name, self.phone, self.email) = (None, None, None);
                self.metadata = Map::new();
                self.erased_at = Some(erased_at);
                self.updated_at = Some(erased_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use cqrs_es::test::TestFramework;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::context::{Actor, ActorKind};

    type ContactTest = TestFramework<Contact>;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time")
    }

    fn services() -> CommandContext {
        CommandContext::new(now(), Actor { kind: ActorKind::Token, id: "test".into() })
    }

    fn contact_id() -> ContactId {
        ContactId(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0001))
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").expect("valid tenant")
    }

    fn ann() -> NewContact {
        NewContact {
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            phone: Some("+1 415 555 0123".into()),
            email: Some("ann@Example.com".into()),
            preferred_channel: Some(Channel::Whatsapp),
            metadata: json!({"tier": "gold"}).as_object().cloned().unwrap_or_default(),
            labels: vec!["VIP".into()],
            ..NewContact::default()
        }
    }

    fn created() -> ContactEvent {
        ContactEvent::ContactCreated {
            contact_id: contact_id(),
            tenant_id: tenant(),
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            full_name: "Ann Lee".into(),
            phone: Some("+14155550123".into()),
            email: Some("ann@example.com".into()),
            preferred_channel: Some(Channel::Whatsapp),
            metadata: json!({"tier": "gold"}).as_object().cloned().unwrap_or_default(),
            labels: vec!["vip".into()],
            created_at: now(),
        }
    }

    fn deleted() -> ContactEvent {
        ContactEvent::ContactStatusChanged {
            from: ContactStatus::Active,
            to: ContactStatus::Deleted,
            changed_at: now(),
        }
    }

    fn create(contact: NewContact) -> ContactCommand {
        ContactCommand::CreateContact { contact_id: contact_id(), tenant_id: tenant(), contact }
    }

    #[test]
    fn creating_a_contact_normalises_phone_email_and_labels_and_derives_the_full_name() {
        ContactTest::with(services())
            .given_no_previous_events()
            .when(create(ann()))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_contact_cannot_be_created_twice() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(create(ann()))
            .then_expect_error(ContactError::AlreadyExists(contact_id()));
    }

    #[test]
    fn a_contact_without_a_first_name_is_refused() {
        ContactTest::with(services())
            .given_no_previous_events()
            .when(create(NewContact { first_name: "  ".into(), ..ann() }))
            .then_expect_error(ContactError::Invalid(FieldError::new("first_name", "must not be empty")));
    }

    #[test]
    fn a_phone_number_that_is_not_e164_is_refused_with_the_field_named() {
        let result = ContactTest::with(services())
            .given_no_previous_events()
            .when(create(NewContact { phone: Some("0415 555 0123".into()), ..ann() }))
            .inspect_result();
        match result {
            Err(ContactError::Invalid(error)) => assert_eq!(error.field, "phone"),
            other => panic!("expected an invalid phone, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_email_is_refused_with_the_field_named() {
        let result = ContactTest::with(services())
            .given_no_previous_events()
            .when(create(NewContact { email: Some("ann-at-example".into()), ..ann() }))
            .inspect_result();
        match result {
            Err(ContactError::Invalid(error)) => assert_eq!(error.field, "email"),
            other => panic!("expected an invalid email, got {other:?}"),
        }
    }

    #[test]
    fn metadata_larger_than_the_limit_is_refused() {
        let big = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        let result = ContactTest::with(services())
            .given_no_previous_events()
            .when(create(NewContact { metadata: big.as_object().cloned().unwrap_or_default(), ..ann() }))
            .inspect_result();
        assert!(matches!(result, Err(ContactError::Invalid(e)) if e.field == "metadata"));
    }

    #[test]
    fn changing_the_last_name_records_it_and_the_derived_full_name() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                last_name: Some(Some("Park".into())),
                ..ContactPatch::default()
            }))
            .then_expect_events(vec![ContactEvent::ContactUpdated {
                changes: vec![
                    ContactField::LastName(Some("Park".into())),
                    ContactField::FullName("Ann Park".into()),
                ],
                updated_at: now(),
            }]);
    }

    #[test]
    fn metadata_is_merged_key_by_key_and_null_removes_a_key() {
        let merge = json!({"tier": null, "plan": "pro"}).as_object().cloned().unwrap_or_default();
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                metadata: Some(merge),
                phone: Some(None),
                ..ContactPatch::default()
            }))
            .then_expect_events(vec![ContactEvent::ContactUpdated {
                changes: vec![
                    ContactField::Phone(None),
                    ContactField::Metadata(json!({"plan": "pro"}).as_object().cloned().unwrap_or_default()),
                ],
                updated_at: now(),
            }]);
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                first_name: Some("Ann".into()),
                email: Some(Some("ann@EXAMPLE.com".into())),
                ..ContactPatch::default()
            }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_patch_can_change_fields_and_status_in_one_commit() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                email: Some(None),
                status: Some(ContactStatus::Inactive),
                ..ContactPatch::default()
            }))
            .then_expect_events(vec![
                ContactEvent::ContactUpdated { changes: vec![ContactField::Email(None)], updated_at: now() },
                ContactEvent::ContactStatusChanged {
                    from: ContactStatus::Active,
                    to: ContactStatus::Inactive,
                    changed_at: now(),
                },
            ]);
    }

    #[test]
    fn an_update_with_an_invalid_phone_is_refused() {
        let result = ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                phone: Some(Some("call me".into())),
                ..ContactPatch::default()
            }))
            .inspect_result();
        assert!(matches!(result, Err(ContactError::Invalid(e)) if e.field == "phone"));
    }

    #[test]
    fn updating_a_contact_that_does_not_exist_is_refused() {
        ContactTest::with(services())
            .given_no_previous_events()
            .when(ContactCommand::UpdateContact(ContactPatch::default()))
            .then_expect_error(ContactError::NotFound);
    }

    #[test]
    fn a_contact_can_be_made_inactive() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::ChangeContactStatus { status: ContactStatus::Inactive })
            .then_expect_events(vec![ContactEvent::ContactStatusChanged {
                from: ContactStatus::Active,
                to: ContactStatus::Inactive,
                changed_at: now(),
            }]);
    }

    #[test]
    fn setting_the_status_it_already_has_records_nothing() {
        ContactTest::with(services())
            .given(vec![created()])
            .when(ContactCommand::ChangeContactStatus { status: ContactStatus::Active })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_deleted_contact_refuses_updates_and_status_changes() {
        ContactTest::with(services())
            .given(vec![created(), deleted()])
            .when(ContactCommand::UpdateContact(ContactPatch {
                first_name: Some("Bo".into()),
                ..ContactPatch::default()
            }))
            .then_expect_error(ContactError::Deleted(contact_id()));
        ContactTest::with(services())
            .given(vec![created(), deleted()])
            .when(ContactCommand::ChangeContactStatus { status: ContactStatus::Active })
            .then_expect_error(ContactError::Deleted(contact_id()));
    }

    #[test]
    fn erasing_a_contact_records_it_once_and_it_then_refuses_changes() {
        let erased = ContactEvent::ContactErased { erased_at: now() };
        ContactTest::with(services())
            .given(vec![created(), deleted()])
            .when(ContactCommand::EraseContact)
            .then_expect_events(vec![erased.clone()]);
        ContactTest::with(services())
            .given(vec![created(), erased.clone()])
            .when(ContactCommand::EraseContact)
            .then_expect_events(vec![]);
        ContactTest::with(services())
            .given(vec![created(), erased.clone()])
            .when(ContactCommand::ChangeContactStatus { status: ContactStatus::Inactive })
            .then_expect_error(ContactError::Erased(contact_id()));
        ContactTest::with(services())
            .given_no_previous_events()
            .when(ContactCommand::EraseContact)
            .then_expect_error(ContactError::NotFound);
        let mut contact = Contact::default();
        contact.apply(created());
        contact.apply(erased);
        assert_eq!((contact.full_name.as_str(), contact.email.as_deref()), (crate::personal::ERASED, None));
        assert!(contact.metadata.is_empty());
        assert_eq!(contact.labels, ["vip"], "labels are the tenant's, not personal data");
    }

    #[test]
    fn applying_events_builds_the_state_a_reader_sees() {
        let mut contact = Contact::default();
        contact.apply(created());
        contact.apply(deleted());
        assert_eq!(contact.full_name, "Ann Lee");
        assert_eq!(contact.phone.as_deref(), Some("+14155550123"));
        assert_eq!(contact.status, ContactStatus::Deleted);
        assert_eq!(contact.tenant(), Some(&tenant()));
    }
}
