//! Business calendars: a tenant's working hours ([`BusinessHours`]: a time zone, intervals per
//! weekday, dated exceptions) under a name, versioned as a [`Definition`]. A calendar serves the
//! inboxes it names, and one may be the tenant's default, for inboxes no calendar names. SLA
//! targets that count business time count it on the conversation's inbox's calendar.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::definition::{Defined, Definition};
use crate::hours::BusinessHours;
use crate::validate::{self, FieldError, MAX_SHORT_TEXT};

/// The most inboxes one calendar names.
pub const MAX_INBOXES: usize = 200;

/// A business calendar, as one version records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Support, Berlin", "time_zone": "Europe/Berlin",
    "weekly": [{"weekday": "Mon", "start": "09:00", "end": "13:00"}, {"weekday": "Mon", "start": "14:00", "end": "18:00"},
               {"weekday": "Fri", "start": "22:00", "end": "06:00"}],
    "exceptions": [{"date": "2026-12-25", "intervals": [], "name": "Christmas Day"}],
    "inbox_ids": ["support"], "tenant_default": false})))]
pub struct Calendar {
    /// What people call it ("Support, Berlin").
    pub name: String,
    /// Its hours.
    #[serde(flatten)]
    pub hours: BusinessHours,
    /// The inboxes whose conversations it times.
    #[serde(default)]
    pub inbox_ids: Vec<String>,
    /// Whether it times the tenant's inboxes that no calendar names.
    #[serde(default)]
    pub tenant_default: bool,
}

impl Definition for Calendar {
    const TYPE: &'static str = "calendar";
    const NOUN: &'static str = "calendar";
    const EVENT_PREFIX: &'static str = "Calendar";

    fn name(&self) -> &str {
        &self.name
    }

    fn validated(mut self) -> Result<Self, FieldError> {
        self.name = validate::text("name", &self.name, MAX_SHORT_TEXT, true)?;
        self.inbox_ids = validate::external_ids("inbox_ids", &self.inbox_ids, MAX_INBOXES)?;
        self.hours.validate().map_err(|error| FieldError::new("hours", error.to_string()))?;
        Ok(self)
    }
}

/// The Calendar aggregate.
pub type CalendarAggregate = Defined<Calendar>;

/// A calendar's version as rules read it: which one, and its hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarVersion {
    /// The calendar.
    pub calendar_id: Uuid,
    /// Its version.
    pub version: u32,
    /// What it says.
    pub calendar: Calendar,
}

/// Which calendar times an inbox's conversations: the newest that names the inbox, else the
/// newest tenant default, else none (every hour counts). `calendars` are the tenant's live ones;
/// "newest" is the order given, oldest first, so a later edit wins a tie.
pub fn for_inbox<'a>(
    calendars: &'a [CalendarVersion],
    inbox_id: Option<&str>,
) -> Option<&'a CalendarVersion> {
    let named = inbox_id.and_then(|inbox| {
        calendars.iter().rev().find(|version| version.calendar.inbox_ids.iter().any(|id| id == inbox))
    });
    named.or_else(|| calendars.iter().rev().find(|version| version.calendar.tenant_default))
}
