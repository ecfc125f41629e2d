//! Given/when/then tests for every clock rule: each gives a conversation's events and a policy,
//! and checks the timers' events or state that follow.

use chrono::{DateTime, Duration, TimeZone, Utc, Weekday};
use cqrs_es::test::TestFramework;
use serde_json::Map;

use super::*;
use crate::calendar::Calendar;
use crate::channel::Channel;
use crate::context::{Actor, ActorKind};
use crate::conversation::{
    GroupType, MessageContent, MessageType, Priority, Sender, SenderKind, StatusReason, Visibility,
};
use crate::hours::{LocalTime, WeeklyInterval};
use crate::ids::{ContactId, MessageId};

fn t0() -> DateTime<Utc> {
    // A Monday, 10:00 in Berlin.
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid time")
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn conversation_id() -> ConversationId {
    ConversationId(Uuid::from_u128(1))
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

fn policy_id() -> Uuid {
    Uuid::from_u128(10)
}

fn target(metric: Metric, minutes: i64) -> Target {
    Target {
        metric,
        priority: None,
        threshold_seconds: minutes * 60,
        business_hours: false,
        calendar_id: None,
        warnings: Vec::new(),
        pause_statuses: policy::default_pause_statuses(),
        bot_replies_count: false,
    }
}

fn policy(targets: Vec<Target>) -> CatalogPolicy {
    let long_ago = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid time");
    policy_version(1, targets, long_ago)
}

fn policy_version(version: u32, targets: Vec<Target>, recorded_at: DateTime<Utc>) -> CatalogPolicy {
    CatalogPolicy {
        version: PolicyVersion {
            policy_id: policy_id(),
            version,
            policy: SlaPolicy {
                name: "Standard".into(),
                rank: 0,
                enabled: true,
                conditions: Conditions::default(),
                targets,
            },
        },
        recorded_at,
    }
}

fn catalog(targets: Vec<Target>) -> Catalog {
    Catalog { policies: vec![policy(targets)], calendars: Vec::new() }
}

fn opened_at(when: DateTime<Utc>) -> ConversationEvent {
    ConversationEvent::ConversationOpened {
        conversation_id: conversation_id(),
        tenant_id: tenant(),
        number: 1,
        contact_id: ContactId(Uuid::from_u128(2)),
        channel: Channel::Whatsapp,
        inbox_id: Some("support".into()),
        subject: None,
        priority: Priority::Medium,
        status: Status::Open,
        custom_fields: Map::new(),
        labels: Vec::new(),
        group_type: GroupType::Individual,
        group_id: None,
        opened_at: when,
    }
}

fn opened() -> ConversationEvent {
    opened_at(t0())
}

fn message(kind: SenderKind, id: &str, visibility: Visibility, when: DateTime<Utc>) -> ConversationEvent {
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
        created_at: when,
    }
}

fn customer(when: DateTime<Utc>) -> ConversationEvent {
    message(SenderKind::Customer, "contact", Visibility::Public, when)
}

fn reply(agent: &str, when: DateTime<Utc>) -> ConversationEvent {
    message(SenderKind::User, agent, Visibility::Public, when)
}

fn status(from: Status, to: Status, when: DateTime<Utc>) -> ConversationEvent {
    ConversationEvent::StatusChanged {
        from,
        to,
        snoozed_until: None,
        reason: StatusReason::Requested,
        changed_at: when,
    }
}

fn assigned(agent: &str, when: DateTime<Utc>) -> ConversationEvent {
    ConversationEvent::ConversationAssigned {
        assignee_id: Some(agent.into()),
        team_id: None,
        previous_assignee_id: None,
        previous_team_id: None,
        assigned_at: when,
    }
}

/// The clocks of a conversation fed events one batch at a time, as the SLA process feeds them.
struct Clocks {
    state: ConversationSla,
    catalog: Catalog,
    sequence: u64,
}

impl Clocks {
    fn given(catalog: Catalog, events: Vec<ConversationEvent>) -> Self {
        let mut clocks = Self { state: ConversationSla::default(), catalog, sequence: 0 };
        clocks.when(events);
        clocks
    }

    fn when(&mut self, events: Vec<ConversationEvent>) -> Vec<SlaEvent> {
        let numbered = events
            .into_iter()
            .map(|event| {
                self.sequence += 1;
                (self.sequence, event)
            })
            .collect();
        let decided = clock::observe(&self.state, conversation_id(), tenant(), numbered, &self.catalog);
        for event in decided.clone() {
            self.state.apply(event);
        }
        decided
    }

    fn fire(&mut self, timer_id: &str, now: DateTime<Utc>) -> Vec<SlaEvent> {
        let decided = clock::fire(&self.state, timer_id, now);
        for event in decided.clone() {
            self.state.apply(event);
        }
        decided
    }

    fn timer(&self, timer_id: &str) -> &Timer {
        self.state.timer(timer_id).unwrap_or_else(|| panic!("no timer {timer_id}: {:#?}", self.state.timers))
    }
}

fn types(events: &[SlaEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            format!("{}{}", event.event_type(), event.timer_id().map(|t| format!(" {t}")).unwrap_or_default())
        })
        .collect()
}

