//! The projector runtime: feeds the global log into a read model exactly once. A projection is
//! a named consumer with a checkpoint; each batch's read-model update and the checkpoint commit
//! in one transaction, after locking the checkpoint row, so a redelivered, duplicated or
//! concurrently applied event has no second effect, and several instances of one projector
//! (separate processes) can run at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};

use colloquy_infra::log::Metadata;
use colloquy_infra::relay::{from_cloud_event, EventBus, JetStreamTransport, STORE_HEADER};
use colloquy_infra::{on_tx, Durability, File};
use colloquy_infra::{GlobalLog, Store, StoreError, StoredEvent};

use crate::failure::{Failures, Stall};

/// Events read from the store per catch-up batch. Where traffic interleaves many conversations,
/// a batch writes about one read-model row per conversation it touches, so larger batches write
/// each row less often (SQLite replay of 401,600 events over 800 conversations: 21,540 events/s
/// at 1,000, 58,970 at 5,000).
const CATCH_UP_BATCH: i64 = 5000;

/// Events per batch when rebuilding page by page (a projection without a [`Fold`]), and per
/// read when rebuilding through one: the most one log read returns. No one reads a read model
/// while it is rebuilt, so its transactions may hold the SQLite read models' writer (which the
/// other projectors share) longer than a live catch-up's should, and a row is written once per
/// 10,000 events instead of once per 5,000
/// (SQLite rebuild of 401,600 events interleaved over 800 conversations: 40,123 and 42,260
/// events/s at 5,000, 55,357 and 55,526 at 10,000, for 30 to 55 MB more peak memory).
const REBUILD_BATCH: i64 = colloquy_infra::log::MAX_PAGE;

/// How a rebuild through a [`Fold`] reads and commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildLimits {
    /// Events per read of the log.
    pub page: i64,
    /// The most rows the fold holds before they are committed (about 1 kB each in
    /// `conversation_list`): the rebuild's memory.
    pub held: usize,
    /// The most events one commit covers: how much a crash or an error costs, and how long a
    /// commit keeps SQLite's read-model writer.
    pub events: usize,
}

impl Default for RebuildLimits {
    fn default() -> Self {
        Self { page: REBUILD_BATCH, held: 20_000, events: 200_000 }
    }
}

/// How a live catch-up through a [`Fold`] reads and commits: its pages as without one, and
/// commits a quarter of a rebuild's, since readers wait on them and, on SQLite, the other
/// projectors' batches wait for the read models' writer.
const CATCH_UP_FOLD: RebuildLimits = RebuildLimits { page: CATCH_UP_BATCH, held: 20_000, events: 50_000 };

/// Creates a batch's checkpoint row if missing and locks it, returning its position: concurrent
/// instances of a projector take turns, and each then sees what the other applied.
/// With it comes the checkpoint's generation, which a rebuild moves on (see [`Projector::observe`]).
const LOCK_CHECKPOINT: &str = "INSERT INTO checkpoints (name, position) VALUES ($1, 0)
     ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position, generation";

/// Reads a checkpoint and its generation without locking it.
const READ_CHECKPOINT: &str = "SELECT position, generation FROM checkpoints WHERE name = $1";

/// A generation no checkpoint has: what a projector knows before it has read one.
const UNKNOWN_GENERATION: i64 = -1;

/// Saves a batch's checkpoint, in the batch's transaction.
const SAVE_CHECKPOINT: &str =
    "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP WHERE name = $1";

/// Moves the checkpoint from where this process last saved it (`$3`) to the batch's end, taking
/// its row lock as [`LOCK_CHECKPOINT`] does: no row when another instance moved it since.
const MOVE_CHECKPOINT: &str = "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP
     WHERE name = $1 AND position = $3 AND generation = $4";

/// A live batch (or a JetStream fetch) that takes longer than this is logged as a warning: at
/// the rates measured, a batch is applied in milliseconds, so one this slow is a stall to explain.
const SLOW_BATCH: Duration = Duration::from_secs(1);

/// Pages a catch-up holds ready beyond those being read and the one being applied.
const READ_AHEAD: usize = 1;

/// Full pages a catch-up reads at once: on PostgreSQL a read's cost is mostly the server
/// printing payloads, on one core per connection.
const READ_PARALLEL: usize = 2;

