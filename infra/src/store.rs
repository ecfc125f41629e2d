//! The event store: PostgreSQL, or an embedded SQLite file, behind one type, in the schema of
//! postgres-es and sqlite-es (whose repositories still read it the same; a test checks). Streams
//! are read here, a page of bounded bytes at a time ([`PAGE_BYTES`]): the crates read a whole
//! stream at once, and sqlite-es a row per event, each handed over from sqlx's worker thread on
//! its own (slower than one row of JSON per page; BENCHMARKS.md). This
//! module adds what the crates lack: the project's migrations, appends through the group-commit
//! writer (`writer.rs`) that return global positions, a single writer for SQLite, reading a
//! stream with its metadata and global positions, and per-tenant counters.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::Aggregate;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use colloquy_domain::TenantId;

pub use crate::error::StoreError;
pub use crate::event::StoredEvent;
use crate::event::{stored_event_pg, stored_event_sqlite};
use crate::personal::Keyring;
use crate::tx::{Backend, Tx, WriteTx};
pub use crate::tx::{Durability, File, Reads};
pub use crate::writer::raise;
use crate::writer::{self, AppendRequest, Target};

/// Where the events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A PostgreSQL database, by URL.
    Postgres {
        /// `postgres://` URL.
        url: String,
        /// Upper bound of the connection pool.
        max_connections: u32,
    },
    /// An SQLite file, created if missing.
    Sqlite {
        /// Path of the database file.
        path: std::path::PathBuf,
    },
}

/// One page of an aggregate's events ([`Store::load_page`]).
#[derive(Debug)]
pub struct LoadedPage {
    /// The events, in order, as stored (read them through [`StoredEvent::decode`]).
    pub events: Vec<StoredEvent>,
    /// Whether the page was cut at the byte budget, so that more may follow it.
    pub more: bool,
}

/// The most events a stream page's first read takes (see [`Store::load_page`]): a longer tail is
/// read again under the page's byte budget.
const TAIL_EVENTS: i64 = 32;

/// Whether a page whose events' sizes add up to `through` may have been cut: a page holds each
/// event whose predecessors in it weigh less than `budget`, so one under the budget took every
/// event there was.
pub(crate) fn cut_short(through: Option<i64>, budget: i64) -> bool {
    through.is_some_and(|through| through >= budget)
}

/// The event store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// The group-commit writer every append goes through (`writer.rs`).
    appends: mpsc::Sender<AppendRequest>,
    /// The highest global position this process knows to be committed.
    head: Arc<watch::Sender<i64>>,
    /// Where the SQLite writer hands what it commits.
    handoff: Arc<writer::Handoff>,
    /// The store's own id (`store_identity`), made once when the store was new.
    id: Arc<str>,
    /// The store's secret (`store_identity`), which keys the ids the server derives.
    secret: Arc<str>,
    /// The most stored bytes one page read returns ([`PAGE_BYTES`] unless a test lowers it).
    page_bytes: i64,
    /// The contacts' data keys, which seal and reveal their personal data (`personal.rs`).
    keys: Arc<Keyring>,
}