#[test]
fn opening_starts_first_response_and_resolution_due_after_their_thresholds() {
    let clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::FirstResolution, 480)]),
        vec![opened()],
    );
    assert_eq!(clocks.timer("first_response").due_at, Some(at(60)));
    assert_eq!(clocks.timer("first_resolution").due_at, Some(at(480)));
    assert_eq!(clocks.state.policy.as_ref().map(|p| p.version), Some(1));
}

#[test]
fn a_public_human_reply_fulfils_first_response_but_a_private_note_or_a_bot_does_not() {
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60)]), vec![opened()]);
    let events = clocks.when(vec![
        message(SenderKind::User, "ada", Visibility::Internal, at(5)),
        message(SenderKind::Bot, "bot", Visibility::Public, at(6)),
    ]);
    assert!(events.iter().all(|e| !matches!(e, SlaEvent::SlaTimerFulfilled { .. })), "{events:?}");
    let events = clocks.when(vec![reply("ada", at(20))]);
    assert!(events.contains(&SlaEvent::SlaTimerFulfilled {
        timer_id: "first_response".into(),
        calendar_seconds: 1200,
        business_seconds: 1200,
        overrun_seconds: 0,
        breached: false,
        at: at(20),
    }));
}

#[test]
fn a_bot_reply_fulfils_first_response_when_the_target_counts_bots() {
    let mut counting = target(Metric::FirstResponse, 60);
    counting.bot_replies_count = true;
    let mut clocks = Clocks::given(catalog(vec![counting]), vec![opened()]);
    clocks.when(vec![message(SenderKind::Bot, "bot", Visibility::Public, at(1))]);
    assert_eq!(clocks.timer("first_response").state, TimerState::Fulfilled);
}

#[test]
fn next_response_starts_at_the_first_customer_message_after_a_reply_and_stops_at_the_next_reply() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::NextResponse, 30)]),
        vec![opened(), customer(at(1)), reply("ada", at(10))],
    );
    clocks.when(vec![customer(at(20)), customer(at(25))]);
    let next = clocks.timer("next_response:1");
    assert_eq!((next.started_at, next.due_at), (at(20), Some(at(50))));
    clocks.when(vec![reply("ada", at(40))]);
    assert_eq!(clocks.timer("next_response:1").business_seconds, 20 * 60);
    clocks.when(vec![customer(at(41))]);
    assert_eq!(clocks.timer("next_response:2").started_at, at(41));
}

