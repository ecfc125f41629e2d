//! `webhook_deliveries`: every attempt to deliver to a subscription (and every test ping), for
//! its operators: what was sent, what came back and how long it took. Kept for
//! [`RETENTION_MS`]; times are Unix milliseconds.

use colloquy_infra::{Durability, File, Store, StoreError};

/// The table.
pub const TABLE: &str = "webhook_deliveries";

/// How long an attempt is kept: 7 days.
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// The most of a response's body kept with its attempt.
pub const EXCERPT_BYTES: usize = 1024;

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    /// Its id (a v7 UUID: later ones sort after).
    pub id: String,
    /// When it was sent.
    pub attempted_at: i64,
    /// `events` or `ping`.
    pub kind: String,
    /// The `webhook-id` it carried: the same on every attempt of the same events.
    pub message_id: String,
    /// The first event's log position.
    pub first_position: Option<i64>,
    /// The last's.
    pub last_position: Option<i64>,
    /// How many events it carried.
    pub events: i32,
    /// Which attempt of these events it was (1 for the first).
    pub attempt: i32,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The response's status, if one came.
    pub status_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// From sending to the end of the response (or the failure).
    pub latency_ms: i64,
    /// The response body's first [`EXCERPT_BYTES`], as text.
    pub response_excerpt: Option<String>,
}

/// The statement that keeps an attempt ([`bind_attempt`] its parameters).
pub(super) const INSERT: &str =
    "INSERT INTO webhook_deliveries (tenant_id, webhook_id, id, attempted_at, kind, message_id, first_position,
         last_position, events, attempt, outcome, status_code, error, latency_ms, response_excerpt)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Binds [`INSERT`]'s parameters: `tenant`, `webhook` and an attempt's fields (a macro, since
/// the statement's type is each store's own).
macro_rules! bind_attempt {
    ($query:expr, $tenant:expr, $webhook:expr, $delivery:expr) => {
        $query
            .bind($tenant)
            .bind($webhook)
            .bind(&$delivery.id)
            .bind($delivery.attempted_at)
            .bind(&$delivery.kind)
            .bind(&$delivery.message_id)
            .bind($delivery.first_position)
            .bind($delivery.last_position)
            .bind($delivery.events)
            .bind($delivery.attempt)
            .bind(&$delivery.outcome)
            .bind($delivery.status_code)
            .bind(&$delivery.error)
            .bind($delivery.latency_ms)
            .bind(&$delivery.response_excerpt)
    };
}
pub(super) use bind_attempt;

/// Keeps `delivery` in `webhook`'s log.
pub async fn record(
    store: &Store,
    (tenant, webhook): (&str, &str),
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    colloquy_infra::on_tx!(&mut *tx, |conn| {
        bind_attempt!(sqlx::query(INSERT), tenant, webhook, delivery).execute(&mut *conn).await?;
    });
    Ok(tx.commit().await?)
}

/// `webhook`'s attempts, newest first, older than attempt `before` when given, at most `limit`.
pub async fn page(
    store: &Store,
    (tenant, webhook): (&str, &str),
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT id, attempted_at, kind, message_id, first_position, last_position, events, attempt, outcome,
                status_code, error, latency_ms, response_excerpt
           FROM webhook_deliveries
          WHERE tenant_id = $1 AND webhook_id = $2 AND ($3 IS NULL OR id < $3)
          ORDER BY id DESC LIMIT {}",
        limit.clamp(1, 500)
    );
    Ok(colloquy_infra::on_pool!(store, |pool| sqlx::query_as(&sql)
        .bind(tenant)
        .bind(webhook)
        .bind(before)
        .fetch_all(pool)
        .await?))
}

/// Removes the attempts made before `before`: how many.
pub async fn prune(store: &Store, before: i64) -> Result<u64, StoreError> {
    let sql = "DELETE FROM webhook_deliveries WHERE attempted_at < $1";
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    let removed = colloquy_infra::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(before).execute(&mut *conn).await?.rows_affected()
    });
    tx.commit().await?;
    Ok(removed)
}

/// Removes a deleted subscription's attempts.
pub async fn forget(store: &Store, (tenant, webhook): (&str, &str)) -> Result<(), StoreError> {
    let sql = "DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2";
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    colloquy_infra::on_tx!(&mut *tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(webhook).execute(&mut *conn).await?;
    });
    Ok(tx.commit().await?)
}
