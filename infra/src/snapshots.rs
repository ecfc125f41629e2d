//! Snapshots of aggregates: the state of one aggregate of one tenant at a version, which the
//! repository takes every [`CacheLimits::snapshot_every`](crate::CacheLimits) events and loads a
//! missed aggregate from, reading only the events after it. A snapshot is derived data: on
//! SQLite it lives in the read models' file and is written without waiting for the disk; a
//! lost one costs a longer load, and one of another shape, or that does not read back, is passed
//! over for the events.

use colloquy_domain::TenantId;

use crate::error::StoreError;
use crate::store::Store;
use crate::tx::{Durability, File};

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSnapshot {
    /// The version (last sequence) of the stream the state was built to.
    pub version: i64,
    /// The shape of the state's serde form (`Snapshot::SHAPE`).
    pub shape: i64,
    /// The state's serde form, as JSON.
    pub state: String,
}

/// Which aggregate a snapshot is of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Of<'a> {
    pub tenant: &'a TenantId,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
}

impl Store {
    /// The latest snapshot of one aggregate, if one was taken and its version is in the stream:
    /// one that is not (the read models' file restored from a later backup than the events')
    /// describes events the store does not have, and is passed over.
    pub(crate) async fn snapshot(&self, of: Of<'_>) -> Result<Option<StoredSnapshot>, StoreError> {
        let sql = "SELECT s.version, s.shape, s.state FROM snapshots s
                    WHERE s.tenant_id = $1 AND s.aggregate_type = $2 AND s.aggregate_id = $3
                      AND EXISTS (SELECT 1 FROM events e
                                   WHERE e.tenant_id = $1 AND e.aggregate_type = $2 AND e.aggregate_id = $3
                                     AND e.sequence = s.version)";
        let found: Option<(i64, i64, String)> = crate::on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(of.tenant.as_str())
                .bind(of.aggregate_type)
                .bind(of.aggregate_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.map(|(version, shape, state)| StoredSnapshot { version, shape, state }))
    }

    /// Keeps `snapshot` of one aggregate in place of the one before. Two saves that race (two
    /// processes, or two of one process) may leave the earlier version: still right, only less
    /// far along; and one that was passed over (another shape, unreadable, ahead of the stream)
    /// is replaced by the next.
    pub(crate) async fn save_snapshot(
        &self,
        of: Of<'_>,
        snapshot: &StoredSnapshot,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO snapshots (tenant_id, aggregate_type, aggregate_id, version, shape, state)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (tenant_id, aggregate_type, aggregate_id) DO UPDATE
                   SET version = excluded.version, shape = excluded.shape, state = excluded.state,
                       taken_at = excluded.taken_at";
        let mut tx = self.begin(File::ReadModels, Durability::Relaxed).await?;
        crate::on_tx!(&mut *tx, |conn| {
            sqlx::query(sql)
                .bind(of.tenant.as_str())
                .bind(of.aggregate_type)
                .bind(of.aggregate_id)
                .bind(snapshot.version)
                .bind(snapshot.shape)
                .bind(&snapshot.state)
                .execute(conn)
                .await?;
        });
        tx.commit().await?;
        Ok(())
    }
}