#[test]
fn an_act_records_what_the_clocks_read_once_first_and_nothing_for_events_that_move_nothing() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::NextResponse, 30)]),
        vec![opened(), customer(at(1))],
    );
    // Sequences 3 to 6: a reply, a wait, a second customer message (no change), a reply.
    let events =
        clocks.when(vec![reply("ada", at(10)), customer(at(20)), customer(at(25)), reply("ada", at(40))]);
    assert_eq!(
        types(&events),
        [
            "SlaObserved",
            "SlaTimerFulfilled first_response",
            "SlaTimerStarted next_response:1",
            "SlaTimerFulfilled next_response:1"
        ]
    );
    let SlaEvent::SlaObserved { through, facts, .. } = &events[0] else { unreachable!() };
    assert_eq!((*through, facts), (6, &clocks.state.facts), "the last event seen, and the facts after it");
    assert!(facts.human.replied && facts.human.since.is_none(), "{facts:?}");
    assert_eq!(clocks.state.observed, 6);
    // An act whose events move nothing records nothing; the next act reads them again.
    assert!(clocks.when(vec![message(SenderKind::User, "ada", Visibility::Internal, at(41))]).is_empty());
    assert_eq!(clocks.state.observed, 6);
}

#[test]
fn resolving_cancels_next_response_and_never_counts_after() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::NextResponse, 30)]),
        vec![opened(), reply("ada", at(1)), customer(at(2))],
    );
    let events = clocks.when(vec![status(Status::Open, Status::Closed, at(10))]);
    assert!(events.contains(&SlaEvent::SlaTimerCancelled {
        timer_id: "next_response:1".into(),
        reason: CancelReason::Resolved,
        business_seconds: 8 * 60,
        at: at(10),
    }));
    assert!(clocks.fire("next_response:1", at(100)).is_empty(), "a cancelled timer never breaches");
}

#[test]
fn a_reopen_starts_a_new_resolution_cycle_carrying_the_time_spent_but_no_new_first_response() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::TotalResolution, 120)]),
        vec![opened(), status(Status::Open, Status::Closed, at(30))],
    );
    assert_eq!(clocks.timer("total_resolution:1").business_seconds, 30 * 60);
    clocks.when(vec![status(Status::Closed, Status::Open, at(100))]);
    let cycle = clocks.timer("total_resolution:2");
    assert_eq!((cycle.started_at, cycle.due_at), (at(100), Some(at(190))));
    assert_eq!(clocks.timer("first_response").state, TimerState::Cancelled);
    assert_eq!(clocks.state.timers.iter().filter(|t| t.metric == Metric::FirstResponse).count(), 1);
}

#[test]
fn pending_pauses_the_clock_and_reopening_resumes_it_with_a_later_due() {
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60)]), vec![opened()]);
    clocks.when(vec![status(Status::Open, Status::Pending, at(10))]);
    assert_eq!(clocks.timer("first_response").state, TimerState::Paused);
    assert!(clocks.fire("first_response", at(70)).is_empty(), "a paused timer does not breach");
    clocks.when(vec![status(Status::Pending, Status::Open, at(100))]);
    assert_eq!(clocks.timer("first_response").due_at, Some(at(150)));
}

#[test]
fn warnings_and_the_breach_are_recorded_once_at_their_computed_times() {
    let mut warned = target(Metric::FirstResponse, 60);
    warned.warnings = vec![Warning::Percent(50), Warning::BeforeSeconds(600)];
    let mut clocks = Clocks::given(catalog(vec![warned]), vec![opened()]);
    assert_eq!(types(&clocks.fire("first_response", at(29))), Vec::<String>::new());
    let events = clocks.fire("first_response", at(55));
    assert_eq!(
        events,
        vec![
            SlaEvent::SlaTimerWarned { timer_id: "first_response".into(), level: 0, at: at(30) },
            SlaEvent::SlaTimerWarned { timer_id: "first_response".into(), level: 1, at: at(50) },
        ]
    );
    let late = clocks.fire("first_response", at(90));
    assert_eq!(late, vec![SlaEvent::SlaTimerBreached { timer_id: "first_response".into(), at: at(60) }]);
    assert!(clocks.fire("first_response", at(91)).is_empty(), "firing again records nothing");
    assert_eq!(clocks.timer("first_response").next_deadline(), None);
}