/// How long a projector on the in-process bus over SQLite lets a batch gather, unless told
/// otherwise ([`Projector::with_linger`]).
pub const BUS_LINGER: Duration = Duration::from_millis(5);

/// How often requests waiting for a position read the stored checkpoint, all together (see
/// [`Projector::wait_for`]).
pub const WAITERS_READ_EVERY: Duration = Duration::from_millis(50);

/// How often a checkpoint that only batches the projection ignores moved is written.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

pub use colloquy_infra::Tx;

/// Failures of a projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read as its type.
    #[error("event {aggregate_type}/{aggregate_id}#{sequence} is unreadable: {reason}")]
    Unreadable {
        /// Its aggregate type.
        aggregate_type: String,
        /// Its aggregate id.
        aggregate_id: String,
        /// Its sequence.
        sequence: i64,
        /// Why.
        reason: String,
    },
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

/// A read model fed by the log.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Its name, which names its checkpoint (`projection:<name>`).
    fn name(&self) -> &'static str;

    /// Whether `apply` may do anything with this event. A batch of events it ignores moves the
    /// checkpoint without a transaction (see [`Projector::apply`]); a projection that cannot
    /// tell answers true (the default).
    fn handles(&self, _event: &StoredEvent) -> bool {
        true
    }

    /// Applies events, in log order, inside `tx`.
    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError>;

    /// The tables it owns: on SQLite moved into the read models' file (so that they commit
    /// with the checkpoint), and emptied by [`Projection::clear`] unless it says otherwise. A
    /// table a projection writes must be here (a test checks every table of a new store is
    /// either the events' side or declared).
    fn tables(&self) -> &'static [&'static str];

    /// Removes everything the projection wrote, inside `tx` (for a rebuild): by default, every
    /// row of its tables.
    async fn clear(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        Ok(tx.empty(self.tables()).await?)
    }

    /// How much of each event's metadata it reads: all of it (the default), or only the
    /// tenant, which reads the log faster.
    fn metadata(&self) -> Metadata {
        Metadata::All
    }

    /// What a rebuild or a catch-up folds the log into between its commits, for a projection
    /// whose events rewrite rows that many events share; `None` (the default) to apply page by
    /// page.
    fn fold(&self) -> Option<Box<dyn Fold>> {
        None
    }

    /// Indexes of its tables that a rebuild drops while it writes the rows and builds again at
    /// its end (see [`crate::deferred`]): ones that only queries use. Not a unique index, nor
    /// one that its own statements look rows up by. None by default.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A rebuild's (or a catch-up's) working state between commits. A projection whose events each
