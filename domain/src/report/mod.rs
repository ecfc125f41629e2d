//! Reports' facts: one per measured span of a conversation's life (its first response, each
//! reply time, each resolution, time in statuses, bot handoffs, SLA outcomes) and one per message,
//! derived from the log by a pure fold ([`ReportConversation::observe`]), each with the
//! dimensions as they were at that moment and its business seconds on the inbox's calendar.
//!
//! The definitions are versioned code: [`DEFINITIONS`] names every version the rules here can
//! derive (a rule that changed reads the version it is asked for), and a changed rule is a new
//! version built from position 0 beside the current one, compared, then made current per tenant
//! ([`ReportSettings`], docs/adr/0009). The rules
//! follow the best help desks (Zendesk's first reply, requester and agent wait times; Chatwoot's
//! reporting events), and avoid what their users complain of:
//!
//! - A **reply** is a public message by a human agent: bot and AI replies, private notes and
//!   system messages never end a wait, so a bot's instant answer does not flatter the figures.
//! - **First response** runs from the opening (or the bot's handoff, when a bot had it first) to
//!   the first reply, once per conversation, and only when the customer wrote first: a reopen
//!   starts none, and a conversation the team opened has none.
//! - **Reply time** runs from the customer's first public message after the last reply to the
//!   next reply, once per wait; resolving ends a wait without a fact (never counted after).
//! - **Resolution** runs from the cycle's start (the opening, or the reopen) to each resolve;
//!   **first resolution** from the opening to the first resolve, once; **full resolution** from
//!   the opening to the latest resolve, each one superseding the conversation's earlier one.
//! - **Reopened** counts a reopen, valued at the time since the last resolve.
//! - **Requester wait** is time in `open`, **agent wait** time in `pending`, one fact per stay,
//!   ended by the status change. A stay in `snoozed` is **on hold** and the requester still
//!   waits (Zendesk's on-hold time, counted in its requester wait); version 1 counted it as agent
//!   wait instead.
//! - **Bot handoff** is leaving the `bot` status for any but `closed` (valued from the cycle's
//!   start); **bot resolution** a resolve from `bot`, or of a cycle only bots answered.
//! - **SLA hit** is a timer fulfilled within its threshold, **SLA miss** a breach (at its computed
//!   due), each with the timer's metric as its kind.
//! - Messages count as incoming, outgoing (public, any sender of the team's side) or private notes,
//!   with the sender's kind.
//!
//! Dimensions are the conversation's at the fact's end: the team is the team then, not now.

mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::conversation::Status;

/// Every definition version the rules here derive, oldest first: facts of each are kept apart.
/// Version 2 split a stay in `snoozed` from agent wait into on hold (and requester wait).
pub const DEFINITIONS: [u32; 2] = [1, 2];

/// The newest definition version.
pub const DEFINITION: u32 = DEFINITIONS[DEFINITIONS.len() - 1];

/// The version a tenant reads until it makes another current: a new version is compared first.
pub const ESTABLISHED: u32 = 1;

/// A tenant's choice among the definition versions, a versioned definition of its own (its events
/// `ReportSettingsCreated` and `ReportSettingsRevised` record each change of the current version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(example = json!({"current_version": 2})))]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// The definition version the tenant's reports read by default.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    #[serde(deserialize_with = "crate::whole::int")]
    pub current_version: u32,
}

/// A tenant's report settings as an aggregate.
pub type ReportSettingsAggregate = crate::definition::Defined<ReportSettings>;

/// The one stream of a tenant's report settings (streams are keyed by tenant).
pub const SETTINGS_ID: uuid::Uuid = uuid::Uuid::nil();

impl crate::definition::Definition for ReportSettings {
    const TYPE: &'static str = "report_settings";
    const NOUN: &'static str = "report settings";
    const EVENT_PREFIX: &'static str = "ReportSettings";

    fn name(&self) -> &str {
        "reports"
    }

    fn validated(self) -> Result<Self, crate::validate::FieldError> {
        if DEFINITIONS.contains(&self.current_version) {
            Ok(self)
        } else {
            let kept: Vec<String> = DEFINITIONS.iter().map(u32::to_string).collect();
            Err(crate::validate::FieldError::new(
                "current_version",
                format!("{} is not a definition version (kept: {})", self.current_version, kept.join(", ")),
            ))
        }
    }
}