#[test]
fn a_reply_after_an_unnoticed_due_records_the_breach_at_the_due_then_the_overrun() {
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60)]), vec![opened()]);
    let events = clocks.when(vec![reply("ada", at(75))]);
    assert_eq!(
        types(&events),
        ["SlaObserved", "SlaTimerBreached first_response", "SlaTimerFulfilled first_response"]
    );
    assert!(events.contains(&SlaEvent::SlaTimerFulfilled {
        timer_id: "first_response".into(),
        calendar_seconds: 75 * 60,
        business_seconds: 75 * 60,
        overrun_seconds: 15 * 60,
        breached: true,
        at: at(75),
    }));
}

#[test]
fn an_assignment_response_is_fulfilled_only_by_the_assignee_and_a_reassignment_starts_another() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::AssignmentResponse, 15)]),
        vec![opened(), assigned("ada", at(5))],
    );
    clocks.when(vec![reply("grace", at(6))]);
    assert_eq!(clocks.timer("assignment_response:1").state, TimerState::Running);
    clocks.when(vec![assigned("grace", at(7))]);
    assert_eq!(clocks.timer("assignment_response:1").state, TimerState::Cancelled);
    let events = clocks.when(vec![reply("grace", at(9))]);
    assert_eq!(types(&events), ["SlaObserved", "SlaTimerFulfilled assignment_response:2"]);
}

#[test]
fn a_priority_change_retargets_live_timers_keeping_their_start() {
    let mut urgent = target(Metric::FirstResponse, 10);
    urgent.priority = Some(Priority::Urgent);
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60), urgent]), vec![opened()]);
    clocks.when(vec![ConversationEvent::PriorityChanged {
        from: Priority::Medium,
        to: Priority::Urgent,
        changed_at: at(4),
    }]);
    let timer = clocks.timer("first_response");
    assert_eq!((timer.started_at, timer.clock.threshold_seconds), (t0(), 600));
    assert_eq!(timer.due_at, Some(at(10)), "4 minutes spent, 6 left");
}

#[test]
fn a_policy_revised_mid_timer_leaves_the_running_timer_and_applies_to_the_next() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::NextResponse, 30)]),
        vec![opened()],
    );
    clocks.catalog.policies = vec![policy_version(
        2,
        vec![target(Metric::FirstResponse, 5), target(Metric::NextResponse, 10)],
        at(1),
    )];
    clocks.when(vec![customer(at(2))]);
    assert_eq!(
        clocks.timer("first_response").clock.threshold_seconds,
        3600,
        "running timers keep their terms"
    );
    clocks.when(vec![reply("ada", at(3)), customer(at(4))]);
    let next = clocks.timer("next_response:1");
    assert_eq!((next.clock.policy_version, next.due_at), (2, Some(at(14))));
}

#[test]
fn a_policy_does_not_start_timers_for_what_happened_before_it_was_recorded() {
    let late = Catalog {
        policies: vec![policy_version(1, vec![target(Metric::FirstResponse, 60)], at(30))],
        calendars: Vec::new(),
    };
    let clocks = Clocks::given(late, vec![opened(), customer(at(40))]);
    assert!(clocks.state.timers.is_empty(), "{:?}", clocks.state.timers);
    assert!(clocks.state.policy.is_some(), "the policy applies; only its timers wait for later starts");
}

#[test]
fn a_tenant_without_policies_records_nothing() {
    let clocks = Clocks::given(Catalog::default(), vec![opened(), customer(at(1))]);
    assert_eq!(clocks.state, ConversationSla::default());
}

#[test]
fn events_already_seen_are_passed_over() {
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60)]), vec![opened()]);
    let again =
        clock::observe(&clocks.state, conversation_id(), tenant(), vec![(1, opened())], &clocks.catalog);
    assert!(again.is_empty());
    clocks.sequence = 1;
    assert!(!clocks.when(vec![reply("ada", at(1))]).is_empty());
}

#[test]
fn deleting_the_conversation_cancels_every_live_timer() {
    let mut clocks = Clocks::given(
        catalog(vec![target(Metric::FirstResponse, 60), target(Metric::FirstResolution, 600)]),
        vec![opened()],
    );
    clocks.when(vec![ConversationEvent::ConversationDeleted { deleted_at: at(3) }]);
    assert!(clocks.state.timers.iter().all(|t| t.state == TimerState::Cancelled));
}

