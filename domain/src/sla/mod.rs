//! SLA clocks: the ConversationSla aggregate keeps, beside each conversation, the timers its
//! applied policy runs (first response, next response, resolution, assignment response), on a
//! stream of its own (`sla`, keyed by the conversation's id; docs/adr/0007).
//!
//! It is fed, never asked: the SLA process manager hands it the conversation's events in order
//! ([`SlaCommand::Observe`]) with the tenant's policies and calendars as they are at that moment
//! ([`Catalog`]), and the timer service tells it when a warning or breach may be due
//! ([`SlaCommand::Fire`]). Both are idempotent: an event already seen, a warning already given,
//! or a breach already recorded records nothing, so a repeated job changes nothing.
//!
//! The clock rules are in [`clock`]; each timer's times are computed with the calendar's
//! business-time functions ([`crate::hours`]) and recorded on its events, so a reader never
//! recomputes them.

pub mod clock;
mod due;
mod events;
pub mod policy;
#[cfg(test)]
mod tests;
pub mod whatif;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use due::{Due, DueState};
pub use events::SlaEvent;
pub use policy::{
    Conditions, Metric, PolicyVersion, SlaPolicy, SlaPolicyAggregate, Subject, Target, Warning,
};

use crate::calendar::CalendarVersion;
use crate::context::CommandContext;
use crate::conversation::{ConversationEvent, Status};
use crate::footprint::{self, Footprint};
use crate::hours::BusinessHours;
use crate::ids::{ConversationId, TenantId};
use crate::{Snapshot, TenantOwned, EVENT_VERSION_1};

/// Whether the customer waits for a reply, as one kind of reply counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Whether a qualifying reply was ever sent.
    pub replied: bool,
    /// Since when the customer waits after the last qualifying reply (their first message since).
    pub since: Option<DateTime<Utc>>,
}

/// The conversation as the clocks read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// What conditions match on.
    pub subject: Subject,
    /// Its status.
    pub status: Status,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// Its resolution cycle: 1 from the opening, one more per reopen.
    pub cycle: u32,
    /// When the current cycle began.
    pub cycle_started_at: Option<DateTime<Utc>>,
    /// The assigned agent, and since when.
    pub assignee_id: Option<String>,
    /// When the current assignee was assigned.
    pub assigned_at: Option<DateTime<Utc>>,
    /// Waiting as only human replies count.
    pub human: Waiting,
    /// Waiting as bot replies count too.
    pub any: Waiting,
    /// Deleted.
    pub deleted: bool,
}

impl Facts {
    /// The waiting that a clock which does (or does not) count bot replies reads.
    pub fn waiting(&self, bot_replies_count: bool) -> &Waiting {
        if bot_replies_count {
            &self.any
        } else {
            &self.human
        }
    }
}

/// The policy a conversation runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppliedPolicy {
    /// The policy.
    pub policy_id: Uuid,
    /// Its version.
    pub version: u32,
    /// Its name then.
    pub name: String,
    /// Applied by a command rather than by conditions; conditions no longer change it.
    pub explicit: bool,
}

/// Why a policy was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ApplyReason {
    /// The conversation opened.
    Opened,
    /// Its priority, labels, team or inbox changed.
    ConditionsChanged,
    /// A command named it.
    Explicit,
    /// The applied policy has a newer version, which new timers follow.
    Revised,
}

/// Why a timer was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CancelReason {
    /// The conversation was resolved: no reply is owed.
    Resolved,
    /// Another agent (or none) is assigned.
    Reassigned,
    /// The conversation was deleted.
    Deleted,
    /// The policy that applies now has no target for it.
    NoTarget,
}

/// The terms a timer runs under: its target's, resolved against a calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Clock {
    /// The policy.
    pub policy_id: Uuid,
    /// Its version.
    pub policy_version: u32,
    /// The threshold, in clock seconds.
    pub threshold_seconds: i64,
    /// The calendar whose business hours count; none when every hour counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_id: Option<Uuid>,
    /// The calendar's version when the times were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_version: Option<u32>,
    /// Warnings before the breach.
    pub warnings: Vec<Warning>,
    /// Statuses that pause it.
    pub pause_statuses: Vec<Status>,
    /// Whether bot replies fulfil it.
    pub bot_replies_count: bool,
}

/// Where a timer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimerState {
    /// Counting.
    Running,
    /// Stopped by a pausing status.
    Paused,
    /// What it waited for happened.
    Fulfilled,
    /// It will never be fulfilled.
    Cancelled,
}