/// What a fact measures or counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ReportMetric))]
pub enum Metric {
    /// A conversation opened (a count).
    ConversationOpened,
    /// A resolved conversation opened again: the time since its last resolve.
    ConversationReopened,
    /// From the opening (or the bot's handoff) to the first human reply.
    FirstResponse,
    /// From the customer's first message of a wait to the reply that ends it.
    ReplyTime,
    /// From the cycle's start to a resolve.
    Resolution,
    /// From the opening to the first resolve.
    FirstResolution,
    /// From the opening to the latest resolve.
    FullResolution,
    /// From the cycle's start to the bot handing the conversation to the team.
    BotHandoff,
    /// From the cycle's start to a resolve by a bot.
    BotResolution,
    /// A stay in `open`: the customer waits for the team.
    RequesterWait,
    /// A stay in `pending`: the team waits for the customer (version 1: `snoozed` too).
    AgentWait,
    /// A stay in `snoozed`: the team put the conversation aside (version 2 on).
    OnHold,
    /// An SLA timer fulfilled within its threshold: its clock seconds.
    SlaHit,
    /// An SLA timer breached, at its computed due: a count.
    SlaMiss,
    /// A public message from the customer's side (a count).
    IncomingMessage,
    /// A public message from the team's side, person, bot or system (a count).
    OutgoingMessage,
    /// A private note (a count).
    PrivateNote,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 17] = [
        Self::ConversationOpened,
        Self::ConversationReopened,
        Self::FirstResponse,
        Self::ReplyTime,
        Self::Resolution,
        Self::FirstResolution,
        Self::FullResolution,
        Self::BotHandoff,
        Self::BotResolution,
        Self::RequesterWait,
        Self::AgentWait,
        Self::OnHold,
        Self::SlaHit,
        Self::SlaMiss,
        Self::IncomingMessage,
        Self::OutgoingMessage,
        Self::PrivateNote,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConversationOpened => "conversation_opened",
            Self::ConversationReopened => "conversation_reopened",
            Self::FirstResponse => "first_response",
            Self::ReplyTime => "reply_time",
            Self::Resolution => "resolution",
            Self::FirstResolution => "first_resolution",
            Self::FullResolution => "full_resolution",
            Self::BotHandoff => "bot_handoff",
            Self::BotResolution => "bot_resolution",
            Self::RequesterWait => "requester_wait",
            Self::AgentWait => "agent_wait",
            Self::OnHold => "on_hold",
            Self::SlaHit => "sla_hit",
            Self::SlaMiss => "sla_miss",
            Self::IncomingMessage => "incoming_message",
            Self::OutgoingMessage => "outgoing_message",
            Self::PrivateNote => "private_note",
        }
    }

    /// The metric named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|metric| metric.as_str() == name)
    }

    /// Whether definition `version` derives it (on hold came with version 2).
    pub fn derived_in(self, version: u32) -> bool {
        match self {
            Self::OnHold => version >= 2,
            _ => true,
        }
    }

    /// Whether its facts carry a duration (the others only count).
    pub fn is_duration(self) -> bool {
        !matches!(
            self,
            Self::ConversationOpened
                | Self::SlaMiss
                | Self::IncomingMessage
                | Self::OutgoingMessage
                | Self::PrivateNote
        )
    }
}

/// What a fact is broken down by: the conversation as it was at the fact's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimensions {
    /// The agent the fact is about: who replied, for a reply or a message; else the assignee.
    pub agent_id: Option<String>,
    /// The assigned agent.
    pub assignee_id: Option<String>,
    /// The assigned team.
    pub team_id: Option<String>,
    /// The inbox.
    pub inbox_id: Option<String>,
    /// The channel's snake_case name.
    pub channel: String,
    /// The priority's snake_case name.
    pub priority: String,
    /// Its labels, sorted.
    pub labels: Vec<String>,
    /// A group conversation (not one to one).
    pub group: bool,
    /// A bot or AI assistant took part (a bot status, or a bot's message) by then.
    pub bot: bool,
}

/// One measured span (or one counted happening) of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// What it measures.
    pub metric: Metric,
    /// A finer kind: the sender's kind for a message, the status for a wait, the SLA metric for
    /// an SLA outcome.
    pub kind: Option<String>,
    /// The conversation.
    pub conversation_id: String,
    /// Its contact.
    pub contact_id: String,
    /// Wall-clock seconds from start to end, for a duration.
    pub value: Option<i64>,
    /// Seconds of it within the inbox's business hours (every second without a calendar).
    pub business_value: Option<i64>,
    /// When the span started.
    pub started_at: DateTime<Utc>,
    /// When it ended: the time the fact is reported at.
    pub ended_at: DateTime<Utc>,
    /// The log position of the event that started it.
    pub start_position: i64,
    /// The log position of the event that ended it (with the metric, its identity).
    pub end_position: i64,
    /// The conversation at the end.
    pub dimensions: Dimensions,
    /// This fact replaces the conversation's earlier one of the same metric (full resolution).
    pub supersedes: bool,
}

/// A moment of the log: when, and at which position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// When.
    pub at: DateTime<Utc>,
    /// The log position.
    pub position: i64,
}

/// A conversation as the reports' rules read it: what its next facts need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportConversation {
    /// The conversation.
    pub conversation_id: String,
    /// Its contact.
    pub contact_id: String,
    /// Its dimensions now (the agent aside).
    pub dimensions: Dimensions,
    /// When it opened; none before its opening was seen.
    pub opened: Option<Mark>,
    /// Its status, and since when.
    pub status: Status,
    /// When it entered its status.
    pub status_since: Option<Mark>,
    /// When the current resolution cycle began.
    pub cycle_started: Option<Mark>,
    /// When it was last resolved.
    pub resolved: Option<Mark>,
    /// Whether it was ever resolved.
    pub ever_resolved: bool,
    /// When the bot last handed it over, before the first reply.
    pub handoff: Option<Mark>,
    /// Whether the customer has written.
    pub customer_wrote: bool,
    /// Whether a person of the team has replied.
    pub replied: bool,
    /// Since when the customer waits for a reply (their first message after the last one).
    pub waiting: Option<Mark>,
    /// Whether a person replied in this cycle.
    pub cycle_human: bool,
    /// Whether a bot replied in this cycle.
    pub cycle_bot: bool,
    /// Each running SLA timer's start, by timer id.
    pub timers: BTreeMap<String, Mark>,
}
