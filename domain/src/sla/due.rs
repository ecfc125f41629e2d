//! What an inbox row shows of a conversation's SLA: the state of its most urgent live timer and
//! its next due time, for the inbox's `sla_status` filter and its sort by next due.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Timer, TimerState};

/// How a conversation stands against its SLA, by its live (running or paused) timers, the worst
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DueState {
    /// A live timer is past its due.
    Breached,
    /// A running timer gave a warning.
    Warning,
    /// A timer runs, within its time.
    Active,
    /// Every live timer is paused (by a pausing status).
    Paused,
}

impl DueState {
    /// Every state, by its name.
    pub const ALL: [(&'static str, DueState); 4] = [
        ("breached", Self::Breached),
        ("warning", Self::Warning),
        ("active", Self::Active),
        ("paused", Self::Paused),
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, state)| *state == self).map_or("active", |(name, _)| name)
    }

    /// The state called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, state)| *state)
    }
}

/// A conversation's SLA as its inbox row shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    /// The worst state of its live timers.
    pub state: DueState,
    /// The earliest due of its running timers (past, once breached); none while all are paused.
    pub next_due_at: Option<DateTime<Utc>>,
}

impl Due {
    /// What `timers` (a conversation's) amount to; `None` when none is live.
    pub fn of<'a>(timers: impl IntoIterator<Item = &'a Timer>) -> Option<Self> {
        let mut due: Option<Self> = None;
        for timer in timers {
            let state = match timer.state {
                TimerState::Fulfilled | TimerState::Cancelled => continue,
                _ if timer.breached_at.is_some() => DueState::Breached,
                TimerState::Paused => DueState::Paused,
                TimerState::Running if !timer.warned.is_empty() => DueState::Warning,
                TimerState::Running => DueState::Active,
            };
            let next_due_at = timer.due_at.filter(|_| timer.state == TimerState::Running);
            due = Some(match due {
                None => Self { state, next_due_at },
                Some(so_far) => Self {
                    state: so_far.state.min(state),
                    next_due_at: match (so_far.next_due_at, next_due_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                },
            });
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::sla::{Clock, Metric};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 9, minute, 0).single().unwrap_or_default()
    }

    fn timer(state: TimerState, due_minute: Option<u32>, warned: bool, breached: bool) -> Timer {
        Timer {
            timer_id: "first_response".into(),
            metric: Metric::FirstResponse,
            clock: Clock {
                policy_id: uuid::Uuid::nil(),
                policy_version: 1,
                threshold_seconds: 3_600,
                calendar_id: None,
                calendar_version: None,
                warnings: Vec::new(),
                pause_statuses: Vec::new(),
                bot_replies_count: false,
            },
            assignee_id: None,
            started_at: at(0),
            state,
            business_seconds: 0,
            running_since: (state == TimerState::Running).then(|| at(0)),
            due_at: due_minute.map(at),
            warn_at: Vec::new(),
            warned: if warned { vec![0] } else { Vec::new() },
            breached_at: breached.then(|| at(1)),
            stopped_at: None,
        }
    }

    #[test]
    fn no_live_timer_shows_nothing() {
        assert_eq!(Due::of(&[]), None);
        let stopped = [
            timer(TimerState::Fulfilled, None, false, true),
            timer(TimerState::Cancelled, None, true, false),
        ];
        assert_eq!(Due::of(&stopped), None);
    }

    #[test]
    fn the_worst_live_timer_gives_the_state_and_the_earliest_running_due_the_time() {
        let timers = [
            timer(TimerState::Running, Some(30), false, false),
            timer(TimerState::Running, Some(20), true, false),
            timer(TimerState::Paused, None, false, false),
        ];
        assert_eq!(Due::of(&timers), Some(Due { state: DueState::Warning, next_due_at: Some(at(20)) }));
        let breached = [
            timer(TimerState::Running, Some(40), false, false),
            timer(TimerState::Running, Some(1), true, true),
        ];
        assert_eq!(Due::of(&breached), Some(Due { state: DueState::Breached, next_due_at: Some(at(1)) }));
    }

    #[test]
    fn a_paused_timer_has_no_due_and_a_breach_outlasts_a_pause() {
        let paused = [timer(TimerState::Paused, None, false, false)];
        assert_eq!(Due::of(&paused), Some(Due { state: DueState::Paused, next_due_at: None }));
        let paused_after_breach = [timer(TimerState::Paused, None, false, true)];
        assert_eq!(Due::of(&paused_after_breach), Some(Due { state: DueState::Breached, next_due_at: None }));
    }

    #[test]
    fn states_read_back_from_their_names() {
        for (name, state) in DueState::ALL {
            assert_eq!((DueState::parse(name), state.as_str()), (Some(state), name));
        }
        assert_eq!(DueState::parse("missed"), None);
    }
}
