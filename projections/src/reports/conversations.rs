//! One row per conversation: what its facts of a period amount to (its first response, replies,
//! resolutions, waits, messages, SLA outcomes), for the export users ask for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use colloquy_domain::report::Metric;

use super::query::FactRow;

/// A conversation's facts of a period, summed up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationRow {
    /// The conversation.
    pub conversation_id: String,
    /// Its contact.
    pub contact_id: String,
    /// Its inbox.
    pub inbox_id: Option<String>,
    /// Its channel.
    pub channel: String,
    /// The team at its last fact of the period.
    pub team_id: Option<String>,
    /// The assignee at its last fact of the period.
    pub assignee_id: Option<String>,
    /// The priority at its last fact of the period.
    pub priority: String,
    /// The labels at its last fact of the period.
    pub labels: Vec<String>,
    /// Whether a bot took part.
    pub bot: bool,
    /// When it opened, if in the period.
    pub opened_at: Option<DateTime<Utc>>,
    /// Its first response, wall-clock and business seconds, if in the period.
    pub first_response: Option<(i64, i64)>,
    /// Replies that ended a customer's wait.
    pub replies: u64,
    /// Their wall-clock seconds, summed.
    pub reply_seconds: i64,
    /// Resolutions.
    pub resolutions: u64,
    /// From the opening to its latest resolve of the period, wall-clock and business seconds.
    pub full_resolution: Option<(i64, i64)>,
    /// Reopens.
    pub reopens: u64,
    /// Messages from the customer's side.
    pub incoming_messages: u64,
    /// Messages from the team's side.
    pub outgoing_messages: u64,
    /// Private notes.
    pub private_notes: u64,
    /// Seconds the customer waited (in `open`; version 2: and `snoozed`), summed.
    pub requester_wait_seconds: i64,
    /// Seconds in `pending` (version 1: and `snoozed`), summed.
    pub agent_wait_seconds: i64,
    /// Seconds in `snoozed` (version 2 on), summed.
    pub on_hold_seconds: i64,
    /// SLA timers met.
    pub sla_hits: u64,
    /// SLA timers breached.
    pub sla_misses: u64,
    /// The end position of the last fact folded (which sets the dimensions).
    last_position: i64,
}

impl ConversationRow {
    fn add(&mut self, fact: &FactRow) {
        if fact.end_position >= self.last_position {
            self.last_position = fact.end_position;
            self.team_id.clone_from(&fact.team_id);
            self.assignee_id.clone_from(&fact.assignee_id);
            self.priority.clone_from(&fact.priority);
            self.labels.clone_from(&fact.labels);
        }
        self.bot |= fact.bot;
        let value = fact.value.unwrap_or_default();
        let pair = (value, fact.business_value.unwrap_or_default());
        match fact.metric {
            Metric::ConversationOpened => self.opened_at = Some(fact.ended_at),
            Metric::FirstResponse => self.first_response = Some(pair),
            Metric::ReplyTime => {
                self.replies += 1;
                self.reply_seconds += value;
            }
            Metric::Resolution => self.resolutions += 1,
            Metric::FullResolution if fact.superseded_at.is_none() => self.full_resolution = Some(pair),
            Metric::ConversationReopened => self.reopens += 1,
            Metric::IncomingMessage => self.incoming_messages += 1,
            Metric::OutgoingMessage => self.outgoing_messages += 1,
            Metric::PrivateNote => self.private_notes += 1,
            Metric::RequesterWait => self.requester_wait_seconds += value,
            Metric::AgentWait => self.agent_wait_seconds += value,
            Metric::OnHold => self.on_hold_seconds += value,
            Metric::SlaHit => self.sla_hits += 1,
            Metric::SlaMiss => self.sla_misses += 1,
            Metric::FullResolution | Metric::FirstResolution | Metric::BotHandoff | Metric::BotResolution => {
            }
        }
    }
}

/// Conversations' rows being folded from their facts (the current ones: a superseded full
/// resolution is left to the one that replaced it).
#[derive(Debug, Default)]
pub struct ConversationRows {
    rows: BTreeMap<String, ConversationRow>,
}

impl ConversationRows {
    /// Folds `fact` into its conversation's row.
    pub fn add(&mut self, fact: &FactRow) {
        let row = self.rows.entry(fact.conversation_id.clone()).or_insert_with(|| ConversationRow {
            conversation_id: fact.conversation_id.clone(),
            contact_id: fact.contact_id.clone(),
            inbox_id: fact.inbox_id.clone(),
            channel: fact.channel.clone(),
            ..ConversationRow::default()
        });
        row.add(fact);
    }

    /// The rows, by conversation id.
    pub fn into_rows(self) -> impl Iterator<Item = ConversationRow> {
        self.rows.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(metric: Metric, position: i64, value: Option<i64>, team: &str) -> FactRow {
        let at: DateTime<Utc> = "2026-11-23T09:00:00Z".parse().expect("a time");
        FactRow {
            metric,
            kind: None,
            conversation_id: "c1".into(),
            contact_id: "p1".into(),
            value,
            business_value: value.map(|v| v / 2),
            started_at: at,
            ended_at: at,
            start_position: 1,
            end_position: position,
            agent_id: None,
            assignee_id: None,
            team_id: Some(team.into()),
            inbox_id: Some("support".into()),
            channel: "email".into(),
            priority: "high".into(),
            labels: Vec::new(),
            group: false,
            bot: false,
            superseded_at: None,
        }
    }

    #[test]
    fn a_row_sums_its_facts_and_takes_the_dimensions_of_the_last() {
        let mut rows = ConversationRows::default();
        // Out of log order, as a stream of rows may come.
        rows.add(&fact(Metric::ReplyTime, 5, Some(30), "tier-2"));
        rows.add(&fact(Metric::ConversationOpened, 1, None, "tier-1"));
        rows.add(&fact(Metric::FirstResponse, 5, Some(60), "tier-2"));
        rows.add(&fact(Metric::ReplyTime, 9, Some(90), "tier-3"));
        rows.add(&fact(Metric::IncomingMessage, 2, None, "tier-1"));
        let row = rows.into_rows().next().expect("one row");
        assert_eq!((row.replies, row.reply_seconds), (2, 120));
        assert_eq!(row.first_response, Some((60, 30)));
        assert_eq!(row.incoming_messages, 1);
        assert_eq!(row.team_id.as_deref(), Some("tier-3"));
        assert!(row.opened_at.is_some());
    }
}