/// The most bytes of stored events (payload and metadata, as stored) one page read returns,
/// whatever its count limit: a page of the log, of a stream, or of an aggregate's load. A page
/// always holds at least one event, and no event is larger than a request body (1 MiB) and its
/// metadata. Without it, SQLite's one-row page (`group_concat`) failed past 1 GB (its longest
/// string), for good, and PostgreSQL pages held whatever the count limit let in.
pub const PAGE_BYTES: i64 = 16 * 1024 * 1024;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store and brings its schema up to date. On SQLite, moves
    /// infra's own read-model tables ([`STORE_READ_MODEL_TABLES`]) into the read models' file;
    /// a process that runs projections opens the store with theirs as well
    /// ([`Store::open_with_read_models`]).
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with_read_models(location, &[]).await
    }

    /// Opens the store as [`Store::open`] does, and on SQLite also moves `read_model_tables` (the
    /// tables the projections declare) into the read models' file, where their writes commit
    /// with their checkpoints. A table left in the events' file would be written in a
    /// transaction over both files, which SQLite does not make atomic.
    pub async fn open_with_read_models(
        location: &StoreLocation,
        read_model_tables: &[&str],
    ) -> Result<Self, StoreError> {
        let backend = match location {
            StoreLocation::Postgres { url, max_connections } => {
                // Every statement planned for its values and the tables as they are now, never
                // by a generic plan cached while a young store's tables were nearly empty
                // (docs/adr/0015).
                let options = sqlx::postgres::PgConnectOptions::from_str(url)?
                    .options([("plan_cache_mode", "force_custom_plan")]);
                let pool = PgPoolOptions::new()
                    .max_connections(*max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                let migrator = sqlx::migrate!("migrations/postgres");
                let applied =
                    sqlx::query_scalar(APPLIED_MIGRATIONS).fetch_all(&pool).await.unwrap_or_default();
                note_pending_migrations(&applied, &migrator);
                migrator.run(&pool).await?;
                Backend::Postgres { pool }
            }
            StoreLocation::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                // FULL makes every commit durable in WAL mode: a 2xx means the event survives a
                // crash.
                let pool = sqlite_pool(path, 8).await?;
                let migrator = sqlx::migrate!("migrations/sqlite");
                let applied =
                    sqlx::query_scalar(APPLIED_MIGRATIONS).fetch_all(&pool).await.unwrap_or_default();
                note_pending_migrations(&applied, &migrator);
                migrator.run(&pool).await?;
                let tables = STORE_READ_MODEL_TABLES.iter().chain(read_model_tables).copied();
                move_read_models(&pool, tables).await?;
                let linked = crate::chain::link_unlinked(&pool).await?;
                if linked > 0 {
                    tracing::info!(linked, "linked the events stored before the hash chain");
                }
                let writes = sqlite_pool(path, 1).await?;
                let read_model_writes = sqlite_pool(path, 1).await?;
                Backend::Sqlite {
                    pool,
                    writes,
                    write_lock: Arc::new(Mutex::new(())),
                    read_model_writes,
                    read_model_lock: Arc::new(Mutex::new(())),
                }
            }
        };
        let (head, target) = match &backend {
            Backend::Postgres { pool, .. } => {
                let head =
                    sqlx::query_scalar("SELECT last_position FROM event_log_state").fetch_one(pool).await?;
                (head, Target::Postgres(pool.clone()))
            }
            Backend::Sqlite { pool, writes, write_lock, .. } => {
                let head = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                    .fetch_one(pool)
                    .await?;
                (head, Target::Sqlite { pool: writes.clone(), write_lock: write_lock.clone() })
            }
        };
        let (id, secret) = store_identity(&backend).await?;
        let head = Arc::new(watch::channel(head).0);
        let handoff = Arc::new(writer::Handoff::default());
        let appends = writer::spawn(target, head.clone(), handoff.clone());
        let backend = Arc::new(backend);
        Ok(Self {
            keys: Arc::new(Keyring::new(backend.clone())),
            backend,
            appends,
            head,
            handoff,
            id: id.into(),
            secret: secret.into(),
            page_bytes: PAGE_BYTES,
        })
    }

    /// The contacts' data keys: what reveals their personal data in events read from the log
    /// (pages of streams and aggregates' loads are revealed already), and seals it in appends.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// The store's own id: made once when the store is new, kept in the store (and so in its
    /// backups). A JetStream stream is bound to it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The store's secret: made once with the store and never sent anywhere. It keys the ids
    /// the server derives from public facts (a contact made for a phone number), so that no
    /// tenant can compute another's and take it first.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// This handle, reading pages of at most `bytes` of stored events (at least one event each)
    /// instead of [`PAGE_BYTES`]: for tests of what is read a page at a time.
    #[cfg(feature = "testing")]
    #[must_use]
    pub fn with_page_bytes(mut self, bytes: i64) -> Self {
        self.page_bytes = bytes.max(1);
        self
    }

    /// The most stored bytes one page read returns.
    pub fn page_bytes(&self) -> i64 {
        self.page_bytes
    }

    /// On SQLite, hands every event this process commits from now on straight to `bus`, so the
    /// relay feeding that bus reads back from the log only what other processes commit. True
    /// when it does (false on PostgreSQL, or when already handing them to a bus).
    pub fn hand_commits_to(&self, bus: &crate::bus::EventBus) -> bool {
        matches!(*self.backend, Backend::Sqlite { .. }) && self.handoff.attach(bus)
    }

    /// Holds every event this process commits from now on for its JetStream relay, which
    /// publishes those that continue from where it is without reading them back from the log.
    /// True when it does (false when already handing them over).
    pub fn hand_commits_to_relay(&self) -> bool {
        self.handoff.attach_relay()
    }

    /// The position of the last event handed over (0 when none was).
    pub(crate) fn handed(&self) -> i64 {
        self.handoff.handed()
    }

    /// The commits held for the relay since it last took them, oldest first.
    pub(crate) fn take_held(&self) -> std::collections::VecDeque<Vec<StoredEvent>> {
        self.handoff.take_held()
    }

    /// A receiver of the highest global position this process knows to be committed: moved by
    /// every append made here, and by [`Store::advance_head`] for what other processes append.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Moves this process's head forward to `position` (never back).
    pub fn advance_head(&self, position: i64) {
        raise(&self.head, position);
    }

    /// `postgres` or `sqlite`.
    /// The connections for reading.
    pub fn reads(&self) -> Reads<'_> {
        match &*self.backend {
            Backend::Postgres { pool } => Reads::Postgres(pool),
            Backend::Sqlite { pool, .. } => Reads::Sqlite(pool),
        }
    }

    /// Whether the store is PostgreSQL (SQLite otherwise).
    pub fn is_postgres(&self) -> bool {
        matches!(&*self.backend, Backend::Postgres { .. })
    }

    pub fn kind(&self) -> &'static str {
        match &*self.backend {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    /// Closes every pooled connection; for orderly shutdown and tests that reopen the file.
    pub async fn close(&self) {
        match &*self.backend {
            Backend::Postgres { pool, .. } => pool.close().await,
            Backend::Sqlite { pool, writes, read_model_writes, .. } => {
                writes.close().await;
                read_model_writes.close().await;
                pool.close().await;
            }
        }
    }

    /// Whether [`Store::close`] has been called.
    pub fn is_closed(&self) -> bool {
        match &*self.backend {
            Backend::Postgres { pool, .. } => pool.is_closed(),
            Backend::Sqlite { pool, .. } => pool.is_closed(),
        }
    }

    /// Every event of one aggregate of `tenant`, in order. A stream is keyed by its tenant
    /// (docs/adr/0003): the same id in another tenant is another stream.
    pub async fn load<A: Aggregate>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        self.load_after::<A>(tenant, aggregate_id, 0).await
    }

    /// The events of one aggregate of `tenant` after `sequence`, in order, read a page at a time.
    pub async fn load_after<A: Aggregate>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        let mut events = Vec::new();
        let mut after = sequence;
        loop {
            let page = self.load_page::<A>(tenant, aggregate_id, after).await?;
            after =
                page.events.last().map_or(after, |event| usize::try_from(event.sequence).unwrap_or(after));
            events.extend(page.events);
            if !page.more {
                return Ok(events);
            }
        }
    }

    /// One page of the events of an aggregate of `tenant` after `sequence`, in order: as many as fit in
    /// [`PAGE_BYTES`] (and at least one), so that loading a very long stream holds one page of
    /// it at a time, not all of it.
    ///
    /// Not the store crates' `get_last_events`: they write `sequence` into the SQL text, so every
    /// call is a new statement to parse and plan (and to evict from the connection's statement
    /// cache). This runs before every command, so it binds the value instead.
    pub async fn load_page<A: Aggregate>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<LoadedPage, PersistenceError> {
        let after = i64::try_from(sequence).unwrap_or(i64::MAX);
        let failed = |e: sqlx::Error| PersistenceError::ConnectionError(Box::new(e));
        // Each event's size is summed in order over the sequences alone; only the events whose
        // predecessors are under the budget are then read whole, each by its whole key (LATERAL
        // with LIMIT 1, which the planner cannot flatten: with a join it, misled by a stream's stale row estimate, scanned the stream once
        // per event: 1.3 s a page of a 10,000-event stream).
        let (rows, through) = match &*self.backend {
            Backend::Postgres { pool, .. } => {
                // The usual read is a short tail (what came after a cached aggregate, or after
                // what the SLA clocks saw): a plain range scan, cheap to plan, where the budgeted
                // read spent 0.18 ms of its 0.24 planning under the SLA mix. Only a tail of
                // `TAIL_EVENTS` or more, or as heavy as the budget, is read again, budgeted.
                let tail = sqlx::query(
                    "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                            (octet_length(payload::text) + pg_column_size(metadata))::bigint AS size
                       FROM events
                      WHERE tenant_id = $4 AND aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
                      ORDER BY sequence LIMIT $5",
                )
                .bind(A::TYPE)
                .bind(aggregate_id)
                .bind(after)
                .bind(tenant.as_str())
                .bind(TAIL_EVENTS)
                .fetch_all(pool)
                .await
                .map_err(failed)?;
                let mut size = 0_i64;
                for row in &tail {
                    size = size.saturating_add(row.try_get::<i64, _>("size").map_err(failed)?);
                }
                if tail.len() < usize::try_from(TAIL_EVENTS).unwrap_or(usize::MAX) && size < self.page_bytes {
                    let events = tail.iter().map(stored_event_pg).collect::<Result<Vec<_>, _>>();
                    let mut events =
                        events.map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
                    self.keys
                        .reveal_in_place(&mut events)
                        .await
                        .map_err(|e| PersistenceError::ConnectionError(Box::new(e)))?;
                    return Ok(LoadedPage { events, more: false });
                }
                let rows = sqlx::query(
                    "SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata, w.through
                       FROM (SELECT sequence, size, sum(size) OVER (ORDER BY sequence) AS through
                               FROM (SELECT sequence, octet_length(payload::text) + pg_column_size(metadata) AS size
                                       FROM events
                                      WHERE tenant_id = $5 AND aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3) s) w
                       CROSS JOIN LATERAL (SELECT * FROM events
                                            WHERE tenant_id = $5 AND aggregate_type = $1 AND aggregate_id = $2
                                              AND sequence = w.sequence LIMIT 1) e
                      WHERE w.through - w.size < $4
                      ORDER BY w.sequence",
                )
                .bind(A::TYPE)
                .bind(aggregate_id)
                .bind(after)
                .bind(self.page_bytes)
                .bind(tenant.as_str())
                .fetch_all(pool)
                .await
                .map_err(failed)?;
                let through =
                    rows.last().map(|row| row.try_get::<i64, _>("through")).transpose().map_err(failed)?;
                (rows.iter().map(stored_event_pg).collect::<Result<Vec<_>, _>>(), through)
            }
            Backend::Sqlite { pool, .. } => {
                // The page comes back as one row, a JSON array with an array per event, as a
                // page of the log does (see `log::read_log`): sqlx hands each row over from its
                // connection's thread on its own, and a conversation that is not cached is
                // hundreds of rows.
                let sql = "SELECT '[' || group_concat(printf('[%d,%s,%s,%d,%s,%s,%s,%s]', e.position, json_quote(e.aggregate_type),
                                                               json_quote(e.aggregate_id), e.sequence, json_quote(e.event_type),
                                                               json_quote(e.event_version), e.payload, e.metadata), ',' ORDER BY e.sequence) || ']',
                                  max(w.through)
                             FROM (SELECT sequence, size, sum(size) OVER (ORDER BY sequence) AS through
                                     FROM (SELECT sequence, octet_length(payload) + octet_length(metadata) AS size
                                             FROM events
                                            WHERE tenant_id = $5 AND aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3)) w
                             JOIN events e
                               ON e.tenant_id = $5 AND e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence = w.sequence
                            WHERE w.through - w.size < $4";
                let (stream, through) = sqlx::query_as::<_, (Option<String>, Option<i64>)>(sql)
                    .bind(A::TYPE)
                    .bind(aggregate_id)
                    .bind(after)
                    .bind(self.page_bytes)
                    .bind(tenant.as_str())
                    .fetch_one(pool)
                    .await
                    .map_err(failed)?;
                let events = match stream {
                    None => Ok(Vec::new()),
                    Some(stream) => serde_json::from_str::<Vec<StoredEvent>>(&stream).map_err(|e| {
                        StoreError::Corrupt(format!("the events of {} {aggregate_id}: {e}", A::TYPE))
                    }),
                };
                (events, through)
            }
        };
        let mut events = rows.map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
        self.keys
            .reveal_in_place(&mut events)
            .await
            .map_err(|e| PersistenceError::ConnectionError(Box::new(e)))?;
        // Only a page that reached the budget can have left events out (see `cut_short`).
        Ok(LoadedPage { events, more: cut_short(through, self.page_bytes) })
    }

    /// Appends one command's events atomically and returns the global position of the last
    /// one. A sequence already taken fails the whole append with
    /// `PersistenceError::OptimisticLockError`. Appends queued at the same time share one commit
    /// (group commit, see `writer.rs`); each still succeeds or fails on its own.
    pub async fn append(&self, events: Vec<SerializedEvent>) -> Result<i64, PersistenceError> {
        self.append_erasing(events, Vec::new()).await
    }

    /// [`Store::append`], destroying in the same commit the data keys of `erases` (tenant and
    /// contact): the events record an erasure (docs/adr/0011).
    pub async fn append_erasing(
        &self,
        events: Vec<SerializedEvent>,
        erases: Vec<(String, String)>,
    ) -> Result<i64, PersistenceError> {
        let stopped = || {
            PersistenceError::ConnectionError(Box::new(std::io::Error::other(
                "the store's writer has stopped",
            )))
        };
        let (reply, outcome) = oneshot::channel();
        self.appends.send(AppendRequest { events, erases, reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// A page of the stream of one aggregate of `tenant`, with metadata and global positions: at
    /// most `limit` events and
    /// [`PAGE_BYTES`] (at least one event).
    pub async fn stream_page(
        &self,
        tenant: &TenantId,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = match &*self.backend {
            Backend::Postgres { pool, .. } => {
                sqlx::query(
                    "SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
                       FROM (SELECT sequence, size, sum(size) OVER (ORDER BY sequence) AS through
                               FROM (SELECT sequence, octet_length(payload::text) + pg_column_size(metadata) AS size
                                       FROM events
                                      WHERE aggregate_type = $1 AND aggregate_id = $2 AND tenant_id = $3 AND sequence > $4
                                      ORDER BY sequence
                                      LIMIT $5) s) w
                       CROSS JOIN LATERAL (SELECT * FROM events
                                            WHERE tenant_id = $3 AND aggregate_type = $1 AND aggregate_id = $2
                                              AND sequence = w.sequence LIMIT 1) e
                       LEFT JOIN event_log l ON l.event_position = e.position
                      WHERE w.through - w.size < $6
                      ORDER BY e.sequence",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(tenant.as_str())
                .bind(after_sequence)
                .bind(limit)
                .bind(self.page_bytes)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| stored_event_pg(&row))
                .collect::<Result<Vec<_>, _>>()?
            }
            Backend::Sqlite { pool, .. } => {
                sqlx::query(
                    "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
                       FROM (SELECT sequence, size, sum(size) OVER (ORDER BY sequence) AS through
                               FROM (SELECT sequence, octet_length(payload) + octet_length(metadata) AS size
                                       FROM events
                                      WHERE aggregate_type = $1 AND aggregate_id = $2 AND tenant_id = $3 AND sequence > $4
                                      ORDER BY sequence
                                      LIMIT $5)) w
                       JOIN events e
                         ON e.tenant_id = $3 AND e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence = w.sequence
                      WHERE w.through - w.size < $6
                      ORDER BY e.sequence",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(tenant.as_str())
                .bind(after_sequence)
                .bind(limit)
                .bind(self.page_bytes)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| stored_event_sqlite(&row))
                .collect::<Result<Vec<_>, _>>()?
            }
        };
        let mut rows = rows;
        self.keys.reveal_in_place(&mut rows).await?;
        Ok(rows)
    }

    /// The events of `tenant` whose metadata names `correlation_id` (one request's, and what
    /// they caused), in log order, at most `limit`, personal data revealed.
    pub async fn correlated(
        &self,
        tenant: &TenantId,
        correlation_id: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = match &*self.backend {
            Backend::Postgres { pool, .. } => sqlx::query(
                "SELECT l.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
                   FROM events e JOIN event_log l ON l.event_position = e.position
                  WHERE e.tenant_id = $1 AND e.metadata ->> 'correlation_id' = $2
                  ORDER BY l.position LIMIT $3",
            )
            .bind(tenant.as_str())
            .bind(correlation_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(stored_event_pg)
            .collect::<Result<Vec<_>, _>>()?,
            Backend::Sqlite { pool, .. } => sqlx::query(
                "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
                   FROM events
                  WHERE tenant_id = $1 AND json_extract(metadata, '$.correlation_id') = $2
                  ORDER BY position LIMIT $3",
            )
            .bind(tenant.as_str())
            .bind(correlation_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(stored_event_sqlite)
            .collect::<Result<Vec<_>, _>>()?,
        };
        self.keys.reveal_in_place(&mut events).await?;
        Ok(events)
    }

    /// The latest sequence of the stream of one aggregate of `tenant` (0 when it has none): one
    /// index-only lookup, which lets a read model's copy be checked for freshness against the
    /// store.
    pub async fn current_version(
        &self,
        tenant: &TenantId,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(sequence), 0) FROM events
                    WHERE tenant_id = $1 AND aggregate_type = $2 AND aggregate_id = $3";
        let version: i64 = crate::on_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(tenant.as_str())
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_one(pool)
                .await?
        });
        Ok(version)
    }

    /// Hands out the next value of a per-tenant counter (1, 2, 3, ...). A value is never handed
    /// out twice, even across processes: the increment is one atomic upsert.
    ///
    /// The increment holds the tenant's counter row until it commits, so it commits at once and
    /// without waiting for the disk ([`Durability::Relaxed`]): on PostgreSQL in the one round
    /// trip that makes it (an implicit transaction of two statements), not a round trip later,
    /// which under load let a few hundred increments a second through (a tenant opening
    /// conversations from many clients queued on its row). A value is used by an event, appended
    /// after it in the same write-ahead log (PostgreSQL's, or the events file's), whose durable
    /// commit makes the increment durable too: a crash loses only increments that no durable
    /// event used, so a value is handed out again only where nothing kept it.
    pub async fn next_counter(&self, tenant: &TenantId, name: &str) -> Result<u64, StoreError> {
        let value: i64 = if let Some(pool) = self.postgres_pool() {
            // Inlined, as a two-statement query takes no parameters: a tenant id is lower-case
            // letters, digits, `-` and `_`, and a counter's name is the caller's constant.
            let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
            let sql = format!(
                "SET LOCAL synchronous_commit = off;
                 INSERT INTO tenant_counters (tenant_id, name, value) VALUES ({}, {}, 1)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET value = tenant_counters.value + 1
                 RETURNING value",
                literal(tenant.as_str()),
                literal(name)
            );
            sqlx::raw_sql(&sql).fetch_one(pool).await?.try_get(0)?
        } else {
            let sql = "INSERT INTO tenant_counters (tenant_id, name, value) VALUES ($1, $2, 1)
                       ON CONFLICT (tenant_id, name) DO UPDATE SET value = tenant_counters.value + 1
                       RETURNING value";
            let mut tx = self.begin(File::Events, Durability::Relaxed).await?;
            let value = crate::on_tx!(&mut *tx, |conn| {
                sqlx::query_scalar(sql).bind(tenant.as_str()).bind(name).fetch_one(conn).await?
            });
            tx.commit().await?;
            value
        };
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("counter {name} is negative")))
    }

    /// The PostgreSQL pool, when the store is PostgreSQL.
    pub(crate) fn postgres_pool(&self) -> Option<&PgPool> {
        match &*self.backend {
            Backend::Postgres { pool, .. } => Some(pool),
            Backend::Sqlite { .. } => None,
        }
    }

    /// A transaction on the readers' pool, for reads that must agree with each other across
    /// statements (a rebuild folds a page through one). It is for reading: writes go through
    /// [`Store::begin`].
    pub async fn begin_read(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.backend.begin_read().await
    }

    /// Opens a write transaction on `file` (the events' side: tokens, counters, idempotency
    /// keys; or the read models' side: read-model tables, checkpoints, snapshots) at
    /// `durability`. On SQLite it waits for that file's writer lock and writes through that
    /// file's one writer connection; on PostgreSQL both files are the one database, and a
    /// [`Durability::Relaxed`] commit does not wait for the WAL flush.
    ///
    /// A transaction that waited over a second for the writer, or held it for over a second,
    /// is logged (a warning) with the place that opened it.
    #[track_caller]
    pub fn begin(
        &self,
        file: File,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<WriteTx<'_>, sqlx::Error>> + Send + '_ {
        let opened_at = std::panic::Location::caller();
        self.backend.begin(file, durability, opened_at)
    }

    /// The SQLite pool and its writer lock, when the store is SQLite.
    pub(crate) fn sqlite_pool(&self) -> Option<(&SqlitePool, &Mutex<()>)> {
        match &*self.backend {
            Backend::Postgres { .. } => None,
            Backend::Sqlite { pool, write_lock, .. } => Some((pool, &**write_lock)),
        }
    }
}

