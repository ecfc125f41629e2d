//! Given/when/then tests for each metric's boundaries: bot replies, private notes, reopens,
//! snoozes, a reassignment mid-wait, a bot handoff, group conversations, business hours, SLA
//! outcomes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc, Weekday};
use serde_json::Map;
use uuid::Uuid;

use super::*;
use crate::channel::Channel;
use crate::conversation::{
    ConversationEvent, GroupType, MessageContent, MessageType, Priority, Sender, SenderKind, StatusReason,
    Visibility,
};
use crate::hours::{BusinessHours, LocalTime, WeeklyInterval};
use crate::ids::{ContactId, ConversationId, MessageId, TenantId};
use crate::sla::SlaEvent;

fn t0() -> DateTime<Utc> {
    // A Monday, 10:00 in Berlin.
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time")
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn opened_as(status: Status, group_type: GroupType) -> ConversationEvent {
    ConversationEvent::ConversationOpened {
        conversation_id: ConversationId(Uuid::from_u128(1)),
        tenant_id: TenantId::parse("acme").expect("valid tenant"),
        number: 1,
        contact_id: ContactId(Uuid::from_u128(2)),
        channel: Channel::Whatsapp,
        inbox_id: Some("support".into()),
        subject: None,
        priority: Priority::High,
        status,
        custom_fields: Map::new(),
        labels: vec!["billing".into()],
        group_type,
        group_id: None,
        opened_at: t0(),
    }
}

fn opened() -> ConversationEvent {
    opened_as(Status::Open, GroupType::Individual)
}

fn message(kind: SenderKind, id: &str, visibility: Visibility, minutes: i64) -> ConversationEvent {
    ConversationEvent::MessageAdded {
        message_id: MessageId::new_v7(),
        sender: Sender { kind, id: Some(id.into()) },
        visibility,
        content: MessageContent {
            message_type: MessageType::Text,
            text: Some("hi".into()),
            ..MessageContent::default()
        },
        response_time_ms: None,
        created_at: at(minutes),
    }
}

fn customer(minutes: i64) -> ConversationEvent {
    message(SenderKind::Customer, "contact", Visibility::Public, minutes)
}

fn reply(agent: &str, minutes: i64) -> ConversationEvent {
    message(SenderKind::User, agent, Visibility::Public, minutes)
}

fn status(from: Status, to: Status, minutes: i64) -> ConversationEvent {
    ConversationEvent::StatusChanged {
        from,
        to,
        snoozed_until: None,
        reason: StatusReason::Requested,
        changed_at: at(minutes),
    }
}

fn assigned(agent: &str, team: &str, minutes: i64) -> ConversationEvent {
    ConversationEvent::ConversationAssigned {
        assignee_id: Some(agent.into()),
        team_id: Some(team.into()),
        previous_assignee_id: None,
        previous_team_id: None,
        assigned_at: at(minutes),
    }
}

/// A conversation's facts as the reports' projection derives them, one event at a time.
struct Reported {
    version: u32,
    conversation: ReportConversation,
    hours: BusinessHours,
    position: i64,
    facts: Vec<Fact>,
}

impl Reported {
    fn given(events: Vec<ConversationEvent>) -> Self {
        Self::on(BusinessHours::always(), events)
    }

    fn on(hours: BusinessHours, events: Vec<ConversationEvent>) -> Self {
        Self::under(DEFINITION, hours, events)
    }

    fn under(version: u32, hours: BusinessHours, events: Vec<ConversationEvent>) -> Self {
        let mut reported = Self {
            version,
            conversation: ReportConversation::default(),
            hours,
            position: 0,
            facts: Vec::new(),
        };
        for event in events {
            reported.when(event);
        }
        reported
    }

    fn when(&mut self, event: ConversationEvent) -> &mut Self {
        self.position += 1;
        let facts = self.conversation.observe(self.version, &event, self.position, &self.hours);
        self.facts.extend(facts);
        self
    }

    fn when_sla(&mut self, event: SlaEvent) -> &mut Self {
        self.position += 1;
        let facts = self.conversation.observe_sla(self.version, &event, self.position, &self.hours);
        self.facts.extend(facts);
        self
    }

    fn of(&self, metric: Metric) -> Vec<&Fact> {
        self.facts.iter().filter(|fact| fact.metric == metric).collect()
    }

    /// The values in minutes of the facts of `metric`.
    fn minutes(&self, metric: Metric) -> Vec<i64> {
        self.of(metric).iter().map(|fact| fact.value.expect("a duration") / 60).collect()
    }
}

#[test]
fn a_bot_reply_and_a_private_note_do_not_end_the_first_response_a_human_reply_does() {
    let reported = Reported::given(vec![
        opened(),
        customer(1),
        message(SenderKind::Bot, "faq-bot", Visibility::Public, 2),
        message(SenderKind::User, "ana", Visibility::Internal, 3),
        reply("ana", 10),
    ]);
    assert_eq!(reported.minutes(Metric::FirstResponse), vec![10]);
    assert_eq!(reported.minutes(Metric::ReplyTime), vec![9], "the wait began at the customer's message");
    let first = reported.of(Metric::FirstResponse)[0];
    assert_eq!(first.dimensions.agent_id.as_deref(), Some("ana"));
    assert!(first.dimensions.bot, "a bot took part before it");
    assert_eq!(reported.of(Metric::PrivateNote).len(), 1);
    assert_eq!(reported.of(Metric::OutgoingMessage).len(), 2, "the bot's and ana's public messages");
    assert_eq!(reported.of(Metric::IncomingMessage).len(), 1);
}

#[test]
fn each_customer_wait_gives_one_reply_time_from_its_first_message() {
    let reported = Reported::given(vec![
        opened(),
        customer(0),
        reply("ana", 5),
        customer(20),
        customer(25),
        reply("ana", 50),
        reply("ana", 51),
    ]);
    assert_eq!(reported.minutes(Metric::ReplyTime), vec![5, 30]);
    assert_eq!(reported.minutes(Metric::FirstResponse), vec![5]);
}

#[test]
fn a_conversation_the_team_opened_has_no_first_response() {
    let reported = Reported::given(vec![opened(), reply("ana", 1), customer(5), reply("ana", 7)]);
    assert!(reported.of(Metric::FirstResponse).is_empty());
    assert_eq!(reported.minutes(Metric::ReplyTime), vec![2]);
}

#[test]
fn resolving_ends_a_wait_without_a_reply_time() {
    let reported = Reported::given(vec![
        opened(),
        customer(0),
        status(Status::Open, Status::Closed, 30),
        reply("ana", 40),
    ]);
    assert!(reported.of(Metric::ReplyTime).is_empty(), "{:?}", reported.of(Metric::ReplyTime));
    assert_eq!(
        reported.minutes(Metric::FirstResponse),
        vec![40],
        "the first reply is still the first response"
    );
}

#[test]
fn a_reopen_starts_a_resolution_cycle_but_no_first_response() {
    let reported = Reported::given(vec![
        opened(),
        customer(0),
        reply("ana", 10),
        status(Status::Open, Status::Closed, 60),
        status(Status::Closed, Status::Open, 100),
        customer(100),
        reply("ana", 130),
        status(Status::Open, Status::Closed, 200),
    ]);
    assert_eq!(reported.minutes(Metric::FirstResponse), vec![10]);
    assert_eq!(reported.minutes(Metric::ConversationReopened), vec![40], "since the last resolve");
    assert_eq!(reported.minutes(Metric::Resolution), vec![60, 100], "each cycle from its start");
    assert_eq!(reported.minutes(Metric::FirstResolution), vec![60]);
    assert_eq!(reported.minutes(Metric::FullResolution), vec![60, 200], "each from the opening");
    assert!(reported.of(Metric::FullResolution).iter().all(|fact| fact.supersedes));
    assert_eq!(reported.minutes(Metric::ReplyTime), vec![10, 30]);
}

fn snoozed_then_pending() -> Vec<ConversationEvent> {
    vec![
        opened(),
        status(Status::Open, Status::Snoozed, 15),
        status(Status::Snoozed, Status::Open, 75),
        status(Status::Open, Status::Pending, 80),
        status(Status::Pending, Status::Closed, 95),
    ]
}

#[test]
fn a_snooze_is_on_hold_and_the_requester_still_waits_while_pending_is_the_agents_wait() {
    let reported = Reported::given(snoozed_then_pending());
    assert_eq!(reported.minutes(Metric::RequesterWait), vec![15, 60, 5], "open, snoozed, open");
    assert_eq!(reported.minutes(Metric::OnHold), vec![60]);
    assert_eq!(reported.minutes(Metric::AgentWait), vec![15]);
    let kinds: Vec<_> = reported.of(Metric::RequesterWait).iter().map(|fact| fact.kind.clone()).collect();
    assert_eq!(kinds, vec![Some("open".to_owned()), Some("snoozed".to_owned()), Some("open".to_owned())]);
}

#[test]
fn version_1_counted_a_snooze_as_agent_wait_and_had_no_on_hold() {
    let reported = Reported::under(1, BusinessHours::always(), snoozed_then_pending());
    assert_eq!(reported.minutes(Metric::RequesterWait), vec![15, 5]);
    assert_eq!(reported.minutes(Metric::AgentWait), vec![60, 15]);
    assert!(reported.of(Metric::OnHold).is_empty());
    let kinds: Vec<_> = reported.of(Metric::AgentWait).iter().map(|fact| fact.kind.clone()).collect();
    assert_eq!(kinds, vec![Some("snoozed".to_owned()), Some("pending".to_owned())]);
}

#[test]
fn report_settings_take_only_a_kept_version() {
    use crate::definition::Definition;
    assert!(ReportSettings { current_version: ESTABLISHED }.validated().is_ok());
    assert!(ReportSettings { current_version: DEFINITION }.validated().is_ok());
    let refused = ReportSettings { current_version: 9 }.validated().expect_err("9 is not kept");
    assert_eq!(refused.field, "current_version");
}

#[test]
fn a_reassignment_mid_wait_credits_the_reply_to_who_answered_and_the_team_then() {
    let mut reported = Reported::given(vec![opened(), assigned("ana", "tier-1", 0), customer(1)]);
    reported.when(assigned("ben", "tier-2", 5)).when(reply("ben", 9));
    let reply_time = reported.of(Metric::ReplyTime)[0];
    assert_eq!(reply_time.dimensions.agent_id.as_deref(), Some("ben"));
    assert_eq!(reply_time.dimensions.team_id.as_deref(), Some("tier-2"));
    reported.when(assigned("cy", "tier-3", 20));
    assert_eq!(
        reported.of(Metric::ReplyTime)[0].dimensions.team_id.as_deref(),
        Some("tier-2"),
        "a later team does not rewrite the fact"
    );
}

#[test]
fn a_bot_handoff_starts_the_first_response_and_a_bot_only_cycle_is_a_bot_resolution() {
    let reported = Reported::given(vec![
        opened_as(Status::Bot, GroupType::Individual),
        customer(0),
        message(SenderKind::Bot, "faq-bot", Visibility::Public, 1),
        status(Status::Bot, Status::Open, 20),
        reply("ana", 25),
    ]);
    assert_eq!(reported.minutes(Metric::BotHandoff), vec![20]);
    assert_eq!(reported.minutes(Metric::FirstResponse), vec![5], "from the handoff, not the opening");
    assert!(reported.of(Metric::BotResolution).is_empty());

    let by_bot = Reported::given(vec![
        opened_as(Status::Bot, GroupType::Individual),
        customer(0),
        message(SenderKind::Bot, "faq-bot", Visibility::Public, 1),
        status(Status::Bot, Status::Closed, 3),
    ]);
    assert_eq!(by_bot.minutes(Metric::BotResolution), vec![3]);
    assert!(by_bot.of(Metric::BotHandoff).is_empty());
}

#[test]
fn a_group_conversations_facts_say_so() {
    let reported =
        Reported::given(vec![opened_as(Status::Open, GroupType::Group), customer(0), reply("ana", 2)]);
    assert!(reported.facts.iter().all(|fact| fact.dimensions.group));
    assert_eq!(reported.of(Metric::ConversationOpened)[0].dimensions.labels, vec!["billing".to_owned()]);
    assert_eq!(reported.of(Metric::ConversationOpened)[0].dimensions.priority, "high");
    assert_eq!(reported.of(Metric::ConversationOpened)[0].dimensions.channel, "whatsapp");
}

#[test]
fn business_seconds_count_only_the_inboxs_hours() {
    let weekday = |weekday| WeeklyInterval {
        weekday,
        start: LocalTime::from_hm(9, 0).expect("valid time"),
        end: LocalTime::from_hm(17, 0).expect("valid time"),
    };
    let berlin = BusinessHours {
        time_zone: chrono_tz::Europe::Berlin,
        weekly: [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]
            .into_iter()
            .map(weekday)
            .collect(),
        exceptions: Vec::new(),
    };
    // From Monday 10:00 to Tuesday 10:00 in Berlin: 7 office hours on Monday, 1 on Tuesday.
    let reported = Reported::on(berlin, vec![opened(), customer(0), reply("ana", 24 * 60)]);
    let first = reported.of(Metric::FirstResponse)[0];
    assert_eq!(first.value, Some(24 * 3600));
    assert_eq!(first.business_value, Some(8 * 3600));
}

#[test]
fn an_sla_timer_met_is_a_hit_and_a_breach_a_miss_at_its_due() {
    let mut reported = Reported::given(vec![opened(), customer(0)]);
    let started = |timer: &str| SlaEvent::SlaTimerStarted {
        timer_id: timer.into(),
        metric: crate::sla::Metric::FirstResponse,
        clock: crate::sla::Clock {
            policy_id: Uuid::from_u128(9),
            policy_version: 1,
            threshold_seconds: 600,
            calendar_id: None,
            calendar_version: None,
            warnings: Vec::new(),
            pause_statuses: Vec::new(),
            bot_replies_count: false,
        },
        assignee_id: None,
        started_at: at(0),
        carried_seconds: 0,
        due_at: Some(at(10)),
        warn_at: Vec::new(),
    };
    reported.when_sla(started("first_response")).when_sla(started("next_response:1"));
    reported.when_sla(SlaEvent::SlaTimerBreached { timer_id: "next_response:1".into(), at: at(10) });
    reported.when_sla(SlaEvent::SlaTimerFulfilled {
        timer_id: "first_response".into(),
        calendar_seconds: 300,
        business_seconds: 300,
        overrun_seconds: 0,
        breached: false,
        at: at(5),
    });
    let miss = reported.of(Metric::SlaMiss);
    assert_eq!(miss.len(), 1);
    assert_eq!(
        (miss[0].kind.as_deref(), miss[0].ended_at, miss[0].started_at),
        (Some("next_response"), at(10), at(0))
    );
    let hit = reported.of(Metric::SlaHit);
    assert_eq!(hit.len(), 1);
    assert_eq!((hit[0].kind.as_deref(), hit[0].value), (Some("first_response"), Some(300)));
}

#[test]
fn events_before_the_opening_was_seen_give_no_facts() {
    let reported = Reported::given(vec![customer(0), reply("ana", 1)]);
    assert!(reported.facts.is_empty());
}

#[test]
fn each_fact_names_the_positions_that_started_and_ended_it() {
    let reported = Reported::given(vec![opened(), customer(0), reply("ana", 3)]);
    let reply_time = reported.of(Metric::ReplyTime)[0];
    assert_eq!((reply_time.start_position, reply_time.end_position), (2, 3));
    let first = reported.of(Metric::FirstResponse)[0];
    assert_eq!((first.start_position, first.end_position), (1, 3));
}

/// One generated step of a history: what happens, and how many minutes after the last.
#[derive(Debug, Clone)]
enum Step {
    Customer,
    Agent(&'static str),
    Bot,
    Note,
    Status(Status),
}

fn step() -> impl proptest::strategy::Strategy<Value = (Step, i64)> {
    use proptest::prelude::*;
    let what = prop_oneof![
        3 => Just(Step::Customer),
        2 => prop_oneof![Just(Step::Agent("ana")), Just(Step::Agent("ben"))],
        1 => Just(Step::Bot),
        1 => Just(Step::Note),
        2 => prop_oneof![
            Just(Status::Open),
            Just(Status::Pending),
            Just(Status::Snoozed),
            Just(Status::Closed),
            Just(Status::Bot)
        ]
        .prop_map(Step::Status),
    ];
    (what, 0..600i64)
}

/// The events of a generated history (status changes to the status it has are left out, as the
/// aggregate refuses them), with the minute of each.
fn history(first: Status, steps: &[(Step, i64)]) -> Vec<ConversationEvent> {
    let mut events = vec![opened_as(first, GroupType::Individual)];
    let (mut minute, mut status) = (0, first);
    for (what, gap) in steps {
        minute += gap;
        events.push(match what {
            Step::Customer => customer(minute),
            Step::Agent(agent) => reply(agent, minute),
            Step::Bot => message(SenderKind::Bot, "faq", Visibility::Public, minute),
            Step::Note => message(SenderKind::User, "ana", Visibility::Internal, minute),
            Step::Status(to) if *to == status => continue,
            Step::Status(to) => {
                let change = self::status(status, *to, minute);
                status = *to;
                change
            }
        });
    }
    events
}

/// A naive recomputation over the whole history: for each duration metric, the (start, end)
/// minutes of every span it should report, found by looking back from each end.
fn recomputed(version: u32, events: &[ConversationEvent]) -> BTreeMap<Metric, Vec<(i64, i64)>> {
    let minute = |event: &ConversationEvent| (event.occurred_at() - t0()).num_minutes();
    let mut spans: BTreeMap<Metric, Vec<(i64, i64)>> = BTreeMap::new();
    let mut add = |metric, start, end| spans.entry(metric).or_default().push((start, end));
    let is_reply = |event: &ConversationEvent| matches!(event, ConversationEvent::MessageAdded { sender, visibility: Visibility::Public, .. } if sender.kind == SenderKind::User);
    let is_customer = |event: &ConversationEvent| matches!(event, ConversationEvent::MessageAdded { sender, visibility: Visibility::Public, .. } if sender.kind.is_incoming());
    let resolves = |event: &ConversationEvent| {
        matches!(event, ConversationEvent::StatusChanged { to: Status::Closed, .. })
    };
    for (index, event) in events.iter().enumerate() {
        let before = &events[..index];
        let end = minute(event);
        if is_reply(event) {
            // The wait: the customer's first message after the last reply or resolve, if any.
            let last_break = before.iter().rposition(|e| is_reply(e) || resolves(e)).map_or(0, |i| i + 1);
            if let Some(first) = before[last_break..].iter().find(|e| is_customer(e)) {
                add(Metric::ReplyTime, minute(first), end);
            }
            if !before.iter().any(is_reply) && before.iter().any(is_customer) {
                let handoff = before.iter().rev().find_map(|e| match e {
                    ConversationEvent::StatusChanged { from: Status::Bot, to, changed_at, .. }
                        if *to != Status::Closed =>
                    {
                        Some((*changed_at - t0()).num_minutes())
                    }
                    _ => None,
                });
                add(Metric::FirstResponse, handoff.unwrap_or(0), end);
            }
        }
        if let ConversationEvent::StatusChanged { from, to, .. } = event {
            let entered = before
                .iter()
                .rev()
                .find_map(|e| matches!(e, ConversationEvent::StatusChanged { .. }).then(|| minute(e)))
                .unwrap_or(0);
            match from {
                Status::Open => add(Metric::RequesterWait, entered, end),
                Status::Snoozed if version >= 2 => {
                    add(Metric::RequesterWait, entered, end);
                    add(Metric::OnHold, entered, end);
                }
                Status::Pending | Status::Snoozed => add(Metric::AgentWait, entered, end),
                _ => {}
            }
            let cycle = before
                .iter()
                .rev()
                .find_map(|e| match e {
                    ConversationEvent::StatusChanged { from: Status::Closed, changed_at, .. } => {
                        Some((*changed_at - t0()).num_minutes())
                    }
                    _ => None,
                })
                .unwrap_or(0);
            if *from == Status::Bot && *to != Status::Closed {
                add(Metric::BotHandoff, cycle, end);
            }
            if *to == Status::Closed {
                add(Metric::Resolution, cycle, end);
                add(Metric::FullResolution, 0, end);
                if !before.iter().any(resolves) {
                    add(Metric::FirstResolution, 0, end);
                }
            }
            if *from == Status::Closed {
                let resolved = before.iter().rev().find(|e| resolves(e)).map_or(0, minute);
                add(Metric::ConversationReopened, resolved, end);
            }
        }
    }
    spans
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

    /// The incremental rules give, for every duration metric, exactly the spans a naive look back
    /// over the whole history finds, and one count per message.
    #[test]
    fn the_facts_of_any_history_are_what_a_naive_recomputation_finds(
        bot_first in proptest::bool::ANY,
        version in proptest::sample::select(DEFINITIONS.to_vec()),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let events = history(if bot_first { Status::Bot } else { Status::Open }, &steps);
        let reported = Reported::under(version, BusinessHours::always(), events.clone());
        let expected = recomputed(version, &events);
        for metric in Metric::ALL.into_iter().filter(|m| m.is_duration() && !matches!(m, Metric::SlaHit | Metric::BotResolution)) {
            let found: Vec<(i64, i64)> = reported
                .of(metric)
                .iter()
                .map(|f| ((f.started_at - t0()).num_minutes(), (f.ended_at - t0()).num_minutes()))
                .collect();
            let wanted = expected.get(&metric).cloned().unwrap_or_default();
            proptest::prop_assert_eq!(found, wanted, "{:?} under version {}", metric, version);
        }
        let messages = events.iter().filter(|e| matches!(e, ConversationEvent::MessageAdded { .. })).count();
        let counted = [Metric::IncomingMessage, Metric::OutgoingMessage, Metric::PrivateNote]
            .into_iter()
            .map(|m| reported.of(m).len())
            .sum::<usize>();
        proptest::prop_assert_eq!(counted, messages);
    }
}