fn berlin_office() -> crate::calendar::CalendarVersion {
    let weekday = |weekday| WeeklyInterval {
        weekday,
        start: LocalTime::from_hm(9, 0).expect("valid time"),
        end: LocalTime::from_hm(17, 0).expect("valid time"),
    };
    crate::calendar::CalendarVersion {
        calendar_id: Uuid::from_u128(20),
        version: 3,
        calendar: Calendar {
            name: "Berlin".into(),
            hours: BusinessHours {
                time_zone: chrono_tz::Europe::Berlin,
                weekly: [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]
                    .into_iter()
                    .map(weekday)
                    .collect(),
                exceptions: Vec::new(),
            },
            inbox_ids: vec!["support".into()],
            tenant_default: false,
        },
    }
}

#[test]
fn a_business_hours_target_counts_only_the_inboxs_calendar_hours() {
    let mut business = target(Metric::FirstResponse, 120);
    business.business_hours = true;
    let mut catalog = catalog(vec![business]);
    catalog.calendars = vec![berlin_office()];
    // Friday 16:00 Berlin: one business hour left that day, the second on Monday at 10:00.
    let friday = Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).single().expect("valid time");
    let clocks = Clocks::given(catalog, vec![opened_at(friday)]);
    let timer = clocks.timer("first_response");
    assert_eq!((timer.clock.calendar_id, timer.clock.calendar_version), (Some(Uuid::from_u128(20)), Some(3)));
    assert_eq!(timer.due_at, Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).single());
}

#[test]
fn a_pause_inside_a_business_break_counts_nothing_and_resumes_on_the_remaining_business_time() {
    let mut business = target(Metric::FirstResponse, 120);
    business.business_hours = true;
    let mut catalog = catalog(vec![business]);
    catalog.calendars = vec![berlin_office()];
    let friday_1600 = Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).single().expect("valid time");
    let saturday = friday_1600 + Duration::hours(20);
    let sunday = saturday + Duration::hours(24);
    let mut clocks = Clocks::given(catalog, vec![opened_at(friday_1600)]);
    clocks.when(vec![
        status(Status::Open, Status::Pending, saturday),
        status(Status::Pending, Status::Open, sunday),
    ]);
    let timer = clocks.timer("first_response");
    assert_eq!(timer.business_seconds, 3600, "Friday's last hour only");
    assert_eq!(timer.due_at, Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).single());
}

#[test]
fn firing_a_timer_of_a_conversation_without_clocks_is_refused() {
    TestFramework::<ConversationSla>::with(CommandContext::new(
        t0(),
        Actor { kind: ActorKind::System, id: "sla".into() },
    ))
    .given_no_previous_events()
    .when(SlaCommand::Fire { timer_id: "first_response".into() })
    .then_expect_error(SlaError::NotFound);
}

#[test]
fn an_explicitly_applied_policy_holds_over_the_conditions() {
    let mut clocks = Clocks::given(catalog(vec![target(Metric::FirstResponse, 60)]), vec![opened()]);
    let vip = PolicyVersion {
        policy_id: Uuid::from_u128(11),
        version: 1,
        policy: SlaPolicy {
            name: "VIP".into(),
            rank: 5,
            enabled: true,
            conditions: Conditions::default(),
            targets: vec![target(Metric::FirstResponse, 15)],
        },
    };
    clocks
        .catalog
        .policies
        .push(CatalogPolicy { version: vip.clone(), recorded_at: t0() - Duration::days(1) });
    for event in clock::apply_explicitly(&clocks.state, Some(vip), &clocks.catalog, at(5)) {
        clocks.state.apply(event);
    }
    assert_eq!(clocks.timer("first_response").due_at, Some(at(15)));
    clocks.when(vec![ConversationEvent::PriorityChanged {
        from: Priority::Medium,
        to: Priority::High,
        changed_at: at(6),
    }]);
    assert_eq!(clocks.state.policy.as_ref().map(|p| p.name.as_str()), Some("VIP"));
}

