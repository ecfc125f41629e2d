//! What an erasure clears besides the key (docs/adr/0011): the copies of a contact's data that
//! are not events, and so not sealed. The aggregates' snapshots that name the contact (its own,
//! its conversations') and the idempotency keys whose stored answer names it are deleted (each
//! is rebuilt or simply missed); on SQLite the write-ahead logs are then folded into the files
//! and truncated, so the rows the read models rewrote leave no copy there either
//! (`secure_delete` zeroes what is freed in the files).

use colloquy_domain::TenantId;

use crate::error::StoreError;
use crate::store::{Durability, File, Store};

/// What [`clear_copies`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cleared {
    /// Snapshots deleted.
    pub snapshots: u64,
    /// Idempotency keys deleted.
    pub idempotency_keys: u64,
    /// On SQLite, whether both write-ahead logs were checkpointed and truncated (false when a
    /// reader held them; the next checkpoint does it). Always true on PostgreSQL, whose WAL is
    /// the server's (the ADR says what that keeps).
    pub logs_truncated: bool,
}

/// Deletes the snapshots and idempotency keys that hold `subject`'s data (they name its id),
/// then, on SQLite, truncates the write-ahead logs. Run after the erasure's event committed
/// and the read models applied it.
pub async fn clear_copies(store: &Store, tenant: &TenantId, subject: &str) -> Result<Cleared, StoreError> {
    let pattern = format!("%{}%", subject.replace(['%', '_'], ""));
    let snapshots = {
        let sql = if store.is_postgres() {
            "DELETE FROM snapshots WHERE tenant_id = $1 AND (aggregate_id = $2 OR state::text LIKE $3)"
        } else {
            "DELETE FROM snapshots WHERE tenant_id = $1 AND (aggregate_id = $2 OR state LIKE $3)"
        };
        let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
        let deleted = crate::on_tx!(&mut *tx, |c| {
            sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(subject)
                .bind(&pattern)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        deleted
    };
    let idempotency_keys = {
        let sql = if store.is_postgres() {
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND position(convert_to($2, 'UTF8') in body) > 0"
        } else {
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND instr(CAST(body AS TEXT), $2) > 0"
        };
        let mut tx = store.begin(File::Events, Durability::Durable).await?;
        let deleted = crate::on_tx!(&mut *tx, |c| {
            sqlx::query(sql).bind(tenant.as_str()).bind(subject).execute(&mut *c).await?.rows_affected()
        });
        tx.commit().await?;
        deleted
    };
    let logs_truncated = match store.reads().sqlite() {
        None => true,
        Some(pool) => {
            let mut truncated = true;
            for schema in ["main", "read_models"] {
                // (busy, frames in the log, frames checkpointed): busy when a reader held it.
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as(&format!("PRAGMA {schema}.wal_checkpoint(TRUNCATE)"))
                        .fetch_one(pool)
                        .await?;
                truncated &= busy == 0;
            }
            truncated
        }
    };
    Ok(Cleared { snapshots, idempotency_keys, logs_truncated })
}
