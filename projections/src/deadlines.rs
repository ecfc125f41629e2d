//! Deadlines before reports: when a process's timers fire late, the projections that only serve
//! analytics (the reports') hold their batches back for a moment, so that on a saturated machine
//! the CPU and the read models' writer go to the timers first (docs/adr/0014).
//!
//! The process runner [`Deadlines::note`]s each round of a deadline lane ([`Pace::deadlines`]):
//! a job acted on more than [`LATE`] past its due holds background work for [`HOLD`]. A
//! projection that [`defers`](crate::Projection::defers_to_deadlines) waits while held, but
//! never longer than [`LONGEST_WAIT`] before each batch, so it still moves under a lasting
//! overload (and its read model falls behind instead, as `/readyz` and `/metrics` show). One
//! process's signal: CPU is shared by a machine's processes, not across machines.
//!
//! [`Pace::deadlines`]: crate::processes::Pace::deadlines

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How late a deadline job may be acted on before background work holds back.
pub const LATE: Duration = Duration::from_millis(250);

/// How long background work holds back after a late round.
pub const HOLD: Duration = Duration::from_secs(2);

/// The longest a deferring projection waits before one batch: under a lasting overload it still
/// applies a batch this often. At 2 s, the reports' batches between waits still took enough of
/// the CPU to leave the timers seconds behind at the end of a 100,000-timer run (p99 12.1 s).
pub const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting projection looks again.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// Whether a process's deadlines are behind, shared by its runners and projectors (clones share
/// it).
#[derive(Debug, Clone, Default)]
pub struct Deadlines(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// The Unix millisecond until which background work holds back.
    until: AtomicI64,
    /// Set once the process stops: nothing holds back any more.
    released: AtomicBool,
}

impl Deadlines {
    /// Notes a round of deadline jobs, taken at `now`, the earliest of them due at `earliest`.
    pub fn note(&self, earliest: DateTime<Utc>, now: DateTime<Utc>) {
        let late = (now - earliest).to_std().unwrap_or_default();
        if late > LATE {
            let until = (now + HOLD).timestamp_millis();
            self.0.until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Ends every hold for good, so that waiting projectors go on to see the process's stop
    /// signal at once rather than after their longest wait.
    pub fn release(&self) {
        self.0.released.store(true, Ordering::Relaxed);
    }

    /// Whether background work holds back at `now`.
    pub fn holding(&self, now: DateTime<Utc>) -> bool {
        !self.0.released.load(Ordering::Relaxed)
            && now.timestamp_millis() < self.0.until.load(Ordering::Relaxed)
    }

    /// Waits while background work holds back, at most `longest`; how long it waited.
    pub async fn wait(&self, longest: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        while self.holding(Utc::now()) && started.elapsed() < longest {
            tokio::time::sleep(LOOK_EVERY.min(longest.saturating_sub(started.elapsed()))).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).expect("a time")
    }

    #[test]
    fn only_a_late_round_holds_background_work_and_for_a_while() {
        let deadlines = Deadlines::default();
        deadlines.note(at(10_000), at(10_250));
        assert!(!deadlines.holding(at(10_250)), "250 ms late is on time");
        deadlines.note(at(10_000), at(10_251));
        assert!(deadlines.holding(at(10_251)));
        assert!(deadlines.holding(at(12_250)));
        assert!(!deadlines.holding(at(12_251)), "held for two seconds after the late round");
        // An earlier round's note never shortens a later one's hold.
        deadlines.note(at(9_000), at(10_500));
        deadlines.note(at(9_000), at(10_300));
        assert!(deadlines.holding(at(12_499)));
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_longest_while_held() {
        let deadlines = Deadlines::default();
        let now = Utc::now();
        deadlines.note(now - chrono::Duration::seconds(5), now);
        assert!(deadlines.holding(Utc::now()));
        let waited = deadlines.wait(Duration::from_millis(120)).await;
        assert!(waited >= Duration::from_millis(120) && waited < HOLD, "{waited:?}");
        assert!(Deadlines::default().wait(Duration::from_secs(5)).await < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_release_ends_a_wait_and_every_later_hold() {
        let deadlines = Deadlines::default();
        let now = Utc::now();
        deadlines.note(now - chrono::Duration::seconds(5), now);
        let waiting = tokio::spawn({
            let deadlines = deadlines.clone();
            async move { deadlines.wait(LONGEST_WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        deadlines.release();
        let waited = waiting.await.expect("the wait ends");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        deadlines.note(Utc::now() - chrono::Duration::seconds(5), Utc::now());
        assert!(!deadlines.holding(Utc::now()), "a released process holds nothing back");
    }
}