/// One timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// Its id within the conversation.
    pub timer_id: String,
    /// What it measures.
    pub metric: Metric,
    /// Its terms.
    pub clock: Clock,
    /// The agent whose reply fulfils an assignment response.
    pub assignee_id: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Where it is.
    pub state: TimerState,
    /// Clock seconds counted before `running_since` (or in all, once stopped).
    pub business_seconds: i64,
    /// Since when it counts, while running.
    pub running_since: Option<DateTime<Utc>>,
    /// When it breaches, while running.
    pub due_at: Option<DateTime<Utc>>,
    /// When each warning is due, while running.
    pub warn_at: Vec<Option<DateTime<Utc>>>,
    /// Which warnings were given.
    pub warned: Vec<usize>,
    /// When it breached.
    pub breached_at: Option<DateTime<Utc>>,
    /// When it was fulfilled or cancelled.
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Timer {
    /// The timer a `SlaTimerStarted` event starts; none for another event.
    pub fn started(event: SlaEvent) -> Option<Self> {
        let SlaEvent::SlaTimerStarted {
            timer_id,
            metric,
            clock,
            assignee_id,
            started_at,
            carried_seconds,
            due_at,
            warn_at,
        } = event
        else {
            return None;
        };
        Some(Timer {
            timer_id,
            metric,
            clock,
            assignee_id,
            started_at,
            state: TimerState::Running,
            business_seconds: carried_seconds,
            running_since: Some(started_at),
            due_at,
            warn_at,
            warned: Vec::new(),
            breached_at: None,
            stopped_at: None,
        })
    }

    /// Applies a later event about this timer (one about another timer, or not about a timer,
    /// changes nothing).
    pub fn apply(&mut self, event: SlaEvent) {
        if event.timer_id() == Some(self.timer_id.as_str()) {
            clock::apply_to_timer(self, event);
        }
    }

    /// Running or paused: it may still be fulfilled.
    pub fn is_live(&self) -> bool {
        matches!(self.state, TimerState::Running | TimerState::Paused)
    }

    /// The next instant the timer service must look at it: its earliest warning not yet given,
    /// or its breach; none when it is not running or has nothing left to announce.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        if self.state != TimerState::Running {
            return None;
        }
        let warnings = self
            .warn_at
            .iter()
            .enumerate()
            .filter(|(level, _)| !self.warned.contains(level))
            .filter_map(|(_, at)| *at);
        let breach = self.due_at.filter(|_| self.breached_at.is_none());
        warnings.chain(breach).min()
    }
}

/// What the clocks read of the tenant's settings when they decide: the live policies and
/// calendars, as they are at that moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Live policies, oldest first.
    pub policies: Vec<CatalogPolicy>,
    /// Live calendars, oldest first.
    pub calendars: Vec<CalendarVersion>,
}

/// A policy version and when it was recorded: a timer whose start is earlier than its policy
/// version does not start (a policy applies to timers that start after it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogPolicy {
    /// The version.
    #[serde(flatten)]
    pub version: PolicyVersion,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl Catalog {
    /// The hours a clock counts: its calendar's (the current version), or every hour.
    pub fn hours(&self, clock: &Clock) -> BusinessHours {
        clock
            .calendar_id
            .and_then(|id| self.calendars.iter().find(|c| c.calendar_id == id))
            .map_or_else(BusinessHours::always, |c| c.calendar.hours.clone())
    }

    /// Seconds `timer`'s clock has counted by `at`.
    pub fn counted(&self, timer: &Timer, at: DateTime<Utc>) -> i64 {
        let running = timer.running_since.map_or(0, |since| self.hours(&timer.clock).elapsed(since, at));
        timer.business_seconds + running
    }
}

/// What may be asked of a conversation's clocks.
#[derive(Debug, Clone, PartialEq)]
pub enum SlaCommand {
    /// Read the conversation's events (in order, with their sequence), deciding as `catalog`
    /// says. Events already seen are passed over.
    Observe {
        /// The conversation.
        conversation_id: ConversationId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Its events after those already seen, with their sequence.
        events: Vec<(u64, ConversationEvent)>,
        /// The tenant's policies and calendars.
        catalog: Catalog,
    },
    /// Record the warnings and breach of `timer_id` that are due by now.
    Fire {
        /// The timer.
        timer_id: String,
    },
    /// Apply `policy` (or, with none, go back to the conditions), whatever the conditions say.
    ApplyPolicy {
        /// The policy, or none to let the conditions choose again.
        policy: Option<PolicyVersion>,
        /// The tenant's policies and calendars.
        catalog: Catalog,
    },
    /// Record what a policy version gives the conversation's history (computed by
    /// [`whatif::simulate`]); the same timers as last recorded for that version record nothing.
    RecordResults(Recomputed),
}

/// A policy version's timers over a conversation's history, recomputed on request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recomputed {
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The policy.
    pub policy_id: Uuid,
    /// Its version.
    pub policy_version: u32,
    /// The instant timers still running were judged at.
    pub judged_at: DateTime<Utc>,
    /// The timers, in the order they start.
    pub timers: Vec<Timer>,
}

/// Why an SLA command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlaError {
    /// The conversation has no SLA clocks.
    #[error("the conversation has no SLA clocks")]
    NotFound,
}

