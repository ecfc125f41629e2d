//! The global log: every committed event once, with a global position that strictly increases
//! in the order readers see events commit, so "all events after P" never misses one.
//!
//! Positions are given as events are inserted. SQLite has one writer per file, so an event's
//! position is its row's own key in `events`, one more than the last committed (`event_log` is a
//! view of it there). PostgreSQL's trigger numbers a statement's rows while holding the
//! `event_log_state` row lock until its transaction ends, so the next inserter numbers after the
//! previous one has committed (migration `20261129000009_inline_positions.sql`). A command
//! learns its position from its own append; this module follows the head and reads the log.

use std::time::Duration;

use tokio::sync::watch;

use colloquy_domain::TenantId;

use crate::error::StoreError;
use crate::event::{stored_event_pg_with, Metadata, StoredEvent};
use crate::store::Store;

/// How often the head is read from the store, to see what other processes appended (this
/// process's own appends move it at once).
const HEAD_POLL: Duration = Duration::from_millis(20);

/// The global log of one store.
#[derive(Debug, Clone)]
pub struct GlobalLog {
    store: Store,
    head: watch::Receiver<i64>,
}

impl GlobalLog {
    /// The log of `store`. Starts a task that follows other processes' appends; it runs until
    /// the process ends.
    pub async fn start(store: Store) -> Result<Self, StoreError> {
        store.advance_head(read_head(&store).await?);
        let log = Self { head: store.watch_head(), store };
        let follower = log.store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEAD_POLL).await;
                if follower.is_closed() {
                    return;
                }
                match read_head(&follower).await {
                    Ok(head) => follower.advance_head(head),
                    Err(error) => {
                        tracing::warn!(%error, "could not read the log's head; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(log)
    }

    /// The highest global position known to this process.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// Events after global position `after`, in order, at most `limit` (and at most
    /// [`MAX_PAGE`] and [`crate::store::PAGE_BYTES`], at least one event); only `tenant`'s when
    /// given. A page short of `limit` has not always reached the head. Personal data is
    /// revealed (docs/adr/0011): what was written, or erased.
    pub async fn read(
        &self,
        after: i64,
        limit: i64,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_with(after, limit, tenant, Metadata::All).await
    }

    /// [`GlobalLog::read`], carrying `metadata` of each event's metadata.
    pub async fn read_with(
        &self,
        after: i64,
        limit: i64,
        tenant: Option<&TenantId>,
        metadata: Metadata,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = read_log(&self.store, after, limit, tenant, metadata).await?;
        self.store.keys().reveal_in_place(&mut events).await?;
        Ok(events)
    }

    /// [`GlobalLog::read`] with personal data as stored, sealed: for the relay, so that JetStream
    /// never holds it readable, and what an erasure destroys the key of reads as erased there too.
    pub async fn read_stored(
        &self,
        after: i64,
        limit: i64,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_log(&self.store, after, limit, tenant, Metadata::All).await
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The most events one read of the log returns.
pub const MAX_PAGE: i64 = 10_000;

/// The log's head: the global position of the last committed event (0 for an empty log).
pub async fn read_head(store: &Store) -> Result<i64, StoreError> {
    if let Some(pool) = store.postgres_pool() {
        Ok(sqlx::query_scalar("SELECT last_position FROM event_log_state").fetch_one(pool).await?)
    } else {
        let sql = "SELECT coalesce(max(position), 0) FROM events";
        Ok(crate::on_pool!(store, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?))
    }
}

/// Events of every tenant after `after`, at most `limit`, with all their metadata: a read of the
/// log without a [`GlobalLog`].
pub async fn read_page(store: &Store, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
    read_log(store, after, limit, None, Metadata::All).await
}

async fn read_log(
    store: &Store,
    after: i64,
    limit: i64,
    tenant: Option<&TenantId>,
    metadata: Metadata,
) -> Result<Vec<StoredEvent>, StoreError> {
    // Planned afresh on every call (not a cached prepared statement): a plan cached while the
    // tables were small seq-scans and hash-joins `events`, and PostgreSQL keeps it until the next
    // ANALYZE; at a million events that cost seconds per page instead of a millisecond. The
    // limit is written into the statement so the planner sees it.
    let limit = limit.clamp(1, MAX_PAGE);
    if let Some(pool) = store.postgres_pool() {
        // The page's positions are picked first and only then joined to `events`: written as one
        // join under the limit, the plan is costed for the whole rest of the log, and from a few
        // hundred thousand events on PostgreSQL starts two parallel workers (two new processes)
        // for every page, which took more time than the read.
        //
        // Each event is then fetched by its own index lookup (the `LATERAL ... LIMIT 1` keeps
        // the planner from turning it back into a plain join). As a join, whenever the planner
        // expected the page to be full (statistics lag a table that grows fast, until the next
        // ANALYZE) it hash-joined a sequential scan of all of `events`, which grows with the table.
        let tenant_filter = if tenant.is_some() { "AND tenant_id = $2" } else { "" };
        let metadata_column = match metadata {
            Metadata::All => "metadata",
            Metadata::TenantOnly => "tenant_id",
        };
        //
        // Each event's size is taken in the same lookup that reads it (the payload's text, which
        // is what is sent, PostgreSQL may keep compressed and far smaller; and the metadata's
        // stored size), summed in position order, and the page ends at the first event past the
        // byte budget. An event read twice, once to weigh it and once to send it, cost a
        // rebuild a third of its speed; the events read past the budget are few and rare.
        let sql = format!(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, {metadata_column}
               FROM (SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                            e.payload, e.metadata, l.tenant_id, e.size, sum(e.size) OVER (ORDER BY l.position) AS through
                       FROM (SELECT position, event_position, tenant_id FROM event_log
                              WHERE position > $1 {tenant_filter}
                              ORDER BY position
                              LIMIT {limit}) l
                      CROSS JOIN LATERAL (SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                                                 metadata, octet_length(payload::text) + pg_column_size(metadata) AS size
                                            FROM events WHERE position = l.event_position LIMIT 1) e) page
              WHERE through - size < {budget}
              ORDER BY position",
            budget = store.page_bytes(),
        );
        let mut query = sqlx::query(&sql).persistent(false).bind(after);
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter().map(|row| stored_event_pg_with(row, metadata)).collect()
    } else if let Some((pool, _)) = store.sqlite_pool() {
        // The page comes back as one row: a JSON array with an array per event, the payload and
        // metadata in it as stored, byte for byte. sqlx hands each row of a result over from
        // its worker thread with a copy of every value; for 10,000 rows of eight values that
        // cost many times what SQLite spent finding them.
        //
        // A position is the events' own key (migration `20261201000010_positioned_events.sql`),
        // so a page is one range of `events`, or of its tenant index.
        let tenant_filter = if tenant.is_some() { "AND tenant_id = $2" } else { "" };
        let metadata_column = match metadata {
            Metadata::All => "metadata",
            Metadata::TenantOnly => "'{\"tenant_id\":' || json_quote(tenant_id) || '}'",
        };
        // One pass over the page's range: each event is written out and weighed in the same
        // read, the sizes summed in position order, and the page ends at the first event past the
        // byte budget (a second read of each event, by its position, to write it out cost a
        // rebuild a fifth of its speed).
        let sql = format!(
            "SELECT '[' || group_concat(event, ',' ORDER BY position) || ']'
               FROM (SELECT position, event, size, sum(size) OVER (ORDER BY position) AS through
                       FROM (SELECT position,
                                    printf('[%d,%s,%s,%d,%s,%s,%s,%s]', position, json_quote(aggregate_type),
                                           json_quote(aggregate_id), sequence, json_quote(event_type),
                                           json_quote(event_version), payload, {metadata_column}) AS event,
                                    octet_length(payload) + octet_length(metadata) AS size
                               FROM events
                              WHERE position > $1 {tenant_filter}
                              ORDER BY position
                              LIMIT {limit}))
              WHERE through - size < {budget}",
            budget = store.page_bytes(),
        );
        let mut query = sqlx::query_scalar::<_, Option<String>>(&sql).persistent(false).bind(after);
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let Some(page) = query.fetch_one(pool).await? else { return Ok(Vec::new()) };
        // Each event is an array of `StoredEvent`'s fields in their order.
        serde_json::from_str(&page)
            .map_err(|e| StoreError::Corrupt(format!("a page of the log after position {after}: {e}")))
    } else {
        Ok(Vec::new())
    }
}