#[test]
fn a_business_due_across_a_dst_change_lands_on_the_local_hour_after_it() {
    let mut business = target(Metric::FirstResponse, 120);
    business.business_hours = true;
    let mut catalog = catalog(vec![business]);
    catalog.calendars = vec![berlin_office()];
    // Friday 23 October 2026, 16:00 in Berlin (UTC+2); Berlin falls back to UTC+1 on Sunday.
    let friday = Utc.with_ymd_and_hms(2026, 10, 23, 14, 0, 0).single().expect("valid time");
    let clocks = Clocks::given(catalog, vec![opened_at(friday)]);
    // Monday 10:00 in Berlin is 09:00 UTC once winter time applies.
    assert_eq!(clocks.timer("first_response").due_at, Utc.with_ymd_and_hms(2026, 10, 26, 9, 0, 0).single());
}

#[test]
fn the_first_policy_by_rank_whose_conditions_hold_applies_and_a_label_change_moves_to_another() {
    let vip = CatalogPolicy {
        version: PolicyVersion {
            policy_id: Uuid::from_u128(11),
            version: 1,
            policy: SlaPolicy {
                name: "VIP".into(),
                rank: -1,
                enabled: true,
                conditions: Conditions { labels: vec!["vip".into()], ..Conditions::default() },
                targets: vec![target(Metric::FirstResponse, 15)],
            },
        },
        recorded_at: t0() - Duration::days(1),
    };
    let mut catalog = catalog(vec![target(Metric::FirstResponse, 60)]);
    catalog.policies.push(vip);
    let mut clocks = Clocks::given(catalog, vec![opened()]);
    assert_eq!(clocks.state.policy.as_ref().map(|p| p.name.as_str()), Some("Standard"));
    clocks.when(vec![ConversationEvent::LabelsAdded { labels: vec!["vip".into()], changed_at: at(5) }]);
    assert_eq!(clocks.state.policy.as_ref().map(|p| p.name.as_str()), Some("VIP"));
    assert_eq!(clocks.timer("first_response").due_at, Some(at(15)));
}

#[test]
fn recomputed_results_sit_beside_the_live_timers_and_the_same_results_again_record_nothing() {
    let live = clock::observe(
        &ConversationSla::default(),
        conversation_id(),
        tenant(),
        vec![(1, opened())],
        &catalog(vec![target(Metric::FirstResponse, 60)]),
    );
    let stricter = policy_version(2, vec![target(Metric::FirstResponse, 15)], at(200));
    let replayed = whatif::simulate(
        conversation_id(),
        tenant(),
        vec![(1, opened()), (2, reply("ada", at(30)))],
        stricter.version,
        Vec::new(),
        at(300),
    );
    assert!(replayed.timers[0].breached_at.is_some(), "a reply after 30 minutes misses 15");
    let results = Recomputed {
        tenant_id: tenant(),
        policy_id: policy_id(),
        policy_version: 2,
        judged_at: at(300),
        timers: replayed.timers,
    };
    let recorded = SlaEvent::SlaResultsRecomputed {
        tenant_id: tenant(),
        policy_id: policy_id(),
        policy_version: 2,
        judged_at: at(300),
        timers: results.timers.clone(),
    };
    let framework = || {
        TestFramework::<ConversationSla>::with(CommandContext::new(
            at(300),
            Actor { kind: ActorKind::System, id: "recompute".into() },
        ))
    };
    framework()
        .given(live.clone())
        .when(SlaCommand::RecordResults(results.clone()))
        .then_expect_events(vec![recorded.clone()]);
    let mut after = live.clone();
    after.push(recorded);
    framework()
        .given(after.clone())
        .when(SlaCommand::RecordResults(results.clone()))
        .then_expect_events(vec![]);

    let fold = |events: Vec<SlaEvent>| {
        let mut state = ConversationSla::default();
        events.into_iter().for_each(|event| state.apply(event));
        state
    };
    let (before, recomputed) = (fold(live), fold(after));
    assert_eq!(recomputed.timers, before.timers, "the live timers keep their terms");
    assert_eq!(recomputed.recomputed, [results]);
}
