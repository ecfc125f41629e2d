//! Versioned definitions: a tenant's settings that other rules read (a business calendar, an SLA
//! policy), each an aggregate whose every edit is a new numbered version. Edits never rewrite the
//! past: a version once recorded stays readable, so a timer started under version 2 can say so,
//! and a report can be recomputed under any version.
//!
//! One aggregate, [`Defined`], serves every kind; a kind is a [`Definition`] (its type name, its
//! event names and its own validation). Its events are `<Prefix>Created`, `<Prefix>Revised` and
//! `<Prefix>Deleted` (`CalendarRevised`, `SlaPolicyCreated`), each carrying the whole definition,
//! so a reader never folds partial edits.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::context::CommandContext;
use crate::footprint::{Footprint, PER_ALLOCATION};
use crate::ids::TenantId;
use crate::validate::FieldError;
use crate::{Snapshot, TenantOwned, EVENT_VERSION_1};

/// A kind of versioned definition.
pub trait Definition:
    fmt::Debug + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The aggregate type, as stored (`calendar`).
    const TYPE: &'static str;
    /// What a problem's detail calls one (`calendar`, `SLA policy`).
    const NOUN: &'static str;
    /// The events' name prefix (`Calendar` gives `CalendarCreated`).
    const EVENT_PREFIX: &'static str;

    /// What people call it.
    fn name(&self) -> &str;

    /// The definition with its texts normalised (trimmed, labels lowercased), or the refusal
    /// of the first field that breaks its kind's rules.
    fn validated(self) -> Result<Self, FieldError>;
}

/// One recorded version of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "D: Definition")]
pub struct Revision<D> {
    /// 1 for the first, one more for each edit.
    pub version: u32,
    /// The definition as of this version.
    pub definition: D,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A versioned definition's state: every version it has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "D: Definition")]
pub struct Defined<D> {
    /// Its id, once created.
    pub id: Option<Uuid>,
    /// The owning tenant, once created.
    pub tenant_id: Option<TenantId>,
    /// Every version, oldest first.
    pub revisions: Vec<Revision<D>>,
    /// Deleted (a tombstone): its versions stay readable, it takes no edit.
    pub deleted: bool,
}

impl<D> Default for Defined<D> {
    fn default() -> Self {
        Self { id: None, tenant_id: None, revisions: Vec::new(), deleted: false }
    }
}

impl<D: Definition> Defined<D> {
    /// The current version, once created.
    pub fn current(&self) -> Option<&Revision<D>> {
        self.revisions.last()
    }

    /// Version `version`, if it was recorded.
    pub fn revision(&self, version: u32) -> Option<&Revision<D>> {
        self.revisions.iter().find(|revision| revision.version == version)
    }
}

/// What may be asked of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionCommand<D> {
    /// Records its first version.
    Create {
        /// Its id, chosen by the caller.
        id: Uuid,
        /// The owning tenant.
        tenant_id: TenantId,
        /// The definition.
        definition: D,
    },
    /// Records a new version; one equal to the current records nothing.
    Revise {
        /// The whole definition after the edit.
        definition: D,
    },
    /// Deletes it.
    Delete,
}

/// Facts about a definition. Stored as `{"<Prefix><Variant>": {...}}`, like every other event.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionEvent<D> {
    /// Its first version was recorded.
    Created {
        /// Its id.
        id: Uuid,
        /// The owning tenant.
        tenant_id: TenantId,
        /// Always 1.
        version: u32,
        /// The definition.
        definition: D,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A new version was recorded.
    Revised {
        /// The new version's number.
        version: u32,
        /// The whole definition as of it.
        definition: D,
        /// When.
        revised_at: DateTime<Utc>,
    },
    /// It was deleted.
    Deleted {
        /// When.
        deleted_at: DateTime<Utc>,
    },
}

/// The serde shape of [`DefinitionEvent`], before its variant gets the kind's prefix.
#[derive(Serialize, Deserialize)]
#[serde(bound = "D: Definition")]
enum Body<D> {
    Created { id: Uuid, tenant_id: TenantId, version: u32, definition: D, created_at: DateTime<Utc> },
    Revised { version: u32, definition: D, revised_at: DateTime<Utc> },
    Deleted { deleted_at: DateTime<Utc> },
}