/// Infra's own tables of the read models' side: the checkpoints (of the projections and the relay)
/// and the aggregates' snapshots. On SQLite they are kept, with the tables each projection
/// declares (`Projection::tables`), in a file of their own beside the events' file
/// (`colloquy.read-models.db` beside `colloquy.db`), which every connection attaches as
/// `read_models`. Unqualified names resolve across attached files, so queries name no file. A
/// migration creates a new table in the events' file, as before; declared, it is moved at the
/// next start.
pub const STORE_READ_MODEL_TABLES: [&str; 2] = ["checkpoints", "snapshots"];

/// The store's id and secret, made now if the store has none yet (two processes opening a new
/// store at once agree on the first written).
async fn store_identity(backend: &Backend) -> Result<(String, String), StoreError> {
    let insert = "INSERT INTO store_identity (singleton, store_id, secret) VALUES (1, $1, $2)
                  ON CONFLICT (singleton) DO NOTHING";
    let select = "SELECT store_id, secret FROM store_identity WHERE singleton = 1";
    let made = uuid::Uuid::new_v4().to_string();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    Ok(match backend {
        Backend::Postgres { pool, .. } => {
            sqlx::query(insert).bind(&made).bind(&secret).execute(pool).await?;
            sqlx::query_as(select).fetch_one(pool).await?
        }
        Backend::Sqlite { writes, .. } => {
            sqlx::query(insert).bind(&made).bind(&secret).execute(writes).await?;
            sqlx::query_as(select).fetch_one(writes).await?
        }
    })
}

