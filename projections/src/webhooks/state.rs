//! `webhook_state`: where each subscription's deliveries are. One process at a time holds a
//! subscription (a lease it renews), and every change it makes names the lease and the cursor it
//! started from, so a process that lost its lease, or whose cursor an operator moved (a replay),
//! changes nothing and starts again from what is stored. Times are Unix milliseconds.

use colloquy_infra::{Durability, File, Store, StoreError};

use super::deliveries::{self, Delivery};

/// The table.
pub const TABLE: &str = "webhook_state";

/// A subscription's deliveries, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct State {
    /// The last log position delivered or passed over (an event it does not want).
    pub cursor: i64,
    /// When the failure being retried began.
    pub failing_since: Option<i64>,
    /// Attempts of the failing delivery so far.
    pub attempts: i32,
    /// When the next attempt may be made (0: at once).
    pub next_attempt_at: i64,
    /// What the last failed attempt got.
    pub last_error: Option<String>,
    /// When it was paused (it failed for too long), if it is.
    pub paused_at: Option<i64>,
    /// Why.
    pub paused_reason: Option<String>,
    /// Which process holds it.
    pub leased_by: Option<String>,
    /// Until when.
    pub leased_until: i64,
    /// Events delivered so far.
    pub delivered: i64,
    /// When the last delivery succeeded.
    pub delivered_at: Option<i64>,
}

const COLUMNS: &str =
    "cursor, failing_since, attempts, next_attempt_at, last_error, paused_at, paused_reason,
                       leased_by, leased_until, delivered, delivered_at";

/// Subscription `webhook`'s state, once its creation is projected.
pub async fn read(store: &Store, tenant: &str, webhook: &str) -> Result<Option<State>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_state WHERE tenant_id = $1 AND webhook_id = $2");
    Ok(colloquy_infra::on_pool!(store, |pool| sqlx::query_as(&sql)
        .bind(tenant)
        .bind(webhook)
        .fetch_optional(pool)
        .await?))
}

async fn update(store: &Store, sql: &str, binds: Binds<'_>) -> Result<bool, StoreError> {
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    let changed = colloquy_infra::on_tx!(&mut *tx, |conn| {
        let mut query = sqlx::query(sql).bind(binds.tenant).bind(binds.webhook);
        for value in binds.numbers {
            query = query.bind(*value);
        }
        for value in binds.texts {
            query = query.bind(value.as_deref());
        }
        query.execute(&mut *conn).await?.rows_affected()
    });
    tx.commit().await?;
    Ok(changed > 0)
}

/// A statement's parameters: `$1` tenant, `$2` webhook, then the numbers, then the texts.
struct Binds<'a> {
    tenant: &'a str,
    webhook: &'a str,
    numbers: &'a [i64],
    texts: &'a [Option<String>],
}

/// Takes (or renews) the lease on `webhook` for `holder` until `until`, unless another process
/// holds it or it is paused: its state if taken.
pub async fn claim(
    store: &Store,
    (tenant, webhook): (&str, &str),
    holder: &str,
    (now, until): (i64, i64),
) -> Result<Option<State>, StoreError> {
    let sql = "UPDATE webhook_state SET leased_by = $5, leased_until = $4
                WHERE tenant_id = $1 AND webhook_id = $2 AND paused_at IS NULL
                  AND (leased_by = $5 OR leased_by IS NULL OR leased_until <= $3)";
    let binds = Binds { tenant, webhook, numbers: &[now, until], texts: &[Some(holder.to_owned())] };
    if !update(store, sql, binds).await? {
        return Ok(None);
    }
    read(store, tenant, webhook).await
}

/// Gives the lease up (the process stops).
pub async fn release(store: &Store, (tenant, webhook): (&str, &str), holder: &str) -> Result<(), StoreError> {
    let sql = "UPDATE webhook_state SET leased_by = NULL, leased_until = 0
                WHERE tenant_id = $1 AND webhook_id = $2 AND leased_by = $3";
    update(store, sql, Binds { tenant, webhook, numbers: &[], texts: &[Some(holder.to_owned())] }).await?;
    Ok(())
}

/// What a holder's step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Events up to `to` were delivered (`count` of them; 0 when all were passed over).
    Delivered {
        /// The new cursor.
        to: i64,
        /// How many were sent.
        count: i64,
        /// When.
        at: i64,
    },
    /// An attempt failed; the next is due at `retry_at`, or the subscription is paused.
    Failed {
        /// When it failed.
        at: i64,
        /// What it got.
        error: String,
        /// When to try again.
        retry_at: i64,
        /// Why it is paused instead, if it is.
        pause: Option<String>,
    },
}

/// The statement and parameters of `step` from cursor `from`: numbers then texts after `$1`
/// tenant, `$2` webhook.
fn statement(step: &Step, from: i64, holder: &str) -> (&'static str, Vec<i64>, Vec<Option<String>>) {
    let holder = Some(holder.to_owned());
    match step {
        Step::Delivered { to, count, at } => (
            "UPDATE webhook_state SET cursor = $4, failing_since = NULL, attempts = 0, next_attempt_at = 0,
                    last_error = NULL, delivered = delivered + $5,
                    delivered_at = CASE WHEN $5 > 0 THEN $6 ELSE delivered_at END
              WHERE tenant_id = $1 AND webhook_id = $2 AND cursor = $3 AND leased_by = $7",
            vec![from, *to, *count, *at],
            vec![holder],
        ),
        Step::Failed { at, error, retry_at, pause } => (
            "UPDATE webhook_state SET failing_since = coalesce(failing_since, $4), attempts = attempts + 1,
                    next_attempt_at = $5, last_error = $6,
                    paused_at = CASE WHEN $7 IS NULL THEN NULL ELSE $4 END, paused_reason = $7,
                    leased_by = CASE WHEN $7 IS NULL THEN leased_by ELSE NULL END
              WHERE tenant_id = $1 AND webhook_id = $2 AND cursor = $3 AND leased_by = $8",
            vec![from, *at, *retry_at],
            vec![Some(error.clone()), pause.clone(), holder],
        ),
    }
}

