//! Waiting for a read model to reach a position (a read's `min_position`).

use super::*;

impl Projector {
    /// The last position this process knows applied: by its own projector, or read from the
    /// store by a waiter.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// A receiver of [`Projector::applied`], woken each time it moves (a process manager's actor
    /// half looks for the jobs its projection half may have recorded).
    pub fn watch_applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Waits until the checkpoint reaches `position`, up to `timeout`. True when it did. A
    /// commit by this process's projector wakes the waiter at once. For a projector running in
    /// another process the stored checkpoint is read besides, every [`WAITERS_READ_EVERY`] by
    /// whichever waiter comes first, and what it reads wakes them all: however many requests
    /// wait, they read the store about once per interval. (With a read each, hundreds of requests
    /// waiting on a projector that had fallen behind kept the embedded store answering
    /// checkpoint reads while commands waited for a connection.)
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> Result<bool, ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut applied = self.applied.subscribe();
        loop {
            if *applied.borrow_and_update() >= position {
                return Ok(true);
            }
            if self.claim_waiters_read() && self.checkpoint().await? >= position {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::select! {
                _ = applied.changed() => {}
                () = tokio::time::sleep_until((now + WAITERS_READ_EVERY).min(deadline)) => {}
            }
        }
    }

    /// Whether the caller, a waiter, is the one to read the stored checkpoint now: no waiter has
    /// read it for [`WAITERS_READ_EVERY`].
    pub(super) fn claim_waiters_read(&self) -> bool {
        let mut read = self.waiters_read.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if read.0.is_some_and(|at| now.duration_since(at) < WAITERS_READ_EVERY) {
            return false;
        }
        *read = (Some(now), read.1 + 1);
        true
    }

    /// How many times requests waiting for a position have read the stored checkpoint.
    #[cfg(feature = "testing")]
    pub fn waiters_reads(&self) -> u64 {
        self.waiters_read.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}
