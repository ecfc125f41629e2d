//! Replaying the log into a read model: catching up from the checkpoint, and rebuilding it
//! from nothing, a page at a time, folded where the projection folds.

use super::apply::{applied_or_gap, fresh};
use super::*;

impl Projector {
    /// Reads the log from the checkpoint and applies it until the head; returns the checkpoint.
    pub async fn catch_up(&self) -> Result<i64, ProjectionError> {
        self.catch_up_with(|_| {}).await
    }

    /// [`Projector::catch_up`], calling `progress` with the checkpoint after every commit.
    ///
    /// A task reads the next pages while the current one applies (at most [`READ_AHEAD`]
    /// pages ahead), so the store's read and the projection's work overlap. A projection with a
    /// [`Fold`] commits every [`CATCH_UP_FOLD`] as a rebuild does: a server that comes back to
    /// a long stretch of interleaved events writes each row once per commit, not once per page.
    pub async fn catch_up_with(&self, progress: impl FnMut(i64)) -> Result<i64, ProjectionError> {
        match self.projection.fold() {
            Some(fold) => self.replay_folded(fold, CATCH_UP_FOLD, progress).await,
            None => self.catch_up_paged(CATCH_UP_BATCH, progress).await,
        }
    }

    /// [`Projector::catch_up_with`] in batches of `size` events.
    pub(super) async fn catch_up_paged(
        &self,
        size: i64,
        mut progress: impl FnMut(i64),
    ) -> Result<i64, ProjectionError> {
        let (stored, generation) = self.stored_checkpoint().await?;
        let mut checkpoint = self.observe(stored, generation);
        'read: loop {
            let mut pages = read_ahead(self.log.clone(), checkpoint, size, self.projection.metadata());
            while let Some(page) = pages.recv().await {
                self.defer_to_deadlines().await;
                checkpoint = match self.apply(&page?).await? {
                    Applied::UpTo(position) => position,
                    // Another instance moved the checkpoint meanwhile; read on from there.
                    Applied::Gap { checkpoint } => {
                        progress(checkpoint);
                        continue 'read;
                    }
                };
                progress(checkpoint);
            }
            return Ok(checkpoint);
        }
    }

    /// Clears the read model and its checkpoint in one transaction, then replays the whole log.
    /// The projection's [`Projection::deferred_indexes`] are dropped in that transaction and
    /// built again at the end (also when the replay fails).
    pub async fn rebuild(&self, progress: impl FnMut(i64)) -> Result<i64, ProjectionError> {
        let replayed = self.clear_and_replay(progress).await;
        let built = crate::deferred::restore(self.log.store()).await;
        let replayed = replayed?;
        built?;
        Ok(replayed)
    }

    pub(super) async fn clear_and_replay(&self, progress: impl FnMut(i64)) -> Result<i64, ProjectionError> {
        let name = self.checkpoint_name();
        let store = self.log.store();
        // A new generation: a projector elsewhere that applied batches before the reset learns
        // from it that they are gone (see `observe`).
        let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
        let generation = checkpoints::reset(&mut tx, &name).await?;
        self.projection.clear(&mut tx).await?;
        crate::deferred::defer(&mut tx, self.projection.deferred_indexes()).await?;
        tx.commit().await?;
        self.generation.store(generation, std::sync::atomic::Ordering::SeqCst);
        self.applied.send_replace(0);
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = (tokio::time::Instant::now(), 0);
        match self.projection.fold() {
            Some(mut fold) => {
                fold.starts_empty();
                self.replay_folded(fold, self.rebuild, progress).await
            }
            None => self.catch_up_paged(REBUILD_BATCH, progress).await,
        }
    }

    /// Replays the log from the checkpoint through `fold`, committing what it holds with the
    /// checkpoint whenever it reaches one of the `limits`, and at the head; `progress` hears of
    /// each commit.
    ///
    /// Each commit is written by a task of its own while the next one folds (on PostgreSQL the
    /// row writes are most of a rebuild's time, and the folding stopped for them). Each commit is a
    /// batch like [`Projector::apply`]'s: the checkpoint row is locked first. The folding ran
    /// ahead of it, so a checkpoint that another instance moved meanwhile is found then: what was
    /// folded since is dropped, and the replay reads on from that instance's checkpoint.
    pub(super) async fn replay_folded(
        &self,
        mut fold: Box<dyn Fold>,
        limits: RebuildLimits,
        mut progress: impl FnMut(i64),
    ) -> Result<i64, ProjectionError> {
        let store = self.log.store().clone();
        let (stored, generation) = self.stored_checkpoint().await?;
        let mut checkpoint = self.observe(stored, generation);
        let mut pages = read_ahead(self.log.clone(), checkpoint, limits.page, self.projection.metadata());
        let mut writing: Option<Writing> = None;
        // Set once the head is folded: what is left is to see the last commit written.
        let mut done = false;
        loop {
            let folded = if done {
                None
            } else {
                self.defer_to_deadlines().await;
                Some(self.fold_commit(&mut *fold, &mut pages, checkpoint, limits).await)
            };
            // The commit before must be in the store before this one is written, and before
            // an error is returned (it is a whole batch, and may commit).
            if let Some(previous) = writing.take() {
                match previous.finish().await? {
                    Written::UpTo(position) => {
                        self.note_applied(position);
                        self.note_saved(position);
                        progress(position);
                    }
                    Written::Moved { stored, generation } => {
                        // Folded on top of a commit that was not written: start over from the
                        // store's checkpoint.
                        fold.start_over();
                        checkpoint = self.observe(stored, generation);
                        pages =
                            read_ahead(self.log.clone(), checkpoint, limits.page, self.projection.metadata());
                        done = false;
                        continue;
                    }
                }
            }
            let Some(folded) = folded else { return Ok(checkpoint) };
            let Folded { up_to, ended, read_on } = folded?;
            if up_to == checkpoint && ended {
                return Ok(checkpoint);
            }
            writing = Some(Writing::start(
                store.clone(),
                self.checkpoint_name(),
                fold.seal(),
                checkpoint,
                up_to,
                *self.applied.borrow(),
                self.generation(),
            ));
            checkpoint = up_to;
            done = ended;
            if read_on && !ended {
                pages = read_ahead(self.log.clone(), checkpoint, limits.page, self.projection.metadata());
            }
        }
    }

    /// Folds pages that continue `checkpoint` into `fold` until it reaches one of the `limits`,
    /// the head, or a page that does not continue it. Reads through a transaction of its own.
    pub(super) async fn fold_commit(
        &self,
        fold: &mut dyn Fold,
        pages: &mut mpsc::Receiver<Result<Vec<StoredEvent>, StoreError>>,
        mut checkpoint: i64,
        limits: RebuildLimits,
    ) -> Result<Folded, ProjectionError> {
        let store = self.log.store();
        let Some(mut page) = pages.recv().await.transpose()? else {
            return Ok(Folded { up_to: checkpoint, ended: true, read_on: false });
        };
        let mut tx = store.begin_read().await?;
        let mut taken = 0;
        loop {
            match fresh(&page, checkpoint)? {
                Some(events) => {
                    fold.apply(&mut tx, events).await?;
                    taken += events.len();
                    checkpoint = events.last().and_then(|e| e.position).unwrap_or(checkpoint);
                }
                // The read is out of step with the checkpoint: read on from the checkpoint.
                None if applied_or_gap(&page, checkpoint) != Applied::UpTo(checkpoint) => {
                    return Ok(Folded { up_to: checkpoint, ended: false, read_on: true });
                }
                None => {}
            }
            if fold.held() >= limits.held || taken >= limits.events {
                let read_on = page.last().and_then(|e| e.position) != Some(checkpoint);
                return Ok(Folded { up_to: checkpoint, ended: false, read_on });
            }
            match pages.recv().await.transpose()? {
                Some(next) => page = next,
                None => return Ok(Folded { up_to: checkpoint, ended: true, read_on: false }),
            }
        }
    }

    /// The age of a batch's oldest event, when debug logging is on (reading it parses metadata).
    pub(super) fn debug_age(&self, batch: &[StoredEvent]) -> Option<f64> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            batch.first().and_then(StoredEvent::age_ms)
        } else {
            None
        }
    }

    /// Logs at debug level how a live batch went: its oldest event's age when received, how
    /// long it was waited for (the fetch, or the bus's linger), how long it took to apply, and
    /// its newest event's age once applied. Where an event's time to the read model goes.
    pub(super) fn debug_timings(
        &self,
        batch: &[StoredEvent],
        received_age: Option<f64>,
        waited: Duration,
        received_at: tokio::time::Instant,
    ) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                projection = self.name(),
                events = batch.len(),
                received_age_ms = received_age,
                waited_ms = waited.as_secs_f64() * 1e3,
                apply_ms = received_at.elapsed().as_secs_f64() * 1e3,
                applied_age_ms = batch.last().and_then(StoredEvent::age_ms),
                "applied live batch"
            );
        }
    }
}

