//! The one way to write: [`Store::begin`] opens a transaction on the file a write belongs to, at
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

use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::MutexGuard;

use crate::store::{Backend, Durability, File, Store, BEGIN_RELAXED};

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

/// A write transaction from [`Store::begin`]: a [`Tx`] that, on SQLite, holds its file's writer
/// lock until it is committed or dropped (dropped, it rolls back).
#[derive(Debug)]
pub struct WriteTx<'s> {
    // Declared before the guard, so a dropped transaction rolls back before the lock goes.
    tx: Tx<'static>,
    _writer: Option<MutexGuard<'s, ()>>,
}

impl WriteTx<'_> {
    /// Commits; on SQLite the writer lock goes once the commit is done.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
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

impl Store {
    /// A transaction on the readers' pool, for reads that must agree with each other across
    /// statements (a rebuild folds a page through one). It is for reading: writes go through
    /// [`Store::begin`].
    pub async fn begin_read(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match self.backend() {
            Backend::Postgres { pool } => Tx::Postgres(pool.begin().await?),
            Backend::Sqlite { pool, .. } => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// Opens a write transaction on `file` (the events' side: tokens, counters, idempotency
    /// keys; or the read models' side: read-model tables, checkpoints, snapshots) at
    /// `durability`. On SQLite it waits for that file's writer lock and writes through that
    /// file's one writer connection; on PostgreSQL both files are the one database, and a
    /// [`Durability::Relaxed`] commit does not wait for the WAL flush.
    pub async fn begin(&self, file: File, durability: Durability) -> Result<WriteTx<'_>, sqlx::Error> {
        match self.backend() {
            Backend::Postgres { pool } => {
                let tx = match durability {
                    Durability::Durable => pool.begin().await?,
                    Durability::Relaxed => pool.begin_with(BEGIN_RELAXED).await?,
                };
                Ok(WriteTx { tx: Tx::Postgres(tx), _writer: None })
            }
            Backend::Sqlite { writes, write_lock, read_model_writes, read_model_lock, .. } => {
                let (pool, lock) = match file {
                    File::Events => (writes, write_lock),
                    File::ReadModels => (read_model_writes, read_model_lock),
                };
                let writer = lock.lock().await;
                let tx = pool.begin_with(durability.begin(file)).await?;
                Ok(WriteTx { tx: Tx::Sqlite(tx), _writer: Some(writer) })
            }
        }
    }
}