impl<D: Definition> Serialize for DefinitionEvent<D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let body = serde_json::to_value(Body::from(self.clone())).map_err(serde::ser::Error::custom)?;
        let (variant, fields) = body
            .as_object()
            .and_then(|object| object.iter().next())
            .ok_or_else(|| serde::ser::Error::custom("an event serialises as one variant"))?;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(&format!("{}{variant}", D::EVENT_PREFIX), fields)?;
        map.end()
    }
}

impl<'de, D: Definition> Deserialize<'de> for DefinitionEvent<D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut entries = object.into_iter();
        let (Some((name, fields)), None) = (entries.next(), entries.next()) else {
            return Err(serde::de::Error::custom("an event is an object with one key"));
        };
        let variant = name
            .strip_prefix(D::EVENT_PREFIX)
            .ok_or_else(|| serde::de::Error::custom(format!("{name} is not an event of a {}", D::NOUN)))?;
        let body: Body<D> = serde_json::from_value(serde_json::json!({ variant: fields }))
            .map_err(serde::de::Error::custom)?;
        Ok(body.into())
    }
}

impl<D> From<DefinitionEvent<D>> for Body<D> {
    fn from(event: DefinitionEvent<D>) -> Self {
        match event {
            DefinitionEvent::Created { id, tenant_id, version, definition, created_at } => {
                Body::Created { id, tenant_id, version, definition, created_at }
            }
            DefinitionEvent::Revised { version, definition, revised_at } => {
                Body::Revised { version, definition, revised_at }
            }
            DefinitionEvent::Deleted { deleted_at } => Body::Deleted { deleted_at },
        }
    }
}

impl<D> From<Body<D>> for DefinitionEvent<D> {
    fn from(body: Body<D>) -> Self {
        match body {
            Body::Created { id, tenant_id, version, definition, created_at } => {
                DefinitionEvent::Created { id, tenant_id, version, definition, created_at }
            }
            Body::Revised { version, definition, revised_at } => {
                DefinitionEvent::Revised { version, definition, revised_at }
            }
            Body::Deleted { deleted_at } => DefinitionEvent::Deleted { deleted_at },
        }
    }
}

impl<D: Definition> DomainEvent for DefinitionEvent<D> {
    fn event_type(&self) -> String {
        let variant = match self {
            Self::Created { .. } => "Created",
            Self::Revised { .. } => "Revised",
            Self::Deleted { .. } => "Deleted",
        };
        format!("{}{variant}", D::EVENT_PREFIX)
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

/// Why a definition command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    /// There is no such definition.
    #[error("not found")]
    NotFound,
    /// The id is taken.
    #[error("{0} already exists")]
    AlreadyExists(Uuid),
    /// It was deleted and takes no edit.
    #[error("{0} is deleted")]
    Deleted(Uuid),
    /// A field breaks its rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

impl<D: Definition> Aggregate for Defined<D> {
    const TYPE: &'static str = D::TYPE;
    type Command = DefinitionCommand<D>;
    type Event = DefinitionEvent<D>;
    type Error = DefinitionError;
    type Services = CommandContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        ctx: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = ctx.now;
        let event = match (command, self.id) {
            (DefinitionCommand::Create { id, tenant_id, definition }, None) => {
                let definition = definition.validated()?;
                Some(DefinitionEvent::Created { id, tenant_id, version: 1, definition, created_at: now })
            }
            (DefinitionCommand::Create { .. }, Some(id)) => return Err(DefinitionError::AlreadyExists(id)),
            (_, None) => return Err(DefinitionError::NotFound),
            (_, Some(id)) if self.deleted => return Err(DefinitionError::Deleted(id)),
            (DefinitionCommand::Revise { definition }, Some(_)) => {
                let definition = definition.validated()?;
                let current = self.current().ok_or(DefinitionError::NotFound)?;
                (current.definition != definition).then(|| DefinitionEvent::Revised {
                    version: current.version + 1,
                    definition,
                    revised_at: now,
                })
            }
            (DefinitionCommand::Delete, Some(_)) => Some(DefinitionEvent::Deleted { deleted_at: now }),
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DefinitionEvent::Created { id, tenant_id, version, definition, created_at } => {
                *self = Self {
                    id: Some(id),
                    tenant_id: Some(tenant_id),
                    revisions: vec![Revision { version, definition, recorded_at: created_at }],
                    deleted: false,
                };
            }
            DefinitionEvent::Revised { version, definition, revised_at } => {
                self.revisions.push(Revision { version, definition, recorded_at: revised_at });
            }
            DefinitionEvent::Deleted { .. } => self.deleted = true,
        }
    }
}

impl<D> TenantOwned for Defined<D> {
    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }
}

