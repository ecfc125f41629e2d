//! The global log: every committed event once, with a global position that strictly increases
//! in the order readers see events commit, so "all events after P" never misses one.
//!
//! SQLite has one writer, so a trigger fills `event_log` in commit order as events are inserted.
//! PostgreSQL commits concurrent transactions in another order than they take identity values,
//! so positions are given after commit by a sequencer: one task per process, serialized across
//! processes by an advisory lock, that appends to `event_log` the events of every finished
//! transaction (xact_id below the snapshot's xmin) in (xact_id, position) order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use colloquy_domain::TenantId;

use crate::store::{Store, StoreError, StoredEvent};

/// Advisory lock key that serializes sequencer rounds across processes.
const SEQUENCER_LOCK: i64 = 0x636f_6c6c_6f71_7579;

/// How often the sequencer looks for other processes' commits when nobody wakes it.
const SEQUENCER_IDLE_POLL: Duration = Duration::from_millis(20);

/// The global log of one store.
#[derive(Debug, Clone)]
pub struct GlobalLog {
    store: Store,
    wake: Arc<Notify>,
    head: watch::Receiver<i64>,
    head_sender: Arc<watch::Sender<i64>>,
}

impl GlobalLog {
    /// The log of `store`. For PostgreSQL this starts the sequencer task, which runs until the
    /// process ends.
    pub async fn start(store: Store) -> Result<Self, StoreError> {
        let initial = read_head(&store).await?;
        let (head_sender, head) = watch::channel(initial);
        let log = Self { store, wake: Arc::new(Notify::new()), head, head_sender: Arc::new(head_sender) };
        if log.store.postgres_pool().is_some() {
            let sequencer = log.clone();
            tokio::spawn(async move { sequencer.run_sequencer().await });
        }
        Ok(log)
    }

    async fn run_sequencer(self) {
        loop {
            match sequence_round(&self.store).await {
                Ok(head) => self.advance_head(head),
                Err(error) => {
                    tracing::warn!(%error, "sequencer round failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let _ = tokio::time::timeout(SEQUENCER_IDLE_POLL, self.wake.notified()).await;
        }
    }

    /// Moves this process's head forward to `position` (never back).
    fn advance_head(&self, position: i64) {
        self.head_sender.send_if_modified(|current| {
            let moved = position > *current;
            *current = (*current).max(position);
            moved
        });
    }

    /// The highest global position known to this process.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// The global position of one just-committed event, waiting up to `timeout` for the
    /// sequencer to give it one. `None` when it has none by then (an older transaction still
    /// holds the horizon). Finding it moves this process's head, which wakes the relay: SQLite
    /// has no sequencer to do that.
    pub async fn position_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: usize,
        timeout: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let mut head = self.head.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Wake the sequencer before looking, so the first lookup is not a certain miss.
            self.wake.notify_one();
            head.borrow_and_update();
            if let Some(position) =
                lookup_position(&self.store, aggregate_type, aggregate_id, sequence).await?
            {
                self.advance_head(position);
                return Ok(Some(position));
            }
            if tokio::time::timeout_at(deadline, head.changed()).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Events after global position `after`, in order, at most `limit`; only `tenant`'s when
    /// given.
    pub async fn read(
        &self,
        after: i64,
        limit: i64,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_log(&self.store, after, limit, tenant).await
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The log's head as last recorded, without a sequencer round.
pub async fn read_head(store: &Store) -> Result<i64, StoreError> {
    if let Some(pool) = store.postgres_pool() {
        Ok(sqlx::query_scalar("SELECT last_position FROM event_log_state").fetch_one(pool).await?)
    } else {
        let sql = "SELECT coalesce(max(position), 0) FROM event_log";
        Ok(crate::on_pool!(store, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?))
    }
}

/// One sequencer round (PostgreSQL): appends every event of every finished transaction not yet
/// in the log, and returns the log's head.
pub async fn sequence_round(store: &Store) -> Result<i64, StoreError> {
    let Some(pool) = store.postgres_pool() else { return read_head(store).await };
    let mut tx = pool.begin().await?;
    // A round's commit need not wait for its WAL flush: were it lost in a crash, the next round
    // would number the same events identically, because the order is fixed by (xact_id,
    // position) of events that are themselves durable, starting from the horizon that was
    // durably stored. Not waiting for the flush takes a disk sync off every command's path.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SEQUENCER_LOCK).execute(&mut *tx).await?;
    // After the lock, this statement's snapshot sees the state the previous round committed.
    // Every transaction with an id below the horizon has finished, so no event can still appear
    // there: the log may take those events, in a fixed order, and never needs to insert before
    // them later.
    let head: i64 = sqlx::query_scalar(
        "WITH state AS (
             SELECT horizon, last_position FROM event_log_state
         ), target AS (
             SELECT greatest(pg_snapshot_xmin(pg_current_snapshot()), (SELECT horizon FROM state)) AS horizon
         ), fresh AS (
             SELECT e.position AS event_position, e.aggregate_type, e.aggregate_id, e.sequence, e.tenant_id,
                    row_number() OVER (ORDER BY e.xact_id, e.position) AS n
               FROM events e
              WHERE e.xact_id >= (SELECT horizon FROM state)
                AND e.xact_id < (SELECT horizon FROM target)
         ), inserted AS (
             INSERT INTO event_log (position, event_position, aggregate_type, aggregate_id, sequence, tenant_id)
             SELECT (SELECT last_position FROM state) + f.n, f.event_position, f.aggregate_type, f.aggregate_id, f.sequence, f.tenant_id
               FROM fresh f
             RETURNING 1
         )
         UPDATE event_log_state
            SET horizon = (SELECT horizon FROM target),
                last_position = last_position + (SELECT count(*) FROM inserted)
         RETURNING last_position",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(head)
}

async fn lookup_position(
    store: &Store,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: usize,
) -> Result<Option<i64>, StoreError> {
    let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
    let sql =
        "SELECT position FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
    Ok(crate::on_pool!(store, |pool| sqlx::query_scalar(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(pool)
        .await?))
}

async fn read_log(
    store: &Store,
    after: i64,
    limit: i64,
    tenant: Option<&TenantId>,
) -> Result<Vec<StoredEvent>, StoreError> {
    // Planned afresh on every call (not a cached prepared statement): a plan cached while the
    // tables were small seq-scans and hash-joins `events`, and PostgreSQL keeps it until the next
    // ANALYZE; at a million events that cost seconds per page instead of a millisecond. The
    // limit is written into the statement so the planner sees it.
    let limit = limit.clamp(1, 10_000);
    let tenant_filter = if tenant.is_some() { "AND l.tenant_id = $2" } else { "" };
    if let Some(pool) = store.postgres_pool() {
        let sql = format!(
            "SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
               FROM event_log l
               JOIN events e ON e.position = l.event_position
              WHERE l.position > $1 {tenant_filter}
              ORDER BY l.position
              LIMIT {limit}"
        );
        let mut query = sqlx::query(&sql).persistent(false).bind(after);
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter().map(crate::store::stored_event_pg).collect()
    } else if let Some((pool, _)) = store.sqlite_pool() {
        let sql = format!(
            "SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
               FROM event_log l
               JOIN events e ON e.aggregate_type = l.aggregate_type AND e.aggregate_id = l.aggregate_id AND e.sequence = l.sequence
              WHERE l.position > $1 {tenant_filter}
              ORDER BY l.position
              LIMIT {limit}"
        );
        let mut query = sqlx::query(&sql).persistent(false).bind(after);
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter().map(crate::store::stored_event_sqlite).collect()
    } else {
        Ok(Vec::new())
    }
}
