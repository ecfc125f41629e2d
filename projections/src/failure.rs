//! What a projector that cannot apply the log reports while it is stopped: the checkpoint it is
//! stopped at, the error, since when and how often it has tried. A projector never skips an
//! event it cannot apply (its read model would then be wrong without a word); it retries with a
//! growing pause, and `/readyz`, `/metrics` and an ERROR line say where it stands until a retry
//! gets past it (see README.md, "When a projection stops").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The first pause before a failed projector tries again; it doubles with each failure at the
/// same checkpoint, up to [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two tries of a failing projector.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// A projector stopped by an error it has not got past yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The checkpoint it is stopped at: the event after it (or one in the same batch) fails.
    pub checkpoint: i64,
    /// The last error, as its text.
    pub error: String,
    /// When it first failed at this checkpoint.
    pub since: DateTime<Utc>,
    /// How many tries in a row have failed at this checkpoint.
    pub attempts: u32,
}

/// A projector's failures: the current stall, if any, and how many there have been.
#[derive(Debug, Default)]
pub struct Failures {
    stall: Mutex<Option<Stall>>,
    total: AtomicU64,
}

impl Failures {
    /// Notes a failure at `checkpoint` and returns how long to pause before trying again.
    pub fn note(&self, checkpoint: i64, error: String, now: DateTime<Utc>) -> (Stall, Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = match &*stall {
            Some(previous) if previous.checkpoint == checkpoint => previous.attempts.saturating_add(1),
            _ => 1,
        };
        let since = match &*stall {
            Some(previous) if previous.checkpoint == checkpoint => previous.since,
            _ => now,
        };
        let current = Stall { checkpoint, error, since, attempts };
        *stall = Some(current.clone());
        let pause = FIRST_RETRY_PAUSE.saturating_mul(1 << (attempts - 1).min(16)).min(MAX_RETRY_PAUSE);
        (current, pause)
    }

    /// Forgets the stall: the projector has caught up with the log since.
    pub fn recovered(&self) {
        let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = stall.take() {
            tracing::info!(
                checkpoint = previous.checkpoint,
                attempts = previous.attempts,
                "the projection got past its failure and is current again"
            );
        }
    }

    /// The current stall, if the projector is stopped.
    pub fn stall(&self) -> Option<Stall> {
        self.stall.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times the projector has failed since the process started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_at_one_checkpoint_back_off_and_count_while_a_new_checkpoint_starts_over() {
        let failures = Failures::default();
        let (t0, t1) = (DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH + chrono::Duration::seconds(5));
        let pauses: Vec<Duration> = (0..8).map(|_| failures.note(41, "boom".into(), t1).1).collect();
        assert_eq!(pauses[..3], [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
        assert_eq!(pauses[7], MAX_RETRY_PAUSE);
        let stall = failures.stall().expect("stalled");
        assert_eq!((stall.checkpoint, stall.attempts, stall.since), (41, 8, t1));

        let (moved, pause) = failures.note(90, "other".into(), t0);
        assert_eq!((moved.attempts, pause), (1, FIRST_RETRY_PAUSE));
        assert_eq!(failures.total(), 9);
        failures.recovered();
        assert_eq!(failures.stall(), None);
        assert_eq!(failures.total(), 9, "the count of failures stays");
    }
}
