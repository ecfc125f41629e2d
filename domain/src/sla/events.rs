//! The SLA stream's events: each timer's life (started, paused, resumed, retargeted, warned,
//! breached, fulfilled, cancelled), the policy applied, and what the clocks last saw of the
//! conversation. Reporting services read them like any other event.

use super::*;

/// Facts about a conversation's SLA clocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlaEvent {
    /// The clocks saw the conversation's events up to `through`, and it now stands as `facts`:
    /// one for the events an act fed them, first, when any of them changed what the clocks read
    /// or moved a timer. The first one starts the stream.
    SlaObserved {
        /// The conversation.
        conversation_id: ConversationId,
        /// The owning tenant.
        tenant_id: TenantId,
        /// The conversation's version (its stream's sequence) seen.
        through: u64,
        /// The conversation as the clocks read it.
        facts: Facts,
    },
    /// A policy (or none) now applies.
    SlaPolicyApplied {
        /// The policy and version, or none.
        policy: Option<AppliedPolicy>,
        /// Why.
        reason: ApplyReason,
        /// When.
        applied_at: DateTime<Utc>,
    },
    /// A timer started.
    SlaTimerStarted {
        /// Its id within the conversation (`first_response`, `next_response:2`).
        timer_id: String,
        /// What it measures.
        metric: Metric,
        /// The terms it runs under.
        clock: Clock,
        /// The agent whose reply fulfils it, for an assignment response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignee_id: Option<String>,
        /// When it started.
        started_at: DateTime<Utc>,
        /// Clock seconds already spent when it starts (a resolution cycle after a reopen).
        carried_seconds: i64,
        /// When it breaches if it keeps running; none on a calendar with no open hours.
        due_at: Option<DateTime<Utc>>,
        /// When each warning is due, in the clock's order.
        warn_at: Vec<Option<DateTime<Utc>>>,
    },
    /// A timer stopped counting: the conversation entered a status that pauses it.
    SlaTimerPaused {
        /// The timer.
        timer_id: String,
        /// The status that paused it.
        status: Status,
        /// Clock seconds spent so far.
        business_seconds: i64,
        /// When.
        paused_at: DateTime<Utc>,
    },
    /// A paused timer counts again.
    SlaTimerResumed {
        /// The timer.
        timer_id: String,
        /// Its new breach time.
        due_at: Option<DateTime<Utc>>,
        /// Its warnings' new times.
        warn_at: Vec<Option<DateTime<Utc>>>,
        /// When.
        resumed_at: DateTime<Utc>,
    },
    /// A live timer runs under new terms (another policy applies, or another priority's target),
    /// keeping its start and the time spent.
    SlaTimerRetargeted {
        /// The timer.
        timer_id: String,
        /// The new terms.
        clock: Clock,
        /// Clock seconds spent so far.
        business_seconds: i64,
        /// Its new breach time, when running.
        due_at: Option<DateTime<Utc>>,
        /// Its warnings' new times, when running.
        warn_at: Vec<Option<DateTime<Utc>>>,
        /// When.
        retargeted_at: DateTime<Utc>,
    },
    /// A warning came due.
    SlaTimerWarned {
        /// The timer.
        timer_id: String,
        /// Which of the clock's warnings.
        level: usize,
        /// When it came due.
        at: DateTime<Utc>,
    },
    /// A timer ran past its threshold. It keeps running, so its overrun is known when fulfilled.
    SlaTimerBreached {
        /// The timer.
        timer_id: String,
        /// The computed breach instant (not when it was noticed).
        at: DateTime<Utc>,
    },
    /// What a timer waited for happened.
    SlaTimerFulfilled {
        /// The timer.
        timer_id: String,
        /// Wall-clock seconds from its start, pauses included.
        calendar_seconds: i64,
        /// Seconds its clock counted (business seconds on a calendar; pauses excluded).
        business_seconds: i64,
        /// How far past the threshold, in clock seconds; 0 when met.
        overrun_seconds: i64,
        /// Whether it had breached.
        breached: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// A timer will never be fulfilled: the conversation was resolved, reassigned or deleted,
    /// or no target applies any more.
    SlaTimerCancelled {
        /// The timer.
        timer_id: String,
        /// Why.
        reason: CancelReason,
        /// Clock seconds spent.
        business_seconds: i64,
        /// When.
        at: DateTime<Utc>,
    },
    /// A policy version's timers over the conversation's whole history, recomputed on request
    /// (`POST /v1/sla-policies/{id}/recompute`): they sit beside the live timers, which keep the
    /// terms they ran under (docs/adr/0008).
    SlaResultsRecomputed {
        /// The owning tenant.
        tenant_id: TenantId,
        /// The policy.
        policy_id: Uuid,
        /// Its version.
        policy_version: u32,
        /// The instant timers still running were judged at.
        judged_at: DateTime<Utc>,
        /// Every timer the version gives the conversation, in the order they start.
        timers: Vec<Timer>,
    },
}

impl SlaEvent {
    /// The timer the event is about, if any.
    pub fn timer_id(&self) -> Option<&str> {
        match self {
            Self::SlaObserved { .. } | Self::SlaPolicyApplied { .. } | Self::SlaResultsRecomputed { .. } => {
                None
            }
            Self::SlaTimerStarted { timer_id, .. }
            | Self::SlaTimerPaused { timer_id, .. }
            | Self::SlaTimerResumed { timer_id, .. }
            | Self::SlaTimerRetargeted { timer_id, .. }
            | Self::SlaTimerWarned { timer_id, .. }
            | Self::SlaTimerBreached { timer_id, .. }
            | Self::SlaTimerFulfilled { timer_id, .. }
            | Self::SlaTimerCancelled { timer_id, .. } => Some(timer_id),
        }
    }
}

impl DomainEvent for SlaEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SlaObserved { .. } => "SlaObserved",
            Self::SlaPolicyApplied { .. } => "SlaPolicyApplied",
            Self::SlaTimerStarted { .. } => "SlaTimerStarted",
            Self::SlaTimerPaused { .. } => "SlaTimerPaused",
            Self::SlaTimerResumed { .. } => "SlaTimerResumed",
            Self::SlaTimerRetargeted { .. } => "SlaTimerRetargeted",
            Self::SlaTimerWarned { .. } => "SlaTimerWarned",
            Self::SlaTimerBreached { .. } => "SlaTimerBreached",
            Self::SlaTimerFulfilled { .. } => "SlaTimerFulfilled",
            Self::SlaTimerCancelled { .. } => "SlaTimerCancelled",
            Self::SlaResultsRecomputed { .. } => "SlaResultsRecomputed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