/// A conversation's SLA clocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationSla {
    /// The conversation, once seen.
    pub conversation_id: Option<ConversationId>,
    /// The owning tenant, once seen.
    pub tenant_id: Option<TenantId>,
    /// The conversation's version seen.
    pub observed: u64,
    /// The conversation as last seen.
    pub facts: Facts,
    /// The policy applied.
    pub policy: Option<AppliedPolicy>,
    /// Every timer, in the order started.
    pub timers: Vec<Timer>,
    /// The latest recomputed results of each policy version, in the order first recorded.
    #[serde(default)]
    pub recomputed: Vec<Recomputed>,
}

impl ConversationSla {
    /// The timer `timer_id`.
    pub fn timer(&self, timer_id: &str) -> Option<&Timer> {
        self.timers.iter().find(|timer| timer.timer_id == timer_id)
    }

    fn timer_mut(&mut self, timer_id: &str) -> Option<&mut Timer> {
        self.timers.iter_mut().find(|timer| timer.timer_id == timer_id)
    }

    /// The live timer that comes due first, for the inbox: its id and when.
    pub fn next_due(&self) -> Option<(&Timer, DateTime<Utc>)> {
        self.timers
            .iter()
            .filter(|timer| timer.state == TimerState::Running)
            .filter_map(|timer| timer.due_at.map(|due| (timer, due)))
            .min_by_key(|(_, due)| *due)
    }
}

impl Aggregate for ConversationSla {
    const TYPE: &'static str = "sla";
    type Command = SlaCommand;
    type Event = SlaEvent;
    type Error = SlaError;
    type Services = CommandContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        ctx: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            SlaCommand::Observe { conversation_id, tenant_id, events, catalog } => {
                clock::observe(self, conversation_id, tenant_id, events, &catalog)
            }
            SlaCommand::Fire { timer_id } => {
                self.conversation_id.ok_or(SlaError::NotFound)?;
                clock::fire(self, &timer_id, ctx.now)
            }
            SlaCommand::ApplyPolicy { policy, catalog } => {
                self.conversation_id.ok_or(SlaError::NotFound)?;
                clock::apply_explicitly(self, policy, &catalog, ctx.now)
            }
            SlaCommand::RecordResults(results) => {
                let same = self.recomputed.iter().any(|r| {
                    (r.policy_id, r.policy_version, &r.timers)
                        == (results.policy_id, results.policy_version, &results.timers)
                });
                if same {
                    Vec::new()
                } else {
                    let Recomputed { tenant_id, policy_id, policy_version, judged_at, timers } = results;
                    vec![SlaEvent::SlaResultsRecomputed {
                        tenant_id,
                        policy_id,
                        policy_version,
                        judged_at,
                        timers,
                    }]
                }
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SlaEvent::SlaObserved { conversation_id, tenant_id, through, facts } => {
                self.conversation_id = Some(conversation_id);
                self.tenant_id = Some(tenant_id);
                self.observed = through;
                self.facts = facts;
            }
            SlaEvent::SlaPolicyApplied { policy, .. } => self.policy = policy,
            SlaEvent::SlaResultsRecomputed { tenant_id, policy_id, policy_version, judged_at, timers } => {
                self.tenant_id.get_or_insert_with(|| tenant_id.clone());
                let results = Recomputed { tenant_id, policy_id, policy_version, judged_at, timers };
                match self
                    .recomputed
                    .iter_mut()
                    .find(|r| (r.policy_id, r.policy_version) == (policy_id, policy_version))
                {
                    Some(earlier) => *earlier = results,
                    None => self.recomputed.push(results),
                }
            }
            started @ SlaEvent::SlaTimerStarted { .. } => self.timers.extend(Timer::started(started)),
            other => {
                if let Some(timer) = other.timer_id().and_then(|id| self.timer_mut(id)) {
                    timer.apply(other);
                }
            }
        }
    }
}

impl TenantOwned for ConversationSla {
    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }
}

impl Footprint for ConversationSla {
    fn footprint(&self) -> usize {
        let timer = |timer: &Timer| {
            footprint::string(&timer.timer_id)
                + footprint::optional_string(timer.assignee_id.as_ref())
                + footprint::vec(&timer.warn_at, timer.warn_at.capacity(), |_| 0)
                + footprint::vec(&timer.clock.warnings, timer.clock.warnings.capacity(), |_| 0)
                + footprint::vec(&timer.clock.pause_statuses, timer.clock.pause_statuses.capacity(), |_| 0)
        };
        let facts = &self.facts;
        size_of::<Self>()
            + footprint::vec(&self.timers, self.timers.capacity(), timer)
            + footprint::strings(&facts.subject.labels)
            + footprint::optional_strings([
                &facts.subject.inbox_id,
                &facts.subject.team_id,
                &facts.assignee_id,
            ])
            + self.policy.as_ref().map_or(0, |policy| footprint::string(&policy.name))
            + footprint::vec(&self.recomputed, self.recomputed.capacity(), |results| {
                footprint::vec(&results.timers, results.timers.capacity(), timer)
            })
    }
}

impl Snapshot for ConversationSla {
    const SHAPE: u32 = 1;
}
