//! A batch applied exactly once: the checkpoint locked, skipped past what it covers, moved
//! with the batch's writes in one transaction; a rebuild elsewhere noticed by its generation.

use super::*;

impl Projector {
    /// The last position applied, as stored (a rebuild elsewhere since is noticed here too, so a
    /// reader waiting for a position is not answered from what the rebuild cleared).
    pub async fn checkpoint(&self) -> Result<i64, ProjectionError> {
        let (stored, generation) = self.stored_checkpoint().await?;
        self.observe(stored, generation);
        Ok(stored)
    }

    /// Applies a slice of the log exactly once: what the checkpoint covers is skipped, and a
    /// slice that does not continue from the checkpoint is refused as a gap.
    /// Every sealed value is revealed first (docs/adr/0011): the bus carries events as stored.
    pub async fn apply(&self, events: &[StoredEvent]) -> Result<Applied, ProjectionError> {
        let events = &*self.log.store().keys().reveal(events).await?;
        if let Some(applied) = self.skip_ignored(events).await? {
            return Ok(applied);
        }
        let name = self.checkpoint_name();
        let store = self.log.store();
        if store.is_postgres() {
            if let Some(applied) = self.apply_after_own_commit(&name, events).await? {
                return Ok(applied);
            }
        }
        // The read-model commit need not wait for the disk: a crash that loses it loses it whole,
        // with its checkpoint, and the batch is applied again.
        let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
        let (stored, generation) = checkpoints::lock(&mut tx, &name).await?;
        let checkpoint = self.observe(stored, generation);
        let Some(fresh) = fresh(events, checkpoint)? else {
            return Ok(applied_or_gap(events, checkpoint));
        };
        let last = fresh.last().and_then(|e| e.position).unwrap_or(checkpoint);
        self.projection.apply(&mut tx, fresh).await?;
        checkpoints::set(&mut tx, &name, last).await?;
        tx.commit().await?;
        self.note_applied(last);
        self.note_saved(last);
        Ok(Applied::UpTo(last))
    }

    /// A PostgreSQL batch where the stored checkpoint is still the one this process last
    /// committed (no other instance applied a batch since): the checkpoint is moved to the
    /// batch's end by the statement that locks it, so the batch costs one statement fewer than
    /// locking it, reading it and saving it at the end. `None` where that is not known to hold
    /// (nothing saved here yet, or the row was moved meanwhile): the batch then goes the locking
    /// way, which reads the checkpoint from the store.
    pub(super) async fn apply_after_own_commit(
        &self,
        name: &str,
        events: &[StoredEvent],
    ) -> Result<Option<Applied>, ProjectionError> {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).1;
        let checkpoint = *self.applied.borrow();
        if saved == 0 {
            return Ok(None);
        }
        let Some(fresh) = fresh(events, checkpoint)? else { return Ok(None) };
        let last = fresh.last().and_then(|e| e.position).unwrap_or(checkpoint);
        let mut tx = self.log.store().begin(File::ReadModels, Durability::Relaxed).await?;
        if !checkpoints::move_from(&mut tx, name, saved, last, self.generation()).await? {
            // Dropped, it rolls back.
            return Ok(None);
        }
        self.projection.apply(&mut tx, fresh).await?;
        tx.commit().await?;
        self.note_applied(last);
        self.note_saved(last);
        Ok(Some(Applied::UpTo(last)))
    }

    /// A batch that continues exactly from the checkpoint this process knows and that the
    /// projection ignores entirely only moves the checkpoint: in memory at once (readers here
    /// wait on it), in the store at most every [`CHECKPOINT_EVERY`] (monotonic, so it never
    /// moves another instance's further checkpoint back). Losing the unsaved part in a crash
    /// costs a replay of events that change nothing. `None` when the batch needs a transaction.
    pub(super) async fn skip_ignored(
        &self,
        events: &[StoredEvent],
    ) -> Result<Option<Applied>, ProjectionError> {
        let known = *self.applied.borrow();
        let (Some(first), Some(last)) =
            (events.first().and_then(|e| e.position), events.last().and_then(|e| e.position))
        else {
            return Ok(None);
        };
        // Contiguous too: with several instances sharing a JetStream consumer, a batch from the
        // bus can lack an event another instance was handed, which this one must not step over.
        let contiguous = usize::try_from(last - first + 1).is_ok_and(|span| span == events.len())
            && events
                .windows(2)
                .all(|w| matches!((w[0].position, w[1].position), (Some(a), Some(b)) if b == a + 1));
        if known == 0
            || first != known + 1
            || !contiguous
            || events.iter().any(|e| self.projection.handles(e))
        {
            return Ok(None);
        }
        self.note_applied(last);
        let due = self.saved.lock().unwrap_or_else(|p| p.into_inner()).0.elapsed() >= CHECKPOINT_EVERY;
        if due {
            self.save_checkpoint(last).await?;
        }
        Ok(Some(Applied::UpTo(last)))
    }

    /// The checkpoint a batch continues from: the stored one, or this process's when that is
    /// further. Everything up to this process's was applied in a committed batch or ignored by
    /// the projection (and not saved yet), so nothing before it needs applying.
    pub(super) fn effective_checkpoint(&self, stored: i64) -> i64 {
        self.note_applied(stored);
        *self.applied.borrow()
    }

    /// The checkpoint a batch continues from, given the stored checkpoint and its generation.
    /// Where the generation is not the one this process last saw, a rebuild cleared the read
    /// model since: what this process knew applied is gone, so it forgets it and goes on from
    /// the stored checkpoint (without this, its further checkpoint would have the rebuild skip
    /// everything between, and lose those rows without a word).
    pub(super) fn observe(&self, stored: i64, generation: i64) -> i64 {
        let known = self.generation.swap(generation, std::sync::atomic::Ordering::SeqCst);
        if known != generation && known != checkpoints::UNKNOWN_GENERATION {
            tracing::info!(
                projection = self.name(),
                checkpoint = stored,
                generation,
                "the read model was rebuilt elsewhere; going on from the rebuild's checkpoint"
            );
            self.applied.send_replace(stored);
            *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = (tokio::time::Instant::now(), stored);
        }
        self.effective_checkpoint(stored)
    }

    /// The checkpoint's generation as this process last read it.
    pub(super) fn generation(&self) -> i64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The stored checkpoint and its generation (0 and 0 before the first batch).
    pub(super) async fn stored_checkpoint(&self) -> Result<(i64, i64), ProjectionError> {
        Ok(checkpoints::read_with_generation(self.log.store(), &self.checkpoint_name()).await?)
    }

    /// Notes that the store's checkpoint is at least `position`.
    pub(super) fn note_saved(&self, position: i64) {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        *saved = (tokio::time::Instant::now(), saved.1.max(position));
    }

    /// Moves the stored checkpoint forward to `position` (never back), outside any batch.
    pub(super) async fn save_checkpoint(&self, position: i64) -> Result<(), ProjectionError> {
        checkpoints::advance(self.log.store(), &self.checkpoint_name(), position, self.generation()).await?;
        self.note_saved(position);
        Ok(())
    }

    /// Saves the checkpoint this process knows, if the store's is behind it: for a projector
    /// that stops or falls idle after batches that only moved it in memory.
    pub async fn flush_checkpoint(&self) -> Result<(), ProjectionError> {
        let known = *self.applied.borrow();
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).1;
        if known > saved {
            self.save_checkpoint(known).await?;
        }
        Ok(())
    }
}

