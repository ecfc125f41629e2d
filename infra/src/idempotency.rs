//! Idempotency keys: the first response to a command sent with an `Idempotency-Key`, kept per
//! tenant for 24 hours and replayed to retries. A key is claimed before the command runs, so two
//! concurrent requests with one key never both run.

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::store::Store;
use crate::tx::{Durability, File};

/// How long a key is kept.
pub const RETENTION_HOURS: i64 = 24;
/// A claim older than this, still without a response, belonged to a process that died; the key
/// may be claimed again.
pub const ABANDONED_AFTER_SECONDS: i64 = 60;

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers worth replaying, as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or expired, or abandoned): the caller runs the request and then calls
    /// [`complete`] or [`release`].
    Claimed,
    /// The key was used for the same request, which answered this.
    Replay(StoredResponse),
    /// The key was used for the same request, which is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// Claims `key` for a request whose hash is `request_hash`.
pub async fn claim(
    store: &Store,
    tenant: &str,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Claim, StoreError> {
    let now_ms = now.timestamp_millis();
    let expired = now_ms - RETENTION_HOURS * 3_600_000;
    let abandoned = now_ms - ABANDONED_AFTER_SECONDS * 1_000;
    // Expired keys, and claims whose process died, make way for a new claim.
    let clear = "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2
                   AND (created_at < $3 OR (status IS NULL AND created_at < $4))";
    let insert =
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
                  ON CONFLICT (tenant_id, key) DO NOTHING";
    let read =
        "SELECT request_hash, status, headers, body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";
    type Found = (String, Option<i64>, Option<String>, Option<Vec<u8>>);
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    let (inserted, found): (u64, Option<Found>) = crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(clear).bind(tenant).bind(key).bind(expired).bind(abandoned).execute(&mut *conn).await?;
        let inserted = sqlx::query(insert)
            .bind(tenant)
            .bind(key)
            .bind(request_hash)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        let found = if inserted == 0 {
            sqlx::query_as(read).bind(tenant).bind(key).fetch_optional(&mut *conn).await?
        } else {
            None
        };
        (inserted, found)
    });
    tx.commit().await?;
    if inserted > 0 {
        return Ok(Claim::Claimed);
    }
    let Some((hash, status, headers, body)) = found else {
        // Deleted between our insert and read: rare; the caller may simply retry.
        return Ok(Claim::InProgress);
    };
    if hash != request_hash {
        return Ok(Claim::Mismatch);
    }
    let Some(status) = status else { return Ok(Claim::InProgress) };
    let headers: Vec<(String, String)> = headers
        .map(|h| serde_json::from_str(&h))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("idempotency_keys.headers: {e}")))?
        .unwrap_or_default();
    Ok(Claim::Replay(StoredResponse {
        status: u16::try_from(status).unwrap_or(500),
        headers,
        body: body.unwrap_or_default(),
    }))
}

/// Stores the response of a claimed key.
pub async fn complete(
    store: &Store,
    tenant: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    let headers = serde_json::to_string(&response.headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql =
        "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE tenant_id = $1 AND key = $2";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql)
            .bind(tenant)
            .bind(key)
            .bind(i64::from(response.status))
            .bind(&headers)
            .bind(&response.body)
            .execute(conn)
            .await?;
    });
    tx.commit().await?;
    Ok(())
}

/// Gives a claimed key up (the request failed in a way a retry may fix), so a retry runs again.
pub async fn release(store: &Store, tenant: &str, key: &str) -> Result<(), StoreError> {
    let sql = "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    crate::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(key).execute(conn).await?;
    });
    tx.commit().await?;
    Ok(())
}

/// Removes keys older than the retention, across tenants; returns how many.
pub async fn purge(store: &Store, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let expired = now.timestamp_millis() - RETENTION_HOURS * 3_600_000;
    let sql = "DELETE FROM idempotency_keys WHERE created_at < $1";
    let mut tx = store.begin(File::Events, Durability::Durable).await?;
    let purged =
        crate::on_tx!(&mut *tx, |conn| sqlx::query(sql).bind(expired).execute(conn).await?.rows_affected());
    tx.commit().await?;
    Ok(purged)
}