/// Records `steps`, in order, for `holder`, whose cursor was `from`, and the `attempts` they
/// made, in one transaction: false (no step written; the attempts are, they were made) when it
/// no longer holds the lease or the cursor moved meanwhile.
pub async fn record(
    store: &Store,
    (tenant, webhook): (&str, &str),
    holder: &str,
    from: i64,
    (steps, attempts): (&[Step], &[Delivery]),
) -> Result<bool, StoreError> {
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    let mut cursor = from;
    let mut moved = true;
    for step in steps {
        let (sql, numbers, texts) = statement(step, cursor, holder);
        let changed = colloquy_infra::on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query(sql).bind(tenant).bind(webhook);
            for value in &numbers {
                query = query.bind(*value);
            }
            for value in &texts {
                query = query.bind(value.as_deref());
            }
            query.execute(&mut *conn).await?.rows_affected()
        });
        if changed == 0 {
            moved = false;
            break;
        }
        if let Step::Delivered { to, .. } = step {
            cursor = *to;
        }
    }
    // (A step that found no row changed nothing, and the ones after it were not tried.)
    for attempt in attempts {
        colloquy_infra::on_tx!(&mut *tx, |conn| {
            deliveries::bind_attempt!(sqlx::query(deliveries::INSERT), tenant, webhook, attempt)
                .execute(&mut *conn)
                .await?;
        });
    }
    tx.commit().await?;
    Ok(moved)
}

/// Starts deliveries again from position `after` (a replay: events after it are sent again),
/// lifting any pause and retry wait. False when there is no such subscription.
pub async fn rewind(store: &Store, (tenant, webhook): (&str, &str), after: i64) -> Result<bool, StoreError> {
    let sql = "UPDATE webhook_state SET cursor = $3, failing_since = NULL, attempts = 0, next_attempt_at = 0,
                      last_error = NULL, paused_at = NULL, paused_reason = NULL
                WHERE tenant_id = $1 AND webhook_id = $2";
    update(store, sql, Binds { tenant, webhook, numbers: &[after], texts: &[] }).await
}

/// Lifts a pause (and any retry wait): deliveries go on from where they stopped.
pub async fn resume(store: &Store, (tenant, webhook): (&str, &str)) -> Result<bool, StoreError> {
    let sql = "UPDATE webhook_state SET failing_since = NULL, attempts = 0, next_attempt_at = 0,
                      paused_at = NULL, paused_reason = NULL
                WHERE tenant_id = $1 AND webhook_id = $2";
    update(store, sql, Binds { tenant, webhook, numbers: &[], texts: &[] }).await
}

/// Tries the failing delivery again at once (its URL was changed), keeping its failure's start.
pub async fn retry_now(store: &Store, (tenant, webhook): (&str, &str)) -> Result<bool, StoreError> {
    let sql = "UPDATE webhook_state SET next_attempt_at = 0 WHERE tenant_id = $1 AND webhook_id = $2";
    update(store, sql, Binds { tenant, webhook, numbers: &[], texts: &[] }).await
}

/// The subscriptions `holder` may take at `now`: not paused, and held by nobody, by it, or by a
/// process whose lease ran out.
pub async fn takeable(store: &Store, holder: &str, now: i64) -> Result<Vec<(String, String)>, StoreError> {
    let sql = "SELECT tenant_id, webhook_id FROM webhook_state
                WHERE paused_at IS NULL AND (leased_by IS NULL OR leased_by = $1 OR leased_until <= $2)";
    Ok(colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql)
        .bind(holder)
        .bind(now)
        .fetch_all(pool)
        .await?))
}

/// How the subscriptions' deliveries stand, across every process: for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Delivering, or waiting for events: not failing.
    pub ok: i64,
    /// Retrying a failed delivery.
    pub failing: i64,
    /// Paused after failing for too long, until an operator resumes them.
    pub paused: i64,
    /// When the oldest failure still retried began (Unix ms).
    pub failing_since: Option<i64>,
}

/// How the subscriptions' deliveries stand.
pub async fn health(store: &Store) -> Result<Health, StoreError> {
    let sql = "SELECT CAST(COALESCE(SUM(CASE WHEN paused_at IS NULL AND failing_since IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT),
                      CAST(COALESCE(SUM(CASE WHEN paused_at IS NULL AND failing_since IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT),
                      CAST(COALESCE(SUM(CASE WHEN paused_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT),
                      MIN(CASE WHEN paused_at IS NULL THEN failing_since END)
                 FROM webhook_state";
    let (ok, failing, paused, failing_since): (i64, i64, i64, Option<i64>) =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_as(sql).fetch_one(pool).await?);
    Ok(Health { ok, failing, paused, failing_since })
}
