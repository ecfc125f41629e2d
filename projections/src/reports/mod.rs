//! The `reports` read model: every fact of the reports' rules ([`colloquy_domain::report`])
//! derived from the log, with each conversation's state as the rules read it and the business
//! calendars that time the facts. One projection per definition version ([`Reports`]), each
//! with its own checkpoint and rows, so a changed definition is built from position 0 beside
//! the current one (docs/adr/0009). Its queries are in [`query`].

pub mod cells;
pub mod conversations;
pub mod figures;
pub mod query;
pub mod rollups;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use colloquy_domain::calendar::{self, Calendar, CalendarVersion};
use colloquy_domain::definition::DefinitionEvent;
use colloquy_domain::report::{Fact, ReportConversation, DEFINITIONS};
use colloquy_domain::sla::SlaEvent;
use colloquy_domain::{BusinessHours, ConversationEvent};
use colloquy_infra::event::Metadata;
use colloquy_infra::StoredEvent;

use crate::runtime::{Projection, ProjectionError, Tx};

/// The facts' table.
pub const FACTS_TABLE: &str = "report_facts";
/// Each conversation's state.
pub const CONVERSATIONS_TABLE: &str = "report_conversations";
/// The calendars as of the projection's position.
pub const CALENDARS_TABLE: &str = "report_calendars";

/// The definition versions kept, with their projections' names: the last is the newest.
pub const VERSIONS: [(u32, &str); 2] = [(DEFINITIONS[0], "reports_v1"), (DEFINITIONS[1], "reports_v2")];

/// The projection's name for definition `version`.
pub fn name_of(version: u32) -> Option<&'static str> {
    VERSIONS.iter().find(|(kept, _)| *kept == version).map(|(_, name)| *name)
}

/// The SLA events that report an outcome or what one needs (a timer's start).
const SLA_EVENTS: [&str; 4] =
    ["SlaTimerStarted", "SlaTimerBreached", "SlaTimerFulfilled", "SlaTimerCancelled"];

/// Keeps the facts of one definition version.
#[derive(Debug, Clone, Copy)]
pub struct Reports {
    version: u32,
    name: &'static str,
}

impl Reports {
    /// The projection of definition `version`, if it is kept.
    pub fn of(version: u32) -> Option<Self> {
        name_of(version).map(|name| Self { version, name })
    }

    /// Every kept version's projection, oldest first.
    pub fn all() -> impl Iterator<Item = Self> {
        VERSIONS.into_iter().map(|(version, name)| Self { version, name })
    }

    /// Its definition version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

#[async_trait::async_trait]
impl Projection for Reports {
    fn name(&self) -> &'static str {
        self.name
    }

    /// Analytics: while the process's timers fire late, reports wait (docs/adr/0014).
    fn defers_to_deadlines(&self) -> bool {
        true
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        match event.aggregate_type.as_str() {
            "conversation" => true,
            "sla" => SLA_EVENTS.contains(&event.event_type.as_str()),
            "calendar" => true,
            _ => false,
        }
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let mut batch = Batch { version: self.version, ..Batch::default() };
        // Every conversation's state the batch needs, read in a few statements.
        let keys: BTreeSet<(String, String)> = events
            .iter()
            .filter(|e| self.handles(e) && e.aggregate_type != "calendar")
            .map(|e| (e.tenant_id().unwrap_or_default(), e.aggregate_id.clone()))
            .collect();
        let keys: Vec<(String, String)> = keys.into_iter().collect();
        let mut found = store::conversations(tx, self.version, &keys).await?;
        for key in keys {
            let state = found.remove(&key).unwrap_or_default();
            batch.conversations.insert(key, state);
        }
        for stored in events.iter().filter(|e| self.handles(e)) {
            batch.apply(tx, stored).await?;
        }
        batch.write(tx).await
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            FACTS_TABLE,
            CONVERSATIONS_TABLE,
            CALENDARS_TABLE,
            rollups::CELLS_TABLE,
            rollups::NUMBERS_TABLE,
            rollups::HEADS_TABLE,
        ]
    }

    async fn clear(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        store::clear(tx, self.version).await
    }

    fn metadata(&self) -> Metadata {
        Metadata::TenantOnly
    }
}

/// A batch being folded: each conversation's state read at most once and written once, its
/// facts written together at the end.
#[derive(Debug, Default)]
struct Batch {
    version: u32,
    /// By tenant and conversation (the default state for one whose opening was never seen).
    conversations: BTreeMap<(String, String), ReportConversation>,
    /// Each tenant's live calendars, oldest first, as the batch has them.
    calendars: HashMap<String, Vec<CalendarVersion>>,
    /// Every hour: what a conversation without a calendar counts.
    always: Option<BusinessHours>,
    facts: Vec<(String, Fact)>,
}

impl Batch {
    async fn apply(&mut self, tx: &mut Tx<'_>, stored: &StoredEvent) -> Result<(), ProjectionError> {
        let tenant = stored.tenant_id().unwrap_or_default();
        let position = stored.position.unwrap_or_default();
        if stored.aggregate_type == "calendar" {
            let event = stored.decode::<DefinitionEvent<Calendar>>()?;
            store::apply_calendar(tx, self.version, &tenant, &stored.aggregate_id, position, event).await?;
            self.calendars.remove(&tenant);
            return Ok(());
        }
        let key = (tenant.clone(), stored.aggregate_id.clone());
        if !self.calendars.contains_key(&tenant) {
            let calendars = store::calendars(tx, self.version, &tenant).await?;
            self.calendars.insert(tenant.clone(), calendars);
        }
        // Read for the whole batch before its first event (`Reports::apply`).
        let conversation = self.conversations.entry(key).or_default();
        let calendars = self.calendars.get(&tenant).map(Vec::as_slice).unwrap_or_default();
        let always = self.always.get_or_insert_with(BusinessHours::always);
        let hours = |inbox: Option<&str>| {
            calendar::for_inbox(calendars, inbox).map_or(&*always, |c| &c.calendar.hours)
        };
        let facts = if stored.aggregate_type == "sla" {
            conversation.observe_sla(
                self.version,
                &stored.decode::<SlaEvent>()?,
                position,
                hours(conversation.inbox_id()),
            )
        } else {
            let event = stored.decode::<ConversationEvent>()?;
            let hours = match &event {
                // An opening's inbox is in the event, not yet in the state.
                ConversationEvent::ConversationOpened { inbox_id, .. } => hours(inbox_id.as_deref()),
                _ => hours(conversation.inbox_id()),
            };
            conversation.observe(self.version, &event, position, hours)
        };
        self.facts.extend(facts.into_iter().map(|fact| (tenant.clone(), fact)));
        Ok(())
    }

    async fn write(self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        store::write_conversations(tx, self.version, &self.conversations).await?;
        store::write_facts(tx, self.version, self.facts).await
    }
}