/// Where an SQLite store at `path` keeps its read models.
pub fn sqlite_read_models_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("read-models.db")
}

/// The migrations a store has applied (an error where the table is missing: none).
const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// Logs the migrations an existing store is about to apply, before they run: on a large store
/// one can take a while (one that copies the events copies every row), and nothing else is
/// logged meanwhile. A new store (nothing applied yet)
/// is not worth a line. `applied`: the versions in `_sqlx_migrations` (none when it is missing).
fn note_pending_migrations(applied: &[i64], migrator: &sqlx::migrate::Migrator) {
    let pending = pending_migrations(applied, migrator);
    if !applied.is_empty() && !pending.is_empty() {
        tracing::info!(?pending, "applying the store's migrations; on a large store this can take a while");
    }
}

/// The migrations of `migrator` not in `applied`, as "version description".
fn pending_migrations(applied: &[i64], migrator: &sqlx::migrate::Migrator) -> Vec<String> {
    migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}

/// Connections to the events' file at `path`, each attaching the read models' file. Commits are
/// durable (`synchronous = FULL` in both files) unless a transaction says otherwise.
async fn sqlite_pool(path: &Path, max_connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // What is deleted or overwritten is zeroed in the file, not left in free space: an
        // erasure's read-model rows leave no copy behind (docs/adr/0011).
        .pragma("secure_delete", "ON");
    let read_models = sqlite_read_models_path(path).to_string_lossy().into_owned();
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |connection, _| {
            let read_models = read_models.clone();
            Box::pin(async move {
                sqlx::query("ATTACH DATABASE ? AS read_models")
                    .bind(read_models)
                    .execute(&mut *connection)
                    .await?;
                // Both kept per file; the journal mode is also stored in the file.
                sqlx::query("PRAGMA read_models.journal_mode = WAL").execute(&mut *connection).await?;
                sqlx::query("PRAGMA read_models.synchronous = FULL").execute(&mut *connection).await?;
                sqlx::query("PRAGMA read_models.secure_delete = ON").execute(&mut *connection).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Moves each read-model table still in the events' file (every table of a store from before
/// the split, and a table a new migration created) into the read models' file, with its indexes
/// and rows. Per table, two transactions, each writing one file: the copy, then the drop of the
/// original. A crash between them leaves the table in both files, and the next start copies it
/// again from the events' file, which still holds all of it. (One transaction over both files
/// would not do: in WAL mode it is atomic in each file but not across them, and SQLite commits
/// `main` first, so a crash could keep the drop and lose the copy.)
async fn move_read_models<'a>(
    pool: &SqlitePool,
    tables: impl Iterator<Item = &'a str>,
) -> Result<(), StoreError> {
    for table in tables {
        // IMMEDIATE: a second process opening the store waits here instead of copying alongside.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // The table first, then its indexes (those SQLite makes for keys have no text).
        let objects: Vec<(String, String)> = sqlx::query_as(
            "SELECT type, sql FROM main.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL
             ORDER BY type = 'index', name",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        if objects.is_empty() {
            continue;
        }
        sqlx::query(&format!("DROP TABLE IF EXISTS read_models.{table}")).execute(&mut *tx).await?;
        for (kind, sql) in &objects {
            let moved = ["CREATE TABLE ", "CREATE INDEX ", "CREATE UNIQUE INDEX "]
                .iter()
                .find_map(|prefix| sql.strip_prefix(prefix).map(|rest| format!("{prefix}read_models.{rest}")))
                .ok_or_else(|| StoreError::Corrupt(format!("cannot move the {kind} of {table}: {sql}")))?;
            sqlx::query(&moved).execute(&mut *tx).await?;
        }
        // Generated columns (`hidden` 2 and 3) are computed again, not copied.
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_table_xinfo(?, 'main') WHERE hidden = 0 ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let columns = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let copy = format!("INSERT INTO read_models.{table} ({columns}) SELECT {columns} FROM main.{table}");
        sqlx::query(&copy).execute(&mut *tx).await?;
        tx.commit().await?;
        // Another process may have moved it meanwhile (after this one's copy).
        sqlx::query(&format!("DROP TABLE IF EXISTS main.{table}")).execute(pool).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_a_store_has_not_applied_are_named_by_version_and_description() {
        let migrator = sqlx::migrate!("migrations/sqlite");
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        let Some(last) = migrator.iter().last() else { panic!("no migrations") };
        let earlier = &versions[..versions.len() - 1];
        assert!(pending_migrations(&versions, &migrator).is_empty());
        assert_eq!(
            pending_migrations(earlier, &migrator),
            [format!("{} {}", last.version, last.description)]
        );
        assert_eq!(pending_migrations(&[], &migrator).len(), versions.len());
    }
}
