//! Colloquy's write model: the Contact, Conversation and Group aggregates, the SLA clocks kept
//! beside each conversation and the tenant's versioned definitions (business calendars, SLA
//! policies); their commands, events and the typed refusals that say which rule a command broke.
//!
//! Nothing here does I/O or reads a clock: time and the acting principal come in through
//! [`CommandContext`], ids are chosen by the caller, and everything that needs the outside world
//! (a per-tenant conversation number, whether a contact exists) is resolved before the command is
//! built.

pub mod calendar;
pub mod channel;
pub mod compensate;
pub mod contact;
pub mod context;
pub mod conversation;
pub mod definition;
pub mod footprint;
pub mod group;
pub mod hours;
pub mod ids;
pub mod metadata;
pub mod personal;
pub mod report;
pub mod sla;
pub mod validate;
pub mod webhook;
pub mod whole;

pub use channel::Channel;
pub use contact::{Contact, ContactCommand, ContactError, ContactEvent};
pub use context::{Actor, ActorKind, CommandContext};
pub use conversation::{Conversation, ConversationCommand, ConversationError, ConversationEvent};
pub use footprint::Footprint;
pub use group::{Group, GroupCommand, GroupError, GroupEvent, GroupId};
pub use hours::{BusinessHours, DatedHours, HoursError, Interval, LocalTime, WeeklyInterval};
pub use ids::{ContactId, ConversationId, MessageId, TenantId};
pub use metadata::EventMetadata;

/// The version every event shape starts at. Bump per event when its stored shape changes, and
/// add an upcaster in infra/ for the old one.
pub const EVENT_VERSION_1: &str = "1.0";

/// What the store needs to know of every aggregate beyond cqrs-es's trait: which tenant owns a
/// stream, so that no command or read crosses tenants.
pub trait TenantOwned {
    /// The owning tenant, or `None` while the aggregate has no events yet.
    fn tenant(&self) -> Option<&TenantId>;
}

/// An aggregate whose state the store may keep as a snapshot (its serde form, which cqrs-es's
/// `Aggregate` requires), so that loading it reads the snapshot and the events after it instead
/// of its whole history.
pub trait Snapshot {
    /// The snapshot's shape. Bump it whenever the state's fields change, or how an event
    /// changes the state (an upcaster included): a snapshot of another shape is passed over and
    /// the events are read instead.
    const SHAPE: u32;

    /// Rebuilds what the serde form leaves out, once a snapshot has been read.
    fn restored(&mut self) {}
}

impl Snapshot for Contact {
    const SHAPE: u32 = 2;
}

impl Snapshot for Group {
    const SHAPE: u32 = 1;
}

impl Snapshot for Conversation {
    const SHAPE: u32 = 1;

    /// The message index and the messages' weight are not serialised.
    fn restored(&mut self) {
        self.reindex();
    }
}
