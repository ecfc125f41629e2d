//! The clock rules: what starts, pauses, resumes, retargets, fulfils and cancels each timer, as
//! the best help desks do it.
//!
//! - A **qualifying reply** is a public message by a human agent (`user`), or by a bot or AI
//!   assistant when the target says bot replies count. Private notes and system messages never
//!   are.
//! - **First response** runs from the opening to the first qualifying reply, once: a reopen
//!   starts none.
//! - **Next response** starts at the customer's first public message after the last qualifying
//!   reply and stops at the next one. Resolving stops it (cancelled, never counted after).
//! - **First resolution** runs from the opening to the first resolution; **total resolution**
//!   runs per cycle, a reopen starting the next cycle with the time already spent.
//! - **Assignment response** runs from an assignment to the assignee's first qualifying reply;
//!   a reassignment or unassignment cancels it and a new assignee starts another.
//! - A status in the target's pause list stops the clock; leaving it resumes with a new due.
//! - A change of priority, labels, team or inbox selects the policy again: live timers keep
//!   their start and the time spent and run under the new terms (or are cancelled when it has
//!   no target for them).
//! - A timer starts only at or after the policy version that asks for it was recorded: a policy
//!   change applies to timers that start after it, never to the past.
//!
//! Times come from the conversation's events, never from when they are processed, so a process
//! that runs late records the same history.

use chrono::{DateTime, Utc};

use super::*;
use crate::conversation::{SenderKind, Visibility};

/// Decisions in progress: each event is applied to `state` as it is decided, so later rules read
/// the state it leaves.
struct Draft<'a> {
    state: ConversationSla,
    events: Vec<SlaEvent>,
    catalog: &'a Catalog,
}

impl<'a> Draft<'a> {
    fn new(state: &ConversationSla, catalog: &'a Catalog) -> Self {
        Self { state: state.clone(), events: Vec::new(), catalog }
    }

    fn emit(&mut self, event: SlaEvent) {
        self.state.apply(event.clone());
        self.events.push(event);
    }
}

/// Decides what the conversation's `events` do to its clocks.
pub(super) fn observe(
    state: &ConversationSla,
    conversation_id: ConversationId,
    tenant_id: TenantId,
    events: Vec<(u64, ConversationEvent)>,
    catalog: &Catalog,
) -> Vec<SlaEvent> {
    // A stream begins only once the tenant has a policy: tenants without SLAs record nothing.
    // When it begins later, it reads the conversation from its first event.
    if state.conversation_id.is_none() && catalog.policies.is_empty() {
        return Vec::new();
    }
    let mut draft = Draft::new(state, catalog);
    // Whether any event moved what the clocks read, or a timer.
    let mut moved = false;
    for (sequence, event) in events {
        if sequence > draft.state.observed {
            moved |= draft.step(conversation_id, &tenant_id, sequence, &event);
        }
    }
    // What the clocks read, recorded once for all the events seen, before what they did: each
    // timer event carries its own times.
    if moved {
        let seen = SlaEvent::SlaObserved {
            conversation_id,
            tenant_id,
            through: draft.state.observed,
            facts: draft.state.facts.clone(),
        };
        draft.events.insert(0, seen);
    }
    draft.events
}

/// The warnings and breach of `timer_id` due by `now`, each recorded once, at its computed time.
pub(super) fn fire(state: &ConversationSla, timer_id: &str, now: DateTime<Utc>) -> Vec<SlaEvent> {
    let Some(timer) = state.timer(timer_id).filter(|timer| timer.state == TimerState::Running) else {
        return Vec::new();
    };
    let mut events: Vec<SlaEvent> = timer
        .warn_at
        .iter()
        .enumerate()
        .filter(|(level, at)| !timer.warned.contains(level) && at.is_some_and(|at| at <= now))
        .filter_map(|(level, at)| at.map(|at| (level, at)))
        .map(|(level, at)| SlaEvent::SlaTimerWarned { timer_id: timer_id.to_owned(), level, at })
        .collect();
    if let Some(due) = timer.due_at.filter(|due| *due <= now && timer.breached_at.is_none()) {
        events.push(SlaEvent::SlaTimerBreached { timer_id: timer_id.to_owned(), at: due });
    }
    events
}

