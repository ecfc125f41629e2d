//! The store's connections ([`Backend`]) and the one way to write through them: `Store::begin` opens a transaction on the file a write belongs to, at
//! the durability it needs, and on SQLite holds that file's writer lock until the transaction
//! ends, so no write picks its lock, its connection or its `synchronous` setting by hand.
//!
//! SQLite allows one writer per file, so each of its two files has one writer: an in-process
//! lock its writes queue on, and one connection they share. Event appends and the other writes
//! of the events' side (tokens, counters, idempotency keys) write the events' file; projectors,
//! checkpoints and snapshots the read models' file, at the same time. One connection per
//! writer, because a connection empties its page cache whenever another has committed since its
//! last transaction.

use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

/// Runs `$body` with `$pool` bound to whichever pool `$store` has (PostgreSQL or SQLite), for
/// statements whose text is the same in both dialects. The body is expanded once per pool type.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.reads() {
            $crate::tx::Reads::Postgres($pool) => $body,
            $crate::tx::Reads::Sqlite($pool) => $body,
        }
    };
}

/// The store's connections for reading (a read model's queries, a test's checks): every write
/// goes through [`Store::begin`] or [`Store::append`].
#[derive(Debug, Clone, Copy)]
pub enum Reads<'a> {
    /// PostgreSQL's pool.
    Postgres(&'a PgPool),
    /// SQLite's pool of readers (each attaches the read models' file).
    Sqlite(&'a SqlitePool),
}

impl<'a> Reads<'a> {
    /// The PostgreSQL pool, on PostgreSQL.
    pub fn postgres(self) -> Option<&'a PgPool> {
        match self {
            Self::Postgres(pool) => Some(pool),
            Self::Sqlite(_) => None,
        }
    }

    /// The SQLite pool, on SQLite.
    pub fn sqlite(self) -> Option<&'a SqlitePool> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(pool) => Some(pool),
        }
    }
}

/// The store's connections: PostgreSQL's pool, or SQLite's readers and its two writers.
pub(crate) enum Backend {
    Postgres {
        pool: PgPool,
    },
    // SQLite allows one writer per file at a time; writers queue on `write_lock` (events) or
    // `read_model_lock` (read models) in process instead of spinning on SQLITE_BUSY, which is
    // both fairer and faster.
    Sqlite {
        pool: SqlitePool,
        // One connection for writes to the events' file (see `tx.rs`).
        writes: SqlitePool,
        write_lock: Arc<Mutex<()>>,
        // The read models' file has a writer of its own: one connection and one lock.
        read_model_writes: SqlitePool,
        read_model_lock: Arc<Mutex<()>>,
    },
}

/// Whether an SQLite commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// It does (`synchronous = FULL`): what is committed survives a crash. For events.
    Durable,
    /// It does not (`synchronous = NORMAL`), for writes that are done again when a crash loses
    /// them (a read model with its checkpoint). The file's WAL is synced when it is checkpointed;
    /// a crash before then loses the latest such commits, whole (recovery stops at the first
    /// incomplete one), and their batches are applied again from the events.
    Relaxed,
}

/// How a PostgreSQL transaction of [`Durability::Relaxed`] writes begins: its commit does not
/// wait for the WAL flush (a read model with its checkpoint, a relay's checkpoint), since a crash
/// that loses it loses it whole and the work is done again.
pub const BEGIN_RELAXED: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Which side of the store a write belongs to: on SQLite, one of its two files, each with a
/// writer of its own; on PostgreSQL, the one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// The events, the log, tenants, tokens, counters, idempotency keys (`main`).
    Events,
    /// The read models and their checkpoints (`read_models`).
    ReadModels,
}

impl Durability {
    /// The statements that begin the events' writer's transaction with the events file's write
    /// lock taken at once (a second process's writer waits instead of failing at its first
    /// write), and only that file's: `BEGIN IMMEDIATE` would take the attached read models'
    /// file's lock too, so that every projector batch waited for each append and each append
    /// for every batch, in SQLite's busy sleeps (BENCHMARKS.md, "the hash chain's cost on
    /// SQLite, bisected"). A write that changes nothing takes the one lock.
    pub(crate) fn begin_events_write(self) -> &'static str {
        match self {
            Self::Durable => "PRAGMA main.synchronous = FULL; BEGIN; DELETE FROM main.event_hashes WHERE 0",
            Self::Relaxed => "PRAGMA main.synchronous = NORMAL; BEGIN; DELETE FROM main.event_hashes WHERE 0",
        }
    }

    /// The statement that sets `synchronous` for `file` and opens a transaction, in one round
    /// trip (`synchronous` is kept per attached file).
    pub(crate) fn begin(self, file: File) -> &'static str {
        match (file, self) {
            (File::Events, Self::Durable) => "PRAGMA main.synchronous = FULL; BEGIN",
            (File::Events, Self::Relaxed) => "PRAGMA main.synchronous = NORMAL; BEGIN",
            (File::ReadModels, Self::Durable) => "PRAGMA read_models.synchronous = FULL; BEGIN",
            (File::ReadModels, Self::Relaxed) => "PRAGMA read_models.synchronous = NORMAL; BEGIN",
        }
    }
}

