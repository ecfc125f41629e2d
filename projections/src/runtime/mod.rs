//! The projector runtime: feeds the global log into a read model exactly once. A projection is
//! a named consumer with a checkpoint; each batch's read-model update and the checkpoint commit
//! in one transaction, after locking the checkpoint row, so a redelivered, duplicated or
//! concurrently applied event has no second effect, and several instances of one projector
//! (separate processes) can run at once. This file holds the contract ([`Projection`], [`Fold`])
//! and the [`Projector`]; `apply.rs` the exactly-once batch, `replay.rs` catch-up and rebuild,
//! `live.rs` the live feeds, `wait.rs` waiting for a position.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};

use colloquy_infra::event::Metadata;
use colloquy_infra::relay::JetStreamTransport;
use colloquy_infra::{checkpoints, EventBus};
use colloquy_infra::{DecodeError, GlobalLog, Store, StoreError, StoredEvent};
use colloquy_infra::{Durability, File};

use crate::failure::{Failures, Stall};

mod apply;
mod live;
mod replay;
mod wait;

pub use live::feed_from_jetstream;

/// Events read from the store per catch-up batch. Where traffic interleaves many conversations,
/// a batch writes about one read-model row per conversation it touches, so larger batches write
/// each row less often (SQLite replay of 401,600 events over 800 conversations: 21,540 events/s
/// at 1,000, 58,970 at 5,000).
const CATCH_UP_BATCH: i64 = 5000;

/// Events per batch when rebuilding page by page (a projection without a [`Fold`]), and per
/// read when rebuilding through one: the most one log read returns. No one reads a read model
/// while it is rebuilt, so its transactions may hold the SQLite read models' writer (which the
/// other projectors share) longer than a live catch-up's should, and a row is written once per
/// 10,000 events instead of once per 5,000 (faster, for a little more peak memory).
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
    #[error(transparent)]
    Unreadable(#[from] DecodeError),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
}

impl From<colloquy_infra::relay::RelayError> for ProjectionError {
    fn from(error: colloquy_infra::relay::RelayError) -> Self {
        match error {
            colloquy_infra::relay::RelayError::Store(error) => Self::Store(error),
            other => Self::Nats(other.to_string()),
        }
    }
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

    /// Whether it is background work that holds back its live batches while the process's
    /// timers fire late ([`crate::deadlines`]): analytics, not what an agent or a timer reads
    /// (false by default).
    fn defers_to_deadlines(&self) -> bool {
        false
    }

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
    /// Whether the process's timers are behind, which a deferring projection waits for.
    deadlines: crate::deadlines::Deadlines,
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
            generation: Arc::new(std::sync::atomic::AtomicI64::new(checkpoints::UNKNOWN_GENERATION)),
            deadlines: crate::deadlines::Deadlines::default(),
        }
    }

    /// Lets a projection that [defers to deadlines](Projection::defers_to_deadlines) hold back
    /// its live batches while `deadlines` says the process's timers are behind.
    #[must_use]
    pub fn with_deadlines(mut self, deadlines: crate::deadlines::Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Before a live batch or a catch-up page (or fold): a deferring projection waits while the
    /// process's timers are behind (at most [`crate::deadlines::LONGEST_WAIT`]).
    async fn defer_to_deadlines(&self) {
        if self.projection.defers_to_deadlines() {
            self.deadlines.wait(crate::deadlines::LONGEST_WAIT).await;
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

    /// Sets how a rebuild through the projection's [`Fold`] reads and commits (tests use small
    /// ones to make a rebuild commit often).
    #[cfg(feature = "testing")]
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
}