/// What [`Projector::fold_commit`] folded.
pub(super) struct Folded {
    /// The position it folded to.
    up_to: i64,
    /// It reached the head.
    ended: bool,
    /// The pages being read do not continue from `up_to`.
    read_on: bool,
}

/// How a commit written behind the folding ended.
pub(super) enum Written {
    /// Committed with the checkpoint at this position.
    UpTo(i64),
    /// Not written: the stored checkpoint had moved from where the commit started.
    Moved { stored: i64, generation: i64 },
}

/// A commit being written by a task of its own.
pub(super) struct Writing(tokio::task::JoinHandle<Result<Written, ProjectionError>>);

impl Writing {
    /// Writes `sealed` with the checkpoint `up_to`, if the stored checkpoint (or `known`, this
    /// process's, when further) is still `from`.
    /// Where the checkpoint's generation is no longer `generation`, a rebuild cleared the read
    /// model meanwhile, and nothing is written either.
    pub(super) fn start(
        store: Store,
        name: String,
        sealed: Box<dyn Sealed>,
        from: i64,
        up_to: i64,
        known: i64,
        generation: i64,
    ) -> Self {
        Self(tokio::spawn(async move {
            // As in `apply`: the read-model commit need not wait for the disk.
            let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
            let (stored, stored_generation) = checkpoints::lock(&mut tx, &name).await?;
            if stored_generation != generation || stored.max(known) != from {
                return Ok(Written::Moved { stored, generation: stored_generation });
            }
            sealed.write(&mut tx).await?;
            checkpoints::set(&mut tx, &name, up_to).await?;
            tx.commit().await?;
            Ok(Written::UpTo(up_to))
        }))
    }