/// rewrite a row (`conversation_list`: every message rewrites its conversation's row) holds the
/// rows here across pages, so a row is written once per commit instead of once per page. Where
/// conversations interleave, as they do in a live log, a page touches nearly every active one.
///
/// A commit is written while the next one is folded ([`Fold::seal`]): the fold reads through a
/// transaction of its own, and what it sealed last may not be in the store yet.
#[async_trait::async_trait]
pub trait Fold: Send {
    /// Folds `events` (in log order) in, reading what it needs through `tx`.
    async fn apply(&mut self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError>;

    /// How many rows it holds; they are committed once they reach [`RebuildLimits::held`].
    fn held(&self) -> usize;

    /// Told before its first event that the read model was empty then (a rebuild's replay,
    /// which cleared it in the transaction that reset the checkpoint): what it has not written
    /// itself is not in the store, so it need not be looked up. Whoever else writes moves the
    /// checkpoint, and then nothing folded on this belief is written ([`Written::Moved`]).
    fn starts_empty(&mut self) {}

    /// Drops what it holds, what it sealed last and what [`Fold::starts_empty`] told it: its
    /// last commit was not written, since another instance moved the checkpoint (and may have
    /// written any row).
    fn start_over(&mut self);

    /// Hands over what it holds, to be written, and starts over empty. Until the next `seal`,
    /// what it folds must read what it handed over from that, not from the store: the write may
    /// not have committed yet. (The next `seal` comes only after that write has committed.)
    fn seal(&mut self) -> Box<dyn Sealed>;
}

/// What a [`Fold`] handed over: written in one transaction with the checkpoint.
#[async_trait::async_trait]
pub trait Sealed: Send {
    /// Writes it through `tx`.
    async fn write(self: Box<Self>, tx: &mut Tx<'_>) -> Result<(), ProjectionError>;
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied up to this position (or found it already applied).
    UpTo(i64),
    /// The batch starts after a gap: the events between the checkpoint and it must come first.
    Gap {
        /// The checkpoint.
        checkpoint: i64,
    },
}

/// Runs one projection.
#[derive(Clone)]
pub struct Projector {
    log: GlobalLog,
    projection: Arc<dyn Projection>,
    /// The checkpoint as this process last committed or read it, shared by every clone, so a
    /// reader waiting for a position here is woken by the commit instead of polling the store.
    applied: Arc<watch::Sender<i64>>,
    /// When this process last wrote the checkpoint to the store, and what it wrote, for batches
    /// that only move it.
    saved: Arc<std::sync::Mutex<(tokio::time::Instant, i64)>>,
    /// How long a batch from the in-process bus gathers after its first event; `None` for the
    /// default ([`BUS_LINGER`] on SQLite, nothing on PostgreSQL).
    linger: Option<Duration>,
    /// How a rebuild through a [`Fold`] reads and commits.
    rebuild: RebuildLimits,
    /// When a request waiting for a position last read the stored checkpoint, and how many
    /// times waiters have read it, shared by every clone (see [`Projector::wait_for`]).
    waiters_read: Arc<std::sync::Mutex<(Option<tokio::time::Instant>, u64)>>,
    /// Where it is stopped, if an error keeps it from applying the log, shared by every clone.
    failures: Arc<Failures>,
    /// The checkpoint's generation as this process last read it: a rebuild (in any process)
    /// moves it on, and what this process knew applied before that no longer holds.
    generation: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("projection", &self.projection.name()).finish()
    }
}

impl Projector {
    /// A projector of `projection` over `log`.
    pub fn new(log: GlobalLog, projection: Arc<dyn Projection>) -> Self {
        Self {
            log,
            projection,
            applied: Arc::new(watch::channel(0).0),
            saved: Arc::new(std::sync::Mutex::new((tokio::time::Instant::now(), 0))),
            linger: None,
            rebuild: RebuildLimits::default(),
            waiters_read: Arc::new(std::sync::Mutex::new((None, 0))),
            failures: Arc::new(Failures::default()),
            generation: Arc::new(std::sync::atomic::AtomicI64::new(UNKNOWN_GENERATION)),
        }
    }

    /// Notes that running this projector failed with `error`: logs an ERROR naming the
    /// projection and the checkpoint it is stopped at, and returns how long to pause before the
    /// next try (growing while it fails at the same checkpoint). Until a try gets past it,
    /// [`Projector::stall`] reports it (on `/readyz`).
    pub fn failed(&self, error: &ProjectionError) -> Duration {
        let (stall, pause) = self.failures.note(self.applied(), error.to_string(), chrono::Utc::now());
        tracing::error!(
            projection = self.name(),
            checkpoint = stall.checkpoint,
            attempts = stall.attempts,
            retry_in_s = pause.as_secs(),
            %error,
            "the projection cannot apply the log after its checkpoint; it will try again"
        );
        pause
    }

    /// Where the projector is stopped, while an error keeps it from applying the log.
    pub fn stall(&self) -> Option<Stall> {
        self.failures.stall()
    }

    /// How many times running the projector has failed since the process started.
    pub fn failures(&self) -> u64 {
        self.failures.total()
    }

    /// Lets each batch from the in-process bus gather for `linger` after its first event
    /// (`None`: the default). Longer batches mean fewer, larger read-model transactions, which
    /// on SQLite write fewer pages per event, at the cost of a read model that many milliseconds
    /// further behind.
    #[must_use]
    pub fn with_linger(mut self, linger: Option<Duration>) -> Self {
        self.linger = linger;
        self
    }

    /// Sets how a rebuild through the projection's [`Fold`] reads and commits.
    #[must_use]
    pub fn with_rebuild_limits(mut self, limits: RebuildLimits) -> Self {
        self.rebuild = limits;
        self
    }