impl<D: Definition> Footprint for Defined<D> {
    /// Definitions are small and rarely loaded: their JSON length stands in for their heap.
    fn footprint(&self) -> usize {
        let json = serde_json::to_vec(&self.revisions).map_or(0, |bytes| bytes.len());
        size_of::<Self>() + 2 * json + PER_ALLOCATION * self.revisions.len()
    }
}

impl<D> Snapshot for Defined<D> {
    const SHAPE: u32 = 1;
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    use super::*;
    use crate::context::{Actor, ActorKind};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
    }

    impl Definition for Note {
        const TYPE: &'static str = "note";
        const NOUN: &'static str = "note";
        const EVENT_PREFIX: &'static str = "Note";

        fn name(&self) -> &str {
            &self.text
        }

        fn validated(self) -> Result<Self, FieldError> {
            if self.text.is_empty() {
                return Err(FieldError::new("text", "must not be empty"));
            }
            Ok(self)
        }
    }

    type NoteTest = TestFramework<Defined<Note>>;

    fn ctx() -> CommandContext {
        CommandContext::new(at(), Actor { kind: ActorKind::System, id: "test".into() })
    }

    fn at() -> DateTime<Utc> {
        "2026-12-05T10:00:00Z".parse().unwrap_or_default()
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn note(text: &str) -> Note {
        Note { text: text.into() }
    }

    fn created(text: &str) -> DefinitionEvent<Note> {
        DefinitionEvent::Created {
            id: id(),
            tenant_id: TenantId::parse("acme").unwrap_or_else(|_| unreachable!()),
            version: 1,
            definition: note(text),
            created_at: at(),
        }
    }

    #[test]
    fn an_edit_records_the_next_version_with_the_whole_definition() {
        NoteTest::with(ctx())
            .given(vec![created("a")])
            .when(DefinitionCommand::Revise { definition: note("b") })
            .then_expect_events(vec![DefinitionEvent::Revised {
                version: 2,
                definition: note("b"),
                revised_at: at(),
            }]);
    }

    #[test]
    fn an_edit_that_changes_nothing_records_nothing() {
        NoteTest::with(ctx())
            .given(vec![created("a")])
            .when(DefinitionCommand::Revise { definition: note("a") })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_invalid_definition_is_refused_naming_its_field() {
        NoteTest::with(ctx())
            .given_no_previous_events()
            .when(DefinitionCommand::Create {
                id: id(),
                tenant_id: TenantId::parse("acme").unwrap_or_else(|_| unreachable!()),
                definition: note(""),
            })
            .then_expect_error(DefinitionError::Invalid(FieldError::new("text", "must not be empty")));
    }

    #[test]
    fn a_deleted_definition_refuses_edits_and_keeps_its_versions() {
        NoteTest::with(ctx())
            .given(vec![created("a"), DefinitionEvent::Deleted { deleted_at: at() }])
            .when(DefinitionCommand::Revise { definition: note("b") })
            .then_expect_error(DefinitionError::Deleted(id()));
        let mut state = Defined::<Note>::default();
        state.apply(created("a"));
        state.apply(DefinitionEvent::Deleted { deleted_at: at() });
        assert_eq!(state.revision(1).map(|r| r.definition.text.as_str()), Some("a"));
    }

    #[test]
    fn events_are_stored_under_the_kinds_own_names_and_read_back() {
        let event = created("a");
        let stored = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(stored["NoteCreated"]["definition"], json!({"text": "a"}));
        assert_eq!(event.event_type(), "NoteCreated");
        let read: DefinitionEvent<Note> = serde_json::from_value(stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, event);
        let foreign = json!({"CalendarCreated": {}});
        assert!(serde_json::from_value::<DefinitionEvent<Note>>(foreign).is_err());
    }
}
