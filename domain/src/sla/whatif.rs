//! What-if: the clocks a policy would have run over a conversation's history, computed without
//! writing anything. The same rules as the live clocks ([`clock`]), with the policy taken as if
//! it had always been in force and the only one, and every warning and breach due by `until`
//! fired: so a draft (or a past version) is judged by exactly what it would have recorded.

use chrono::{DateTime, Utc};

use super::*;

/// The clocks `policy` would have run for one conversation's `events` (in order, with their
/// sequence), judged at `until`, on `calendars`.
pub fn simulate(
    conversation_id: ConversationId,
    tenant_id: TenantId,
    events: Vec<(u64, ConversationEvent)>,
    policy: PolicyVersion,
    calendars: Vec<crate::calendar::CalendarVersion>,
    until: DateTime<Utc>,
) -> ConversationSla {
    let catalog = Catalog {
        policies: vec![CatalogPolicy { version: policy, recorded_at: DateTime::<Utc>::MIN_UTC }],
        calendars,
    };
    let mut clocks = ConversationSla::default();
    for event in clock::observe(&clocks, conversation_id, tenant_id, events, &catalog) {
        clocks.apply(event);
    }
    let running: Vec<String> = clocks
        .timers
        .iter()
        .filter(|timer| timer.state == TimerState::Running)
        .map(|timer| timer.timer_id.clone())
        .collect();
    for timer_id in running {
        for event in clock::fire(&clocks, &timer_id, until) {
            clocks.apply(event);
        }
    }
    clocks
}

/// How a set of timers fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outcome {
    /// Fulfilled within the threshold.
    pub hits: u64,
    /// Breached (fulfilled late, or still running past the due).
    pub misses: u64,
    /// Still running, not yet due.
    pub running: u64,
    /// Cancelled before breaching (resolved, reassigned, deleted) or paused.
    pub other: u64,
}

impl Outcome {
    /// Counts `timer`.
    pub fn count(&mut self, timer: &Timer) {
        match (timer.breached_at.is_some(), timer.state) {
            (true, _) => self.misses += 1,
            (false, TimerState::Fulfilled) => self.hits += 1,
            (false, TimerState::Running) => self.running += 1,
            (false, TimerState::Paused | TimerState::Cancelled) => self.other += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use serde_json::Map;

    use super::*;
    use crate::channel::Channel;
    use crate::conversation::{GroupType, MessageContent, Priority, Sender, SenderKind, Visibility};
    use crate::ids::{ContactId, MessageId};

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid time") + Duration::minutes(minutes)
    }

    fn history(reply_after: i64) -> Vec<(u64, ConversationEvent)> {
        let opened = ConversationEvent::ConversationOpened {
            conversation_id: ConversationId(Uuid::from_u128(1)),
            tenant_id: TenantId::parse("acme").expect("valid tenant"),
            number: 1,
            contact_id: ContactId(Uuid::from_u128(2)),
            channel: Channel::Email,
            inbox_id: None,
            subject: None,
            priority: Priority::Medium,
            status: Status::Open,
            custom_fields: Map::new(),
            labels: Vec::new(),
            group_type: GroupType::Individual,
            group_id: None,
            opened_at: at(0),
        };
        let reply = ConversationEvent::MessageAdded {
            message_id: MessageId(Uuid::from_u128(3)),
            sender: Sender { kind: SenderKind::User, id: Some("ada".into()) },
            visibility: Visibility::Public,
            content: MessageContent::default(),
            response_time_ms: None,
            created_at: at(reply_after),
        };
        vec![(1, opened), (2, reply)]
    }

    fn draft(minutes: i64) -> PolicyVersion {
        PolicyVersion {
            policy_id: Uuid::from_u128(9),
            version: 0,
            policy: SlaPolicy {
                name: "Draft".into(),
                rank: 0,
                enabled: true,
                conditions: Conditions::default(),
                targets: vec![Target {
                    metric: Metric::FirstResponse,
                    priority: None,
                    threshold_seconds: minutes * 60,
                    business_hours: false,
                    calendar_id: None,
                    warnings: Vec::new(),
                    pause_statuses: policy::default_pause_statuses(),
                    bot_replies_count: false,
                }],
            },
        }
    }

    fn outcome(reply_after: i64, threshold: i64) -> Outcome {
        let clocks = simulate(
            ConversationId(Uuid::from_u128(1)),
            TenantId::parse("acme").expect("valid tenant"),
            history(reply_after),
            draft(threshold),
            Vec::new(),
            at(1000),
        );
        let mut outcome = Outcome::default();
        clocks.timers.iter().for_each(|timer| outcome.count(timer));
        outcome
    }

    #[test]
    fn a_draft_threshold_judges_past_replies_as_hits_or_misses() {
        assert_eq!(outcome(30, 60), Outcome { hits: 1, ..Outcome::default() });
        assert_eq!(outcome(90, 60), Outcome { misses: 1, ..Outcome::default() });
    }

    #[test]
    fn a_conversation_still_waiting_past_the_due_is_a_miss_when_judged() {
        let mut events = history(0);
        events.truncate(1);
        let clocks = simulate(
            ConversationId(Uuid::from_u128(1)),
            TenantId::parse("acme").expect("valid tenant"),
            events,
            draft(60),
            Vec::new(),
            at(61),
        );
        assert_eq!(clocks.timer("first_response").and_then(|t| t.breached_at), Some(at(60)));
    }
}