/// Runs `$body` with `$conn` bound to the connection of whichever transaction `$tx` (a
/// `&mut Tx`) is, for statements whose text is the same in both dialects (sqlx takes `$n`
/// parameters on both). The body is expanded once per database.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::tx::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::tx::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// A transaction on whichever database the store is. Statements whose text is the same in both
/// dialects run on either through `on_tx!` (colloquy-projections).
#[derive(Debug)]
pub enum Tx<'c> {
    /// PostgreSQL.
    Postgres(Transaction<'c, Postgres>),
    /// SQLite.
    Sqlite(Transaction<'c, Sqlite>),
}

impl Tx<'_> {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.commit().await,
            Self::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Removes every row of `tables` (a projection's rebuild).
    ///
    /// On PostgreSQL this is one `TRUNCATE`, which gives each table and its indexes new, empty
    /// files: a `DELETE` would leave the rebuild writing beside every dead version of the rows
    /// since the last vacuum, checking the key index's entries for all of them on each upsert
    /// (BENCHMARKS.md). It takes the tables' `ACCESS EXCLUSIVE` lock until the transaction
    /// commits, as dropping a deferred index does. SQLite's `DELETE` without a `WHERE` already
    /// empties a table whole.
    pub async fn empty(&mut self, tables: &[&str]) -> Result<(), sqlx::Error> {
        if tables.is_empty() {
            return Ok(());
        }
        match self {
            Self::Postgres(tx) => {
                sqlx::query(&format!("TRUNCATE {}", tables.join(", "))).execute(&mut **tx).await?;
            }
            Self::Sqlite(tx) => {
                for table in tables {
                    sqlx::query(&format!("DELETE FROM {table}")).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// A write transaction from [`Store::begin`](crate::Store::begin): a [`Tx`] that, on SQLite, holds its file's writer
/// lock until it is committed or dropped (dropped, it rolls back).
#[derive(Debug)]
pub struct WriteTx<'s> {
    // Declared before the guard, so a dropped transaction rolls back before the lock goes.
    tx: Tx<'static>,
    _writer: Option<MutexGuard<'s, ()>>,
    /// When it took its file's writer, and where it was opened.
    held: Option<(Instant, &'static Location<'static>)>,
}

/// A write longer than this, waiting for its file's writer or holding it, is logged.
const SLOW_WRITE: Duration = Duration::from_secs(1);

impl WriteTx<'_> {
    /// Commits; on SQLite the writer lock goes once the commit is done.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let held = self.held;
        let committed = self.tx.commit().await;
        if let Some((since, opened_at)) = held {
            let held_for = since.elapsed();
            if held_for > SLOW_WRITE {
                tracing::warn!(
                    held_ms = held_for.as_secs_f64() * 1e3,
                    opened_at = %opened_at,
                    "a write held its file's writer for over a second"
                );
            }
        }
        committed
    }
}

impl Deref for WriteTx<'_> {
    type Target = Tx<'static>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Backend {
    /// A transaction on the readers' pool (see `Store::begin_read`).
    pub(crate) async fn begin_read(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match self {
            Backend::Postgres { pool } => Tx::Postgres(pool.begin().await?),
            Backend::Sqlite { pool, .. } => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// A write transaction on `file` at `durability` (see `Store::begin`).
    pub(crate) async fn begin(
        &self,
        file: File,
        durability: Durability,
        opened_at: &'static Location<'static>,
    ) -> Result<WriteTx<'_>, sqlx::Error> {
        match self {
            Backend::Postgres { pool } => {
                let tx = match durability {
                    Durability::Durable => pool.begin().await?,
                    Durability::Relaxed => pool.begin_with(BEGIN_RELAXED).await?,
                };
                Ok(WriteTx { tx: Tx::Postgres(tx), _writer: None, held: None })
            }
            Backend::Sqlite { writes, write_lock, read_model_writes, read_model_lock, .. } => {
                let (pool, lock) = match file {
                    File::Events => (writes, write_lock),
                    File::ReadModels => (read_model_writes, read_model_lock),
                };
                let asked = Instant::now();
                let writer = lock.lock().await;
                let waited = asked.elapsed();
                if waited > SLOW_WRITE {
                    tracing::warn!(
                        waited_ms = waited.as_secs_f64() * 1e3,
                        ?file,
                        opened_at = %opened_at,
                        "a write waited over a second for its file's writer"
                    );
                }
                let tx = pool.begin_with(durability.begin(file)).await?;
                Ok(WriteTx {
                    tx: Tx::Sqlite(tx),
                    _writer: Some(writer),
                    held: Some((Instant::now(), opened_at)),
                })
            }
        }
    }
}