/// Applies `policy` by command (or, with none, lets the conditions choose again).
pub(super) fn apply_explicitly(
    state: &ConversationSla,
    policy: Option<PolicyVersion>,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Vec<SlaEvent> {
    let mut draft = Draft::new(state, catalog);
    match policy {
        Some(version) => {
            let applied = AppliedPolicy {
                policy_id: version.policy_id,
                version: version.version,
                name: version.policy.name.clone(),
                explicit: true,
            };
            if draft.state.policy.as_ref() != Some(&applied) {
                draft.emit(SlaEvent::SlaPolicyApplied {
                    policy: Some(applied),
                    reason: ApplyReason::Explicit,
                    applied_at: now,
                });
            }
            draft.retarget(now);
            draft.ensure(now);
        }
        None => draft.select(ApplyReason::ConditionsChanged, now),
    }
    draft.events
}

/// Applies an event about one timer to it.
pub(super) fn apply_to_timer(timer: &mut Timer, event: SlaEvent) {
    match event {
        SlaEvent::SlaTimerPaused { business_seconds, .. } => {
            timer.state = TimerState::Paused;
            timer.business_seconds = business_seconds;
            timer.running_since = None;
            timer.due_at = None;
            timer.warn_at = Vec::new();
        }
        SlaEvent::SlaTimerResumed { due_at, warn_at, resumed_at, .. } => {
            timer.state = TimerState::Running;
            timer.running_since = Some(resumed_at);
            timer.due_at = due_at;
            timer.warn_at = warn_at;
        }
        SlaEvent::SlaTimerRetargeted { clock, business_seconds, due_at, warn_at, retargeted_at, .. } => {
            timer.clock = clock;
            timer.business_seconds = business_seconds;
            if timer.state == TimerState::Running {
                timer.running_since = Some(retargeted_at);
            }
            timer.due_at = due_at;
            timer.warn_at = warn_at;
        }
        SlaEvent::SlaTimerWarned { level, .. } => timer.warned.push(level),
        SlaEvent::SlaTimerBreached { at, .. } => timer.breached_at = Some(at),
        SlaEvent::SlaTimerFulfilled { business_seconds, at, .. } => {
            stop(timer, TimerState::Fulfilled, business_seconds, at);
        }
        SlaEvent::SlaTimerCancelled { business_seconds, at, .. } => {
            stop(timer, TimerState::Cancelled, business_seconds, at);
        }
        SlaEvent::SlaObserved { .. }
        | SlaEvent::SlaPolicyApplied { .. }
        | SlaEvent::SlaResultsRecomputed { .. }
        | SlaEvent::SlaTimerStarted { .. } => {}
    }
}

fn stop(timer: &mut Timer, state: TimerState, business_seconds: i64, at: DateTime<Utc>) {
    timer.state = state;
    timer.business_seconds = business_seconds;
    timer.running_since = None;
    timer.due_at = None;
    timer.warn_at = Vec::new();
    timer.stopped_at = Some(at);
}

/// The conversation's facts after `event`.
fn observed(before: &Facts, event: &ConversationEvent) -> Facts {
    let mut facts = before.clone();
    match event {
        ConversationEvent::ConversationOpened {
            inbox_id,
            channel,
            priority,
            status,
            labels,
            group_type,
            opened_at,
            ..
        } => {
            facts.subject = Subject {
                inbox_id: inbox_id.clone(),
                channel: Some(*channel),
                priority: *priority,
                labels: labels.iter().cloned().collect(),
                team_id: None,
                group_type: *group_type,
            };
            facts.status = *status;
            facts.opened_at = Some(*opened_at);
            facts.cycle = 1;
            facts.cycle_started_at = Some(*opened_at);
        }
        ConversationEvent::PriorityChanged { to, .. } => facts.subject.priority = *to,
        ConversationEvent::StatusChanged { from, to, changed_at, .. } => {
            facts.status = *to;
            if *to == Status::Closed {
                facts.human.since = None;
                facts.any.since = None;
            } else if *from == Status::Closed {
                facts.cycle += 1;
                facts.cycle_started_at = Some(*changed_at);
            }
        }
        ConversationEvent::ConversationAssigned { assignee_id, team_id, assigned_at, .. } => {
            facts.subject.team_id = team_id.clone();
            if facts.assignee_id != *assignee_id {
                facts.assignee_id = assignee_id.clone();
                facts.assigned_at = assignee_id.as_ref().map(|_| *assigned_at);
            }
        }
        ConversationEvent::ConversationUnassigned { .. } => {
            facts.subject.team_id = None;
            facts.assignee_id = None;
            facts.assigned_at = None;
        }
        ConversationEvent::LabelsAdded { labels, .. } => facts.subject.labels.extend(labels.iter().cloned()),
        ConversationEvent::LabelsRemoved { labels, .. } => {
            for label in labels {
                facts.subject.labels.remove(label);
            }
        }
        ConversationEvent::ConversationDeleted { .. } => facts.deleted = true,
        ConversationEvent::MessageAdded { sender, visibility: Visibility::Public, created_at, .. } => {
            if sender.kind.is_incoming() {
                for waiting in [&mut facts.human, &mut facts.any] {
                    if waiting.replied && waiting.since.is_none() {
                        waiting.since = Some(*created_at);
                    }
                }
            } else if let Some(human) = reply_by_human(sender.kind) {
                let replied = Waiting { replied: true, since: None };
                if human {
                    facts.human = replied.clone();
                }
                facts.any = replied;
            }
        }
        _ => {}
    }
    facts
}

/// For a sender that replies: whether a human did (`Some(false)` for a bot or AI assistant).
/// `None` for the customer's side and the system.
fn reply_by_human(kind: SenderKind) -> Option<bool> {
    match kind {
        SenderKind::User => Some(true),
        SenderKind::Bot | SenderKind::AiAssistant => Some(false),
        SenderKind::Customer | SenderKind::Visitor | SenderKind::System => None,
    }
}

/// A timer's breach and warning times when it counts from `since` with `spent` seconds already
/// counted. A warning whose moment had passed is not given late (none). The business-time
/// functions count whole seconds, so the count starts at the next whole second: a timer is never
/// due early.
fn times(
    hours: &BusinessHours,
    clock: &Clock,
    since: DateTime<Utc>,
    spent: i64,
) -> (Option<DateTime<Utc>>, Vec<Option<DateTime<Utc>>>) {
    let since = match since.timestamp_subsec_nanos() {
        0 => since,
        nanos => since + chrono::Duration::nanoseconds(1_000_000_000 - i64::from(nanos)),
    };
    let due = hours.add(since, (clock.threshold_seconds - spent).max(0));
    let warn_at = clock
        .warnings
        .iter()
        .map(|warning| {
            let at = warning.elapsed_at(clock.threshold_seconds);
            (at > spent).then(|| hours.add(since, at - spent)).flatten()
        })
        .collect();
    (due, warn_at)
}

impl Draft<'_> {
    /// Reads one event, then applies the rules to it; whether it changed what the clocks read or
    /// moved a timer.
    fn step(
        &mut self,
        conversation_id: ConversationId,
        tenant_id: &TenantId,
        sequence: u64,
        event: &ConversationEvent,
    ) -> bool {
        let before = self.state.facts.clone();
        let facts = observed(&before, event);
        let changed = facts != before;
        let mark = self.events.len();
        // Read into the draft's state only: the act records one `SlaObserved` for all its events.
        self.state.apply(SlaEvent::SlaObserved {
            conversation_id,
            tenant_id: tenant_id.clone(),
            through: sequence,
            facts,
        });
        self.rules(&before, event, event.occurred_at());
        changed || self.events.len() > mark
    }

    fn rules(&mut self, before: &Facts, event: &ConversationEvent, at: DateTime<Utc>) {
        match event {
            ConversationEvent::ConversationOpened { .. } => return self.reselect(ApplyReason::Opened, at),
            ConversationEvent::MessageAdded { sender, visibility: Visibility::Public, .. } => {
                if let Some(human) = reply_by_human(sender.kind) {
                    self.replied(human, sender.id.as_deref(), at);
                }
            }
            ConversationEvent::StatusChanged { to, .. } => self.status_changed(*to, at),
            ConversationEvent::ConversationAssigned { .. }
            | ConversationEvent::ConversationUnassigned { .. }
                if before.assignee_id != self.state.facts.assignee_id =>
            {
                self.cancel_where(
                    |timer| timer.metric == Metric::AssignmentResponse,
                    CancelReason::Reassigned,
                    at,
                );
            }
            ConversationEvent::ConversationDeleted { .. } => {
                return self.cancel_where(|_| true, CancelReason::Deleted, at);
            }
            _ => {}
        }
        if before.subject != self.state.facts.subject {
            self.reselect(ApplyReason::ConditionsChanged, at);
        } else {
            self.ensure(at);
        }
    }

    fn replied(&mut self, human: bool, sender_id: Option<&str>, at: DateTime<Utc>) {
        let fulfilled: Vec<String> = self
            .live()
            .filter(|timer| human || timer.clock.bot_replies_count)
            .filter(|timer| match timer.metric {
                Metric::FirstResponse | Metric::NextResponse => true,
                Metric::AssignmentResponse => timer.assignee_id.as_deref() == sender_id,
                Metric::FirstResolution | Metric::TotalResolution => false,
            })
            .map(|timer| timer.timer_id.clone())
            .collect();
        for timer_id in fulfilled {
            self.fulfil(&timer_id, at);
        }
    }

    fn status_changed(&mut self, to: Status, at: DateTime<Utc>) {
        if to == Status::Closed {
            let live: Vec<(String, Metric)> = self.live().map(|t| (t.timer_id.clone(), t.metric)).collect();
            for (timer_id, metric) in live {
                match metric {
                    Metric::FirstResolution | Metric::TotalResolution => self.fulfil(&timer_id, at),
                    _ => self.cancel(&timer_id, CancelReason::Resolved, at),
                }
            }
            return;
        }
        let live: Vec<Timer> = self.live().cloned().collect();
        for timer in live {
            let pauses = timer.clock.pause_statuses.contains(&to);
            match timer.state {
                TimerState::Running if pauses => self.pause(&timer, to, at),
                TimerState::Paused if !pauses => self.resume(&timer, at),
                _ => {}
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Timer> {
        self.state.timers.iter().filter(|timer| timer.is_live())
    }

    /// Records a breach the timer service had not yet seen, before the timer stops: it breached
    /// at its due time whether or not anyone noticed then.
    fn breach_if_overdue(&mut self, timer: &Timer, at: DateTime<Utc>) {
        if let Some(due) = timer.due_at.filter(|due| *due <= at && timer.breached_at.is_none()) {
            self.emit(SlaEvent::SlaTimerBreached { timer_id: timer.timer_id.clone(), at: due });
        }
    }

    fn fulfil(&mut self, timer_id: &str, at: DateTime<Utc>) {
        let Some(timer) = self.state.timer(timer_id).cloned() else { return };
        self.breach_if_overdue(&timer, at);
        let business_seconds = self.catalog.counted(&timer, at);
        let overrun_seconds = (business_seconds - timer.clock.threshold_seconds).max(0);
        self.emit(SlaEvent::SlaTimerFulfilled {
            timer_id: timer.timer_id.clone(),
            calendar_seconds: (at - timer.started_at).num_seconds().max(0),
            business_seconds,
            overrun_seconds,
            breached: timer.breached_at.is_some() || timer.due_at.is_some_and(|due| due <= at),
            at,
        });
    }

    fn cancel(&mut self, timer_id: &str, reason: CancelReason, at: DateTime<Utc>) {
        let Some(timer) = self.state.timer(timer_id).cloned() else { return };
        self.breach_if_overdue(&timer, at);
        let business_seconds = self.catalog.counted(&timer, at);
        self.emit(SlaEvent::SlaTimerCancelled {
            timer_id: timer.timer_id.clone(),
            reason,
            business_seconds,
            at,
        });
    }

    fn cancel_where(&mut self, which: impl Fn(&Timer) -> bool, reason: CancelReason, at: DateTime<Utc>) {
        let ids: Vec<String> = self.live().filter(|timer| which(timer)).map(|t| t.timer_id.clone()).collect();
        for timer_id in ids {
            self.cancel(&timer_id, reason, at);
        }
    }

    fn pause(&mut self, timer: &Timer, status: Status, at: DateTime<Utc>) {
        self.breach_if_overdue(timer, at);
        let business_seconds = self.catalog.counted(timer, at);
        self.emit(SlaEvent::SlaTimerPaused {
            timer_id: timer.timer_id.clone(),
            status,
            business_seconds,
            paused_at: at,
        });
    }

    fn resume(&mut self, timer: &Timer, at: DateTime<Utc>) {
        let (due_at, warn_at) =
            times(&self.catalog.hours(&timer.clock), &timer.clock, at, timer.business_seconds);
        self.emit(SlaEvent::SlaTimerResumed {
            timer_id: timer.timer_id.clone(),
            due_at,
            warn_at,
            resumed_at: at,
        });
    }

    /// Selects the policy by the conditions (unless one was applied by command) and puts the
    /// live timers under its terms.
    fn reselect(&mut self, reason: ApplyReason, at: DateTime<Utc>) {
        if self.state.policy.as_ref().is_some_and(|policy| policy.explicit) {
            return self.ensure(at);
        }
        self.select(reason, at);
    }

    /// Selects the policy by the conditions, even over one applied by command.
    fn select(&mut self, reason: ApplyReason, at: DateTime<Utc>) {
        let selected =
            policy::select(self.catalog.policies.iter().map(|p| &p.version), &self.state.facts.subject);
        let applied = selected.map(|version| AppliedPolicy {
            policy_id: version.policy_id,
            version: version.version,
            name: version.policy.name.clone(),
            explicit: false,
        });
        if applied != self.state.policy {
            self.emit(SlaEvent::SlaPolicyApplied { policy: applied, reason, applied_at: at });
        }
        self.retarget(at);
        self.ensure(at);
    }

    /// The applied policy's current version in the catalog, moving the conversation to it when
    /// it was revised since: new timers start under the newest version.
    fn policy(&mut self, at: DateTime<Utc>) -> Option<CatalogPolicy> {
        let applied = self.state.policy.clone()?;
        let current =
            self.catalog.policies.iter().find(|p| p.version.policy_id == applied.policy_id)?.clone();
        if current.version.version != applied.version {
            let policy = AppliedPolicy {
                version: current.version.version,
                name: current.version.policy.name.clone(),
                ..applied
            };
            self.emit(SlaEvent::SlaPolicyApplied {
                policy: Some(policy),
                reason: ApplyReason::Revised,
                applied_at: at,
            });
        }
        Some(current)
    }

    /// The terms `target` of `policy` gives the conversation now.
    fn clock(&self, policy: &PolicyVersion, target: &Target) -> Clock {
        let calendar = if !target.business_hours {
            None
        } else if let Some(id) = target.calendar_id {
            self.catalog.calendars.iter().find(|c| c.calendar_id == id)
        } else {
            crate::calendar::for_inbox(&self.catalog.calendars, self.state.facts.subject.inbox_id.as_deref())
        };
        Clock {
            policy_id: policy.policy_id,
            policy_version: policy.version,
            threshold_seconds: target.threshold_seconds,
            calendar_id: calendar.map(|c| c.calendar_id),
            calendar_version: calendar.map(|c| c.version),
            warnings: target.warnings.clone(),
            pause_statuses: target.pause_statuses.clone(),
            bot_replies_count: target.bot_replies_count,
        }
    }

    /// Puts every live timer under the applied policy's terms for it, or cancels it when the
    /// policy has no target for it. Each keeps its start and the time it has counted.
    fn retarget(&mut self, at: DateTime<Utc>) {
        let policy = self.policy(at);
        let live: Vec<Timer> = self.live().cloned().collect();
        for timer in live {
            let target = policy.as_ref().and_then(|p| {
                p.version.policy.target(timer.metric, self.state.facts.subject.priority).map(|t| (p, t))
            });
            let Some((policy, target)) = target else {
                self.cancel(&timer.timer_id, CancelReason::NoTarget, at);
                continue;
            };
            let clock = self.clock(&policy.version, target);
            if clock == timer.clock {
                continue;
            }
            self.breach_if_overdue(&timer, at);
            let business_seconds = self.catalog.counted(&timer, at);
            let (due_at, warn_at) = if timer.state == TimerState::Running {
                times(&self.catalog.hours(&clock), &clock, at, business_seconds)
            } else {
                (None, Vec::new())
            };
            self.emit(SlaEvent::SlaTimerRetargeted {
                timer_id: timer.timer_id.clone(),
                clock,
                business_seconds,
                due_at,
                warn_at,
                retargeted_at: at,
            });
        }
    }

    /// Starts each timer the conversation now calls for and does not have, from the instant it
    /// calls for it since.
    fn ensure(&mut self, at: DateTime<Utc>) {
        let facts = self.state.facts.clone();
        if facts.deleted || facts.status == Status::Closed {
            return;
        }
        let Some(policy) = self.policy(at) else { return };
        let has = |metric: Metric, state: &ConversationSla| state.timers.iter().any(|t| t.metric == metric);
        let priority = facts.subject.priority;
        let target = |metric| policy.version.policy.target(metric, priority);
        if let (Some(target), Some(opened_at)) = (target(Metric::FirstResponse), facts.opened_at) {
            if !has(Metric::FirstResponse, &self.state) && !facts.waiting(target.bot_replies_count).replied {
                self.start(&policy, Metric::FirstResponse, "first_response".into(), opened_at, 0, None);
            }
        }
        if let (Some(_), Some(opened_at)) = (target(Metric::FirstResolution), facts.opened_at) {
            if !has(Metric::FirstResolution, &self.state) && facts.cycle == 1 {
                self.start(&policy, Metric::FirstResolution, "first_resolution".into(), opened_at, 0, None);
            }
        }
        if let (Some(_), Some(since)) = (target(Metric::TotalResolution), facts.cycle_started_at) {
            let timer_id = format!("total_resolution:{}", facts.cycle);
            if self.state.timer(&timer_id).is_none() {
                let carried = self
                    .state
                    .timers
                    .iter()
                    .rev()
                    .find(|t| t.metric == Metric::TotalResolution)
                    .map_or(0, |t| t.business_seconds);
                self.start(&policy, Metric::TotalResolution, timer_id, since, carried, None);
            }
        }
        if let Some(target) = target(Metric::NextResponse) {
            let since = facts.waiting(target.bot_replies_count).since;
            let live = self.live().any(|t| t.metric == Metric::NextResponse);
            if let (Some(since), false) = (since, live) {
                let timer_id = format!("next_response:{}", self.count(Metric::NextResponse) + 1);
                self.start(&policy, Metric::NextResponse, timer_id, since, 0, None);
            }
        }
        if let (Some(_), Some(assignee), Some(since)) =
            (target(Metric::AssignmentResponse), facts.assignee_id.clone(), facts.assigned_at)
        {
            let started = self
                .state
                .timers
                .iter()
                .any(|t| t.metric == Metric::AssignmentResponse && t.started_at >= since);
            if !started {
                let timer_id = format!("assignment_response:{}", self.count(Metric::AssignmentResponse) + 1);
                self.start(&policy, Metric::AssignmentResponse, timer_id, since, 0, Some(assignee));
            }
        }
    }

    fn count(&self, metric: Metric) -> usize {
        self.state.timers.iter().filter(|t| t.metric == metric).count()
    }

    fn start(
        &mut self,
        policy: &CatalogPolicy,
        metric: Metric,
        timer_id: String,
        started_at: DateTime<Utc>,
        carried_seconds: i64,
        assignee_id: Option<String>,
    ) {
        let Some(target) = policy.version.policy.target(metric, self.state.facts.subject.priority) else {
            return;
        };
        if started_at < policy.recorded_at {
            return;
        }
        let clock = self.clock(&policy.version, target);
        let (due_at, warn_at) = times(&self.catalog.hours(&clock), &clock, started_at, carried_seconds);
        let status = self.state.facts.status;
        let pauses = clock.pause_statuses.contains(&status);
        self.emit(SlaEvent::SlaTimerStarted {
            timer_id: timer_id.clone(),
            metric,
            clock,
            assignee_id,
            started_at,
            carried_seconds,
            due_at,
            warn_at,
        });
        if pauses {
            if let Some(timer) = self.state.timer(&timer_id).cloned() {
                self.pause(&timer, status, started_at);
            }
        }
    }
}