/// The part of `events` after `checkpoint`, if it continues the checkpoint without a gap.
pub(super) fn fresh(
    events: &[StoredEvent],
    checkpoint: i64,
) -> Result<Option<&[StoredEvent]>, ProjectionError> {
    let start = events.iter().position(|e| e.position.is_some_and(|p| p > checkpoint));
    let Some(start) = start else { return Ok(None) };
    let fresh = &events[start..];
    if fresh[0].position != Some(checkpoint + 1) {
        return Ok(None);
    }
    // Log positions are gap-free; a hole inside the batch means it was assembled wrongly.
    let contiguous =
        fresh.windows(2).all(|w| matches!((w[0].position, w[1].position), (Some(a), Some(b)) if b == a + 1));
    Ok(contiguous.then_some(fresh))
}

pub(super) fn applied_or_gap(events: &[StoredEvent], checkpoint: i64) -> Applied {
    let beyond = events.iter().any(|e| e.position.is_some_and(|p| p > checkpoint));
    if beyond {
        Applied::Gap { checkpoint }
    } else {
        Applied::UpTo(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    pub(super) fn at(position: i64) -> StoredEvent {
        StoredEvent {
            position: Some(position),
            aggregate_type: "conversation".into(),
            aggregate_id: "c".into(),
            sequence: position,
            event_type: "E".into(),
            event_version: "1.0".into(),
            payload: json!({}).into(),
            metadata: json!({}).into(),
        }
    }

    #[test]
    pub(super) fn what_the_checkpoint_covers_is_skipped() {
        let events = vec![at(3), at(4), at(5)];
        let fresh = fresh(&events, 4).expect("readable").expect("continues the checkpoint");
        assert_eq!(fresh.iter().map(|e| e.position).collect::<Vec<_>>(), vec![Some(5)]);
    }

    #[test]
    pub(super) fn a_batch_after_a_gap_is_refused() {
        let events = vec![at(7), at(8)];
        assert!(fresh(&events, 5).expect("readable").is_none());
        assert_eq!(applied_or_gap(&events, 5), Applied::Gap { checkpoint: 5 });
    }

    #[test]
    pub(super) fn a_batch_wholly_applied_reports_the_checkpoint() {
        let events = vec![at(1), at(2)];
        assert!(fresh(&events, 2).expect("readable").is_none());
        assert_eq!(applied_or_gap(&events, 2), Applied::UpTo(2));
    }
}