    /// Notes that the checkpoint is at least `position`.
    fn note_applied(&self, position: i64) {
        colloquy_infra::store::raise(&self.applied, position);
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// The checkpoint's name.
    pub fn checkpoint_name(&self) -> String {
        format!("projection:{}", self.projection.name())
    }

    /// The last position applied, as stored (a rebuild elsewhere since is noticed here too, so a
    /// reader waiting for a position is not answered from what the rebuild cleared).
    pub async fn checkpoint(&self) -> Result<i64, ProjectionError> {
        let (stored, generation) = self.stored_checkpoint().await?;
        self.observe(stored, generation);
        Ok(stored)
    }

    /// Applies a slice of the log exactly once: what the checkpoint covers is skipped, and a
    /// slice that does not continue from the checkpoint is refused as a gap.
    pub async fn apply(&self, events: &[StoredEvent]) -> Result<Applied, ProjectionError> {
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
        let (stored, generation): (i64, i64) =
            on_tx!(&mut *tx, |conn| sqlx::query_as(LOCK_CHECKPOINT).bind(&name).fetch_one(conn).await?);
        let checkpoint = self.observe(stored, generation);
        let Some(fresh) = fresh(events, checkpoint)? else {
            return Ok(applied_or_gap(events, checkpoint));
        };
        let last = fresh.last().and_then(|e| e.position).unwrap_or(checkpoint);
        self.projection.apply(&mut tx, fresh).await?;
        on_tx!(&mut *tx, |conn| {
            sqlx::query(SAVE_CHECKPOINT).bind(&name).bind(last).execute(conn).await?;
        });
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
    async fn apply_after_own_commit(
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
        let moved = on_tx!(&mut *tx, |conn| {
            sqlx::query(MOVE_CHECKPOINT)
                .bind(name)
                .bind(last)
                .bind(saved)
                .bind(self.generation())
                .execute(conn)
                .await?
                .rows_affected()
        });
        if moved != 1 {
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
    async fn skip_ignored(&self, events: &[StoredEvent]) -> Result<Option<Applied>, ProjectionError> {
        let known = *self.applied.borrow();
        let (Some(first), Some(last)) =
            (events.first().and_then(|e| e.position), events.last().and_then(|e| e.position))
        else {
            return Ok(None);
        };
        if known == 0 || first != known + 1 || events.iter().any(|e| self.projection.handles(e)) {
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
    fn effective_checkpoint(&self, stored: i64) -> i64 {
        self.note_applied(stored);
        *self.applied.borrow()
    }

    /// The checkpoint a batch continues from, given the stored checkpoint and its generation.
    /// Where the generation is not the one this process last saw, a rebuild cleared the read
    /// model since: what this process knew applied is gone, so it forgets it and goes on from
    /// the stored checkpoint (without this, its further checkpoint would have the rebuild skip
    /// everything between, and lose those rows without a word).
    fn observe(&self, stored: i64, generation: i64) -> i64 {
        let known = self.generation.swap(generation, std::sync::atomic::Ordering::SeqCst);
        if known != generation && known != UNKNOWN_GENERATION {
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
    fn generation(&self) -> i64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The stored checkpoint and its generation (0 and 0 before the first batch).
    async fn stored_checkpoint(&self) -> Result<(i64, i64), ProjectionError> {
        let name = self.checkpoint_name();
        let found: Option<(i64, i64)> = colloquy_infra::on_pool!(self.log.store(), |pool| {
            sqlx::query_as(READ_CHECKPOINT).bind(&name).fetch_optional(pool).await?
        });
        Ok(found.unwrap_or((0, 0)))
    }

    /// Notes that the store's checkpoint is at least `position`.
    fn note_saved(&self, position: i64) {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        *saved = (tokio::time::Instant::now(), saved.1.max(position));
    }

    /// Moves the stored checkpoint forward to `position` (never back), outside any batch.
    async fn save_checkpoint(&self, position: i64) -> Result<(), ProjectionError> {
        let name = self.checkpoint_name();
        let store = self.log.store();
        // Not over a rebuild's checkpoint: that one moves only with the rebuild's own batches.
        let sql = "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP
                   WHERE name = $1 AND position < $2 AND generation = $3";
        let generation = self.generation();
        let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
        on_tx!(&mut *tx, |conn| {
            sqlx::query(sql).bind(&name).bind(position).bind(generation).execute(conn).await?;
        });
        tx.commit().await?;
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
    async fn catch_up_paged(&self, size: i64, mut progress: impl FnMut(i64)) -> Result<i64, ProjectionError> {
        let (stored, generation) = self.stored_checkpoint().await?;
        let mut checkpoint = self.observe(stored, generation);
        'read: loop {
            let mut pages = read_ahead(self.log.clone(), checkpoint, size, self.projection.metadata());
            while let Some(page) = pages.recv().await {
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

    async fn clear_and_replay(&self, progress: impl FnMut(i64)) -> Result<i64, ProjectionError> {
        let name = self.checkpoint_name();
        let store = self.log.store();
        // A new generation: a projector elsewhere that applied batches before the reset learns
        // from it that they are gone (see `observe`).
        let reset = "INSERT INTO checkpoints (name, position, generation) VALUES ($1, 0, 1)
                     ON CONFLICT (name) DO UPDATE SET position = 0, generation = checkpoints.generation + 1,
                       updated_at = CURRENT_TIMESTAMP
                     RETURNING generation";
        let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
        let generation: i64 =
            on_tx!(&mut *tx, |conn| sqlx::query_scalar(reset).bind(&name).fetch_one(conn).await?);
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
    /// Each commit is written by a task of its own while the next one folds (on PostgreSQL a
    /// rebuild's row writes took 11 of its 17.5 s with the folding stopped). Each commit is a
    /// batch like [`Projector::apply`]'s: the checkpoint row is locked first. The folding ran
    /// ahead of it, so a checkpoint that another instance moved meanwhile is found then: what was
    /// folded since is dropped, and the replay reads on from that instance's checkpoint.
    async fn replay_folded(
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
    async fn fold_commit(
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
    fn debug_age(&self, batch: &[StoredEvent]) -> Option<f64> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            batch.first().and_then(StoredEvent::age_ms)
        } else {
            None
        }
    }

    /// Logs at debug level how a live batch went: its oldest event's age when received, how
    /// long it was waited for (the fetch, or the bus's linger), how long it took to apply, and
    /// its newest event's age once applied. Where an event's time to the read model goes.
    fn debug_timings(
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

    /// Keeps the read model current until `stop` turns true, fed by the in-process bus.
    pub async fn run_on_bus(
        &self,
        bus: &EventBus,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        // Subscribe first, then catch up, so nothing falls between the two.
        let mut events = bus.subscribe();
        // On SQLite every transaction writes each page it touches whole, and a batch's rows share
        // index pages: letting a batch gather for a moment after its first event means fewer,
        // larger transactions and fewer pages written per event.
        let sqlite = !self.log.store().is_postgres();
        let linger = self.linger.unwrap_or(if sqlite { BUS_LINGER } else { Duration::ZERO });
        self.catch_up().await?;
        self.failures.recovered();
        loop {
            let first = tokio::select! {
                received = events.recv() => received,
                _ = stop.changed() => return self.flush_checkpoint().await,
                () = tokio::time::sleep(CHECKPOINT_EVERY) => {
                    self.flush_checkpoint().await?;
                    continue;
                }
            };
            match first {
                Ok(event) => {
                    if linger > Duration::ZERO {
                        tokio::time::sleep(linger).await;
                    }
                    let mut batch = vec![(*event).clone()];
                    while batch.len() < 1000 {
                        match events.try_recv() {
                            Ok(event) => batch.push((*event).clone()),
                            Err(_) => break,
                        }
                    }
                    let received_at = tokio::time::Instant::now();
                    let received_age = self.debug_age(&batch);
                    if let Applied::Gap { .. } = self.apply(&batch).await? {
                        self.catch_up().await?;
                    }
                    self.debug_timings(&batch, received_age, linger, received_at);
                    let took = received_at.elapsed();
                    if took > SLOW_BATCH {
                        tracing::warn!(
                            projection = self.name(),
                            events = batch.len(),
                            took_ms = took.as_secs_f64() * 1e3,
                            "a live batch took over a second to apply"
                        );
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return self.flush_checkpoint().await,
            }
        }
    }

    /// Keeps the read model current until `stop` turns true by reading the store whenever the
    /// log's head moves (or every 50 ms): for a projector process without NATS.
    pub async fn run_polling(&self, mut stop: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        let mut head = self.log.watch_head();
        loop {
            self.catch_up().await?;
            self.failures.recovered();
            tokio::select! {
                _ = head.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => self.flush_checkpoint().await?,
            }
            if *stop.borrow() {
                return self.flush_checkpoint().await;
            }
        }
    }

    /// The last position this process knows applied: by its own projector, or read from the
    /// store by a waiter.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until the checkpoint reaches `position`, up to `timeout`. True when it did. A
    /// commit by this process's projector wakes the waiter at once. For a projector running in
    /// another process the stored checkpoint is read besides, every [`WAITERS_READ_EVERY`] by
    /// whichever waiter comes first, and what it reads wakes them all: however many requests
    /// wait, they read the store about once per interval. (Each read its own every 50 ms before:
    /// with hundreds of requests waiting on a projector that had fallen behind, the embedded
    /// store answered thousands of checkpoint reads a second while commands waited for a
    /// connection.)
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
    fn claim_waiters_read(&self) -> bool {
        let mut read = self.waiters_read.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if read.0.is_some_and(|at| now.duration_since(at) < WAITERS_READ_EVERY) {
            return false;
        }
        *read = (Some(now), read.1 + 1);
        true
    }

    /// How many times requests waiting for a position have read the stored checkpoint.
    pub fn waiters_reads(&self) -> u64 {
        self.waiters_read.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// What [`Projector::fold_commit`] folded.
struct Folded {
    /// The position it folded to.
    up_to: i64,
    /// It reached the head.
    ended: bool,
    /// The pages being read do not continue from `up_to`.
    read_on: bool,
}

/// How a commit written behind the folding ended.
enum Written {
    /// Committed with the checkpoint at this position.
    UpTo(i64),
    /// Not written: the stored checkpoint had moved from where the commit started.
    Moved { stored: i64, generation: i64 },
}

/// A commit being written by a task of its own.
struct Writing(tokio::task::JoinHandle<Result<Written, ProjectionError>>);

impl Writing {
    /// Writes `sealed` with the checkpoint `up_to`, if the stored checkpoint (or `known`, this
    /// process's, when further) is still `from`.
    /// Where the checkpoint's generation is no longer `generation`, a rebuild cleared the read
    /// model meanwhile, and nothing is written either.
    fn start(
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
            let (stored, stored_generation): (i64, i64) =
                on_tx!(&mut *tx, |conn| sqlx::query_as(LOCK_CHECKPOINT).bind(&name).fetch_one(conn).await?);
            if stored_generation != generation || stored.max(known) != from {
                return Ok(Written::Moved { stored, generation: stored_generation });
            }
            sealed.write(&mut tx).await?;
            on_tx!(&mut *tx, |conn| {
                sqlx::query(SAVE_CHECKPOINT).bind(&name).bind(up_to).execute(conn).await?;
            });
            tx.commit().await?;
            Ok(Written::UpTo(up_to))
        }))
    }

    async fn finish(self) -> Result<Written, ProjectionError> {
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
fn read_ahead(
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

/// The durable JetStream consumer through which a process's projectors read the stream.
pub const JETSTREAM_CONSUMER: &str = "projections";

/// Feeds `bus` from JetStream until `stop` turns true, for this process's projectors, each of
/// which reads the bus ([`Projector::run_on_bus`]): one durable consumer, [`JETSTREAM_CONSUMER`],
/// for them all, so NATS delivers each event to the process once and takes one ack for it,
/// instead of once per projection (each projection had a consumer of its own until 2026-12-01;
/// those are deleted here, since nothing reads them now).
///
/// A batch is acknowledged once it is on the bus, before the projectors apply it: what makes
/// each projection exactly-once is its checkpoint, not the ack. A projector that misses events
/// (it was restarting, or fell more than the bus holds behind) sees the gap at its next batch and
/// catches up from the store, as it does when it starts; a message redelivered after a crash is
/// skipped by the checkpoint. The feed does not wait for a slow projector: one that falls more
/// than the bus holds (8,192 events) behind reads the store instead, so it holds no other back.
///
/// Where JetStream fails (at the start or on a fetch) or the client is not connected,
/// `projectors` catch up from the store before the feed tries again (every 50 ms while
/// disconnected), so their read models do not wait for NATS to come back.
pub async fn feed_from_jetstream(
    transport: &JetStreamTransport,
    bus: &EventBus,
    projectors: &[Projector],
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let consumer = match shared_consumer(transport).await {
        Ok(consumer) => consumer,
        Err(error) => {
            catch_up_all(projectors).await?;
            return Err(error);
        }
    };
    let mut connected = true;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // A fetch on a client that knows it is disconnected neither fails nor delivers; it only
        // waits out its expiry. The projectors read the store meanwhile.
        let state = transport.context().client().connection_state();
        if state != async_nats::connection::State::Connected {
            if connected {
                tracing::warn!(%state, "NATS is not connected; the projectors follow the store until it is");
                connected = false;
            }
            catch_up_all(projectors).await?;
            if wait_or_stop(&mut stop, Duration::from_millis(50)).await {
                return Ok(());
            }
            continue;
        }
        connected = true;
        let fetching = tokio::time::Instant::now();
        let fetched =
            consumer.fetch().max_messages(1000).expires(Duration::from_millis(250)).messages().await;
        let mut messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "JetStream fetch failed; the projectors catch up from the store");
                catch_up_all(projectors).await?;
                if wait_or_stop(&mut stop, Duration::from_millis(200)).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut received = Vec::new();
        let mut batch = Vec::new();
        let mut foreign = 0;
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { break };
            // Only this store's relay publishes what the read models take: a message from
            // anything else (another store's relay, a stray publisher) never replaces an event.
            let from = message.headers.as_ref().and_then(|h| h.get(STORE_HEADER)).map(|v| v.as_str());
            if from.is_some() && from == transport.store_id() {
                if let Some(event) = from_cloud_event(&message.payload) {
                    batch.push(event);
                }
            } else {
                foreign += 1;
            }
            received.push(message);
        }
        if foreign > 0 {
            tracing::error!(
                foreign,
                stream = transport.stream_name(),
                "the stream holds messages that this store's relay did not publish; the projectors take them from the store"
            );
            catch_up_all(projectors).await?;
        }
        let took = fetching.elapsed();
        if took > SLOW_BATCH {
            // The fetch expires after 250 ms: NATS (or this process) was stalled.
            tracing::warn!(
                events = batch.len(),
                took_ms = took.as_secs_f64() * 1e3,
                "a JetStream fetch took over a second"
            );
        }
        batch.sort_by_key(|e| e.position);
        batch.dedup_by_key(|e| e.position);
        bus.publish(&batch);
        for message in received {
            if let Err(error) = message.ack().await {
                tracing::debug!(%error, "ack failed; the message will be redelivered and skipped");
            }
        }
    }
}

/// Catches every one of `projectors` up from the store.
async fn catch_up_all(projectors: &[Projector]) -> Result<(), ProjectionError> {
    for projector in projectors {
        projector.catch_up().await?;
    }
    Ok(())
}

/// The process's projectors' shared consumer, made if missing, after deleting the consumers of
/// their own that projections had before.
async fn shared_consumer(transport: &JetStreamTransport) -> Result<PullConsumer, ProjectionError> {
    let nats = |e: &dyn std::fmt::Display| ProjectionError::Nats(e.to_string());
    let stream = transport.context().get_stream(transport.stream_name()).await.map_err(|e| nats(&e))?;
    for projection in crate::all() {
        let former = format!("projection-{}", projection.name());
        if stream.delete_consumer(&former).await.is_ok() {
            tracing::info!(consumer = %former, "deleted a projection's own JetStream consumer, replaced by one for all");
        }
    }
    stream
        .get_or_create_consumer::<pull::Config>(
            JETSTREAM_CONSUMER,
            pull::Config {
                durable_name: Some(JETSTREAM_CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats(&e))
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(pause) => {}
    }
    *stop.borrow()
}

/// The part of `events` after `checkpoint`, if it continues the checkpoint without a gap.
fn fresh(events: &[StoredEvent], checkpoint: i64) -> Result<Option<&[StoredEvent]>, ProjectionError> {
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

fn applied_or_gap(events: &[StoredEvent], checkpoint: i64) -> Applied {
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

    fn at(position: i64) -> StoredEvent {
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
    fn what_the_checkpoint_covers_is_skipped() {
        let events = vec![at(3), at(4), at(5)];
        let fresh = fresh(&events, 4).expect("readable").expect("continues the checkpoint");
        assert_eq!(fresh.iter().map(|e| e.position).collect::<Vec<_>>(), vec![Some(5)]);
    }

    #[test]
    fn a_batch_after_a_gap_is_refused() {
        let events = vec![at(7), at(8)];
        assert!(fresh(&events, 5).expect("readable").is_none());
        assert_eq!(applied_or_gap(&events, 5), Applied::Gap { checkpoint: 5 });
    }

    #[test]
    fn a_batch_wholly_applied_reports_the_checkpoint() {
        let events = vec![at(1), at(2)];
        assert!(fresh(&events, 2).expect("readable").is_none());
        assert_eq!(applied_or_gap(&events, 2), Applied::UpTo(2));
    }
}
