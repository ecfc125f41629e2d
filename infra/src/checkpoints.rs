//! Checkpoints: how far each consumer of the log (a projection, a process manager, the relay)
//! has applied it, in the read models' file. Every statement on the `checkpoints` table is here.

use crate::error::StoreError;
use crate::store::Store;
use crate::tx::{Durability, File, Tx};

/// Reads a checkpoint (0 when absent).
pub async fn read(store: &Store, name: &str) -> Result<i64, StoreError> {
    Ok(read_with_generation(store, name).await?.0)
}

/// Every checkpoint, by name.
pub async fn all(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = "SELECT name, position FROM checkpoints ORDER BY name";
    Ok(crate::on_pool!(store, |pool| sqlx::query_as(sql).fetch_all(pool).await?))
}

/// How far one consumer of the log (a projection or the relay) trails its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    /// The checkpoint's name: `projection:<name>` or the relay's.
    pub name: String,
    /// The last position it applied (0 before its first batch).
    pub position: i64,
    /// Events between it and the head.
    pub lag: i64,
}

/// The lag behind `head` of each consumer named in `consumers` (in that order; one without a
/// checkpoint yet stands at 0) and of every other consumer with a checkpoint, after them. The one
/// computation behind `colloquy projections status`, `/readyz` and `/metrics`.
pub async fn consumer_lags(
    store: &Store,
    head: i64,
    consumers: &[String],
) -> Result<Vec<ConsumerLag>, StoreError> {
    let mut checkpoints = all(store).await?;
    let mut lags: Vec<ConsumerLag> = consumers
        .iter()
        .map(|name| {
            let position = checkpoints.iter().find(|(n, _)| n == name).map_or(0, |(_, p)| *p);
            ConsumerLag { name: name.clone(), position, lag: (head - position).max(0) }
        })
        .collect();
    checkpoints.retain(|(name, _)| !consumers.contains(name));
    lags.extend(checkpoints.into_iter().map(|(name, position)| ConsumerLag {
        name,
        position,
        lag: (head - position).max(0),
    }));
    Ok(lags)
}

/// Saves the checkpoint `name` at `position`, whatever it was, in a commit that does not wait
/// for the disk (the relay's).
pub(crate) async fn save(store: &Store, name: &str, position: i64) -> Result<(), StoreError> {
    let query = "INSERT INTO checkpoints (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = CURRENT_TIMESTAMP";
    // A lost checkpoint costs little: the relay publishes again what it sent since the one
    // before, which the stream's duplicate window drops. So the commit need not wait for the disk.
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(query).bind(name).bind(position).execute(conn).await?;
    });
    tx.commit().await?;
    Ok(())
}

/// A generation no checkpoint has: what a projector knows before it has read one.
pub const UNKNOWN_GENERATION: i64 = -1;

/// The checkpoint `name` and its generation, which a rebuild moves on (0 and 0 before the first
/// batch), read without locking it.
pub async fn read_with_generation(store: &Store, name: &str) -> Result<(i64, i64), StoreError> {
    let sql = "SELECT position, generation FROM checkpoints WHERE name = $1";
    let found: Option<(i64, i64)> =
        crate::on_pool!(store, |pool| sqlx::query_as(sql).bind(name).fetch_optional(pool).await?);
    Ok(found.unwrap_or((0, 0)))
}

/// Creates the checkpoint `name` if missing and locks its row for the rest of `tx`, returning its
/// position and generation: concurrent instances of a consumer take turns, and each then sees
/// what the other applied.
pub async fn lock(tx: &mut Tx<'_>, name: &str) -> Result<(i64, i64), sqlx::Error> {
    let sql = "INSERT INTO checkpoints (name, position) VALUES ($1, 0)
               ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position, generation";
    Ok(crate::on_tx!(tx, |conn| sqlx::query_as(sql).bind(name).fetch_one(conn).await?))
}

/// Sets the checkpoint `name`, locked by [`lock`] earlier in `tx`, to `position`: in the batch's
/// transaction, so it commits with what the batch wrote.
pub async fn set(tx: &mut Tx<'_>, name: &str, position: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP WHERE name = $1";
    crate::on_tx!(tx, |conn| {
        sqlx::query(sql).bind(name).bind(position).execute(conn).await?;
    });
    Ok(())
}

/// Moves the checkpoint `name` from `from` (where this process last saved it, in `generation`)
/// to `to`, taking its row lock as [`lock`] does. False, and nothing moved, when another
/// instance moved it since.
pub async fn move_from(
    tx: &mut Tx<'_>,
    name: &str,
    from: i64,
    to: i64,
    generation: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP
               WHERE name = $1 AND position = $3 AND generation = $4";
    let moved = crate::on_tx!(tx, |conn| {
        sqlx::query(sql).bind(name).bind(to).bind(from).bind(generation).execute(conn).await?.rows_affected()
    });
    Ok(moved == 1)
}

/// Moves the checkpoint `name` forward to `position` (never back) in a commit of its own, unless
/// a rebuild gave it another generation than `generation`: a rebuild's checkpoint moves only with
/// the rebuild's own batches.
pub async fn advance(store: &Store, name: &str, position: i64, generation: i64) -> Result<(), StoreError> {
    let sql = "UPDATE checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP
               WHERE name = $1 AND position < $2 AND generation = $3";
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(name).bind(position).bind(generation).execute(conn).await?;
    });
    tx.commit().await?;
    Ok(())
}

/// Sets the checkpoint `name` back to 0 in a new generation, in `tx` (a rebuild's): a consumer
/// elsewhere that applied batches before learns from the generation that they are gone.
/// Returns the new generation.
pub async fn reset(tx: &mut Tx<'_>, name: &str) -> Result<i64, sqlx::Error> {
    let sql = "INSERT INTO checkpoints (name, position, generation) VALUES ($1, 0, 1)
               ON CONFLICT (name) DO UPDATE SET position = 0, generation = checkpoints.generation + 1,
                 updated_at = CURRENT_TIMESTAMP
               RETURNING generation";
    Ok(crate::on_tx!(tx, |conn| sqlx::query_scalar(sql).bind(name).fetch_one(conn).await?))
}