    pub(super) async fn finish(self) -> Result<Written, ProjectionError> {
        self.0.await.map_err(|e| {
            ProjectionError::Store(StoreError::Corrupt(format!("a commit's writer failed: {e}")))
        })?
    }
}

/// Pages of `size` events of the log after `after`, read by a task of their own until a read
/// finds nothing (the channel then closes) or fails (the error is the last item). The task ends
/// when the receiver is dropped.
///
/// Positions are gap-free, so the k-th page starts at `after + k * size`: [`READ_PARALLEL`]
/// pages are read at once (one database connection each) and passed on in order; after a short
/// page (the head), the reads start over after its last event. A page that overlapped or
/// skipped events would be caught by the applier, which takes only what continues its
/// checkpoint and reads on from there.
pub(super) fn read_ahead(
    log: GlobalLog,
    after: i64,
    size: i64,
    metadata: Metadata,
) -> mpsc::Receiver<Result<Vec<StoredEvent>, StoreError>> {
    let (pages, receiver) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let size = size.clamp(1, colloquy_infra::log::MAX_PAGE);
        let mut after = after;
        loop {
            let start = after;
            let mut reads = futures::stream::iter(0i64..)
                .map(|k| {
                    let log = log.clone();
                    async move { log.read_with(start + k * size, size, None, metadata).await }
                })
                .buffered(READ_PARALLEL);
            loop {
                let Some(page) = reads.next().await else { return };
                // Log reads always carry positions; a page without one is passed on and ends
                // the read.
                let (next, full) = match &page {
                    Ok(events) if events.is_empty() => return,
                    Ok(events) => (events.last().and_then(|e| e.position), events.len() as i64 == size),
                    Err(_) => (None, false),
                };
                if pages.send(page).await.is_err() {
                    return;
                }
                let Some(last) = next else { return };
                after = last;
                // A short page reached the head as it was then: the reads in flight started
                // beyond it, so they start over after its last event.
                if !full {
                    break;
                }
            }
        }
    });
    receiver
}
