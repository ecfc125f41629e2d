//! Group commit: one task per store appends the events of every command that queued while the
//! previous append was being written, in one statement and one transaction, so one commit (one
//! WAL flush, one fsync) carries many commands. Each command still succeeds or fails on its own:
//! when the combined append fails (most often on a sequence that is already taken), each command
//! is appended alone, and only the one that conflicts gets the optimistic-lock error.
//!
//! Appending also gives each event its global position (in PostgreSQL a trigger numbers the rows
//! under the log's lock, in SQLite a row's key is its position, one more than the last), so the
//! writer hands each command the position of its last event and moves the store's head.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::bus::EventBus;
use crate::chain::{self, Hash, Linked, GENESIS};
use crate::event::StoredEvent;
use crate::json::RawJson;
use crate::personal;
use crate::tx::Durability;

/// The most commands one combined append carries.
const MAX_COMMANDS: usize = 256;
/// The most events one combined append carries (a single command with more still goes alone).
const MAX_EVENTS: usize = 4_096;
/// Rows per SQLite `INSERT` (8 parameters each, and 2 for each one's link: under SQLite's 32,766
/// in all).
const SQLITE_ROWS_PER_INSERT: usize = 400;

/// One command's events, waiting to be appended, and where to send the outcome: the global
/// position of its last event.
pub(crate) struct AppendRequest {
    pub(crate) events: Vec<SerializedEvent>,
    /// The subjects (tenant, contact) whose data keys these events erase, in the same commit.
    pub(crate) erases: Vec<(String, String)>,
    pub(crate) reply: oneshot::Sender<Result<i64, PersistenceError>>,
}

/// Where the writer appends.
#[derive(Clone)]
pub(crate) enum Target {
    Postgres(PgPool),
    Sqlite { pool: SqlitePool, write_lock: Arc<Mutex<()>> },
}

/// Where the writer hands the events it commits, once the process has said where
/// ([`crate::Store::hand_commits_to`], [`crate::Store::hand_commits_to_relay`]), so that the
/// relay need not read back from the log what this process has just written. `handed` is the
/// position of the last event handed over.
#[derive(Default)]
pub(crate) struct Handoff {
    sink: OnceLock<Sink>,
    handed: AtomicI64,
}

/// The most events held for the JetStream relay; past it, commits are not handed over and the
/// relay reads them from the log (it finds them missing from what it was handed).
const RELAY_HELD: usize = 8_192;

enum Sink {
    /// Straight to the in-process bus's subscribers (SQLite): the relay reads the log only for
    /// the head beyond `handed`, and projectors catch up on any other process's commit that
    /// falls before it.
    Bus(EventBus),
    /// To this process's JetStream relay, which publishes what continues exactly from its cursor
    /// and reads the log for anything else (another process's commits, or what it was not
    /// handed). Positions have no holes on either store, so "continues exactly" is a proof that
    /// nothing in between was missed.
    Relay(std::sync::Mutex<Held>),
}

/// Commits held for the relay, oldest first.
#[derive(Default)]
struct Held {
    commits: std::collections::VecDeque<Vec<StoredEvent>>,
    events: usize,
}

impl Handoff {
    /// Hands this writer's commits to `bus` from now on; false when it already hands them over.
    pub(crate) fn attach(&self, bus: &EventBus) -> bool {
        self.sink.set(Sink::Bus(bus.clone())).is_ok()
    }

    /// Holds this writer's commits for the relay from now on; false when it already hands them
    /// over.
    pub(crate) fn attach_relay(&self) -> bool {
        self.sink.set(Sink::Relay(std::sync::Mutex::default())).is_ok()
    }

    /// The position of the last event handed over (0 before any).
    pub(crate) fn handed(&self) -> i64 {
        self.handed.load(Ordering::Acquire)
    }

    /// The commits held for the relay since it last took them, oldest first.
    pub(crate) fn take_held(&self) -> std::collections::VecDeque<Vec<StoredEvent>> {
        match self.sink.get() {
            Some(Sink::Relay(held)) => {
                let mut held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                held.events = 0;
                std::mem::take(&mut held.commits)
            }
            _ => std::collections::VecDeque::new(),
        }
    }

    /// Hands over `events`, just committed in this order, the last at position `last`. Called
    /// before the head moves, so a reader woken by the head finds them handed over.
    fn hand_over(&self, events: Vec<Encoded<'_>>, last: i64) {
        let Some(sink) = self.sink.get() else { return };
        let count = events.len();
        let first = last - i64::try_from(count).unwrap_or(i64::MAX) + 1;
        let stored = || -> Vec<StoredEvent> {
            events
                .into_iter()
                .zip(first..)
                .map(|(Encoded { event, payload, metadata }, position)| StoredEvent {
                    position: Some(position),
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload,
                    metadata,
                })
                .collect()
        };
        match sink {
            Sink::Bus(bus) => bus.publish(&stored()),
            Sink::Relay(held) => {
                let mut held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if held.events + count > RELAY_HELD {
                    return;
                }
                held.events += count;
                held.commits.push_back(stored());
            }
        }
        self.handed.fetch_max(last, Ordering::AcqRel);
    }
}

/// An event with its payload and metadata as the JSON text the store keeps: serialized once,
/// for the insert and for the bus.
struct Encoded<'a> {
    event: &'a SerializedEvent,
    payload: RawJson,
    metadata: RawJson,
}

impl<'a> Encoded<'a> {
    fn new(event: &'a SerializedEvent) -> Self {
        Self {
            event,
            payload: RawJson::from_value(&event.payload),
            metadata: RawJson::from_value(&event.metadata),
        }
    }
}

/// An append that takes longer than this is logged as a warning: one commit takes milliseconds,
/// so every command waiting on one this slow is stalled by something to explain.
const SLOW_APPEND: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the writer task; it ends when every sender is dropped.
pub(crate) fn spawn(
    target: Target,
    head: Arc<watch::Sender<i64>>,
    handoff: Arc<Handoff>,
) -> mpsc::Sender<AppendRequest> {
    let (sender, receiver) = mpsc::channel(MAX_COMMANDS * 4);
    tokio::spawn(run(target, head, handoff, receiver));
    sender
}

async fn run(
    target: Target,
    head: Arc<watch::Sender<i64>>,
    handoff: Arc<Handoff>,
    mut receiver: mpsc::Receiver<AppendRequest>,
) {
    while let Some(first) = receiver.recv().await {
        let mut events = first.events.len();
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS && events < MAX_EVENTS {
            match receiver.try_recv() {
                Ok(next) => {
                    events += next.events.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        write_batch(&target, &head, &handoff, batch).await;
    }
}

async fn write_batch(
    target: &Target,
    head: &watch::Sender<i64>,
    handoff: &Handoff,
    batch: Vec<AppendRequest>,
) {
    // A command whose caller has gone (its request was cancelled) is still appended: the caller
    // may have been cut off after the commit anyway, and the outcome must not depend on timing.
    let combined: Vec<&SerializedEvent> = batch.iter().flat_map(|request| &request.events).collect();
    let erases: Vec<&(String, String)> = batch.iter().flat_map(|request| &request.erases).collect();
    let started = std::time::Instant::now();
    let written = write(target, handoff, &combined, &erases).await;
    let took = started.elapsed();
    if took > SLOW_APPEND {
        tracing::warn!(
            commands = batch.len(),
            events = combined.len(),
            took_ms = took.as_secs_f64() * 1e3,
            "an append took over a second"
        );
    }
    match written {
        Ok(last) => {
            raise(head, last);
            let mut after = combined.len();
            for request in batch {
                after -= request.events.len();
                let position = last - i64::try_from(after).unwrap_or(i64::MAX);
                let _ = request.reply.send(Ok(position));
            }
        }
        Err(_) if batch.len() > 1 => {
            // Nothing of the batch was written. Most often some command's sequence was taken by
            // another process; it could also be one command's data the database refuses. Each
            // command goes alone, so only that one fails (and if the database is down, each
            // fails on its own quickly).
            for request in batch {
                let events: Vec<&SerializedEvent> = request.events.iter().collect();
                let erases: Vec<&(String, String)> = request.erases.iter().collect();
                let outcome = write(target, handoff, &events, &erases).await;
                if let Ok(last) = outcome {
                    raise(head, last);
                }
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) => {
            let message = error.to_string();
            let mut error = Some(error);
            for request in batch {
                let failure = error.take().unwrap_or_else(|| {
                    PersistenceError::ConnectionError(Box::new(std::io::Error::other(message.clone())))
                });
                let _ = request.reply.send(Err(failure));
            }
        }
    }
}

fn failed(error: sqlx::Error) -> PersistenceError {
    match error.as_database_error() {
        Some(database) if database.is_unique_violation() => PersistenceError::OptimisticLockError,
        _ => PersistenceError::ConnectionError(Box::new(error)),
    }
}

/// Appends `events` in one transaction and returns the global position of the last one.
/// What was appended is handed over (`handoff`) before this returns, so before the head moves.
async fn write(
    target: &Target,
    handoff: &Handoff,
    events: &[&SerializedEvent],
    erases: &[&(String, String)],
) -> Result<i64, PersistenceError> {
    let encoded: Vec<Encoded<'_>> = events.iter().map(|event| Encoded::new(event)).collect();
    let last = match target {
        Target::Postgres(pool) if erases.is_empty() => write_postgres(pool, &encoded).await?,
        Target::Postgres(pool) => {
            // An erasure destroys its key in the commit that records it.
            let mut tx = pool.begin().await.map_err(failed)?;
            let last = write_postgres(&mut *tx, &encoded).await?;
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            for (tenant, subject) in erases {
                sqlx::query(personal::ERASE_KEY_PG)
                    .bind(tenant)
                    .bind(subject)
                    .bind(&now)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
            }
            tx.commit().await.map_err(failed)?;
            last
        }
        Target::Sqlite { pool, write_lock } => {
            let _writer = write_lock.lock().await;
            write_sqlite(pool, &encoded, erases).await?
        }
    };
    handoff.hand_over(encoded, last);
    Ok(last)
}

/// One statement in autocommit: `append_events` inserts the rows (the trigger numbers them) and
/// answers the log's head, all in one round trip. Payloads go as text, which the server only
/// checks as `json` (the column's type); the metadata as text cast to `jsonb`, which the tenant
/// column is generated from.
async fn write_postgres<'c>(
    pool: impl sqlx::PgExecutor<'c>,
    events: &[Encoded<'_>],
) -> Result<i64, PersistenceError> {
    let column = |get: fn(&SerializedEvent) -> &str| events.iter().map(|e| get(e.event)).collect::<Vec<_>>();
    let sequences: Vec<i64> =
        events.iter().map(|e| i64::try_from(e.event.sequence).unwrap_or(i64::MAX)).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.text()).collect();
    let metadatas: Vec<&str> = events.iter().map(|e| e.metadata.text()).collect();
    sqlx::query_scalar("SELECT append_events($1, $2, $3, $4, $5, $6::json[], $7::jsonb[])")
        .bind(column(|e| &e.aggregate_type))
        .bind(column(|e| &e.aggregate_id))
        .bind(sequences)
        .bind(column(|e| &e.event_type))
        .bind(column(|e| &e.event_version))
        .bind(payloads)
        .bind(metadatas)
        .fetch_one(pool)
        .await
        .map_err(failed)
}

/// One transaction (one fsync with `synchronous=FULL`) in two round trips to the connection's
/// thread. The first begins it (with the events file's write lock at once) and reads the log's
/// head and the last link of each tenant the events belong to; the events' positions and links
/// (`chain.rs`) are computed here; the second inserts the events with their positions, their
/// links, reads the head back and commits. Each statement costs sqlx-sqlite a hand-over to that
/// thread and back, which costs more than an append's statements themselves, so each round is
/// one query. SQLite stops at the first statement that fails and leaves the transaction open,
/// so a failure is rolled back here (a conflict rolls the whole append back). `pool` is the
/// events' writer's one connection (see `tx.rs`).
async fn write_sqlite(
    pool: &SqlitePool,
    events: &[Encoded<'_>],
    erases: &[&(String, String)],
) -> Result<i64, PersistenceError> {
    let mut connection = pool.acquire().await.map_err(failed)?;
    let appended = async {
        // Each event's tenant, read from its metadata once.
        let owners: Vec<String> =
            events.iter().map(|e| e.metadata.str_field("tenant_id").unwrap_or_default()).collect();
        let tenants: Vec<&String> = {
            let mut tenants: Vec<&String> = owners.iter().collect();
            tenants.sort();
            tenants.dedup();
            tenants
        };
        let rows = vec!["(?)"; tenants.len()].join(", ");
        let begin = format!(
            "{};\nWITH t(tenant) AS (VALUES {rows})
             SELECT t.tenant,
                    (SELECT coalesce(max(position), 0) FROM events),
                    (SELECT h.hash FROM events e JOIN event_hashes h ON h.position = e.position
                      WHERE e.tenant_id = t.tenant ORDER BY e.position DESC LIMIT 1)
               FROM t",
            Durability::Durable.begin_events_write()
        );
        let mut query = sqlx::query_as::<_, (String, i64, Option<Vec<u8>>)>(&begin);
        for tenant in &tenants {
            query = query.bind(tenant);
        }
        let read = query.fetch_all(&mut *connection).await?;
        let head = read.first().map_or(0, |(_, head, _)| *head);
        let mut heads: std::collections::HashMap<String, Hash> = read
            .into_iter()
            .map(|(tenant, _, hash)| (tenant, hash.as_deref().and_then(chain::hash_of).unwrap_or(GENESIS)))
            .collect();
        let mut sql = String::new();
        for chunk in events.chunks(SQLITE_ROWS_PER_INSERT) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            sql.push_str(&format!(
                "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES {rows};\n"
            ));
            let links = vec!["(?, ?)"; chunk.len()].join(", ");
            sql.push_str(&format!("INSERT INTO event_hashes (position, hash) VALUES {links};\n"));
        }
        for _ in erases {
            sql.push_str(personal::ERASE_KEY);
            sql.push_str(";\n");
        }
        sql.push_str("SELECT coalesce(max(position), 0) FROM events;\nCOMMIT");
        let mut links = Vec::with_capacity(events.len());
        for ((Encoded { event, payload, metadata }, tenant), position) in events.iter().zip(&owners).zip(head + 1..) {
            let prev = heads.get(tenant).copied().unwrap_or(GENESIS);
            let linked = Linked {
                tenant_id: tenant,
                position,
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: payload.text(),
                metadata: metadata.text(),
            };
            let hash = chain::link(&prev, &linked);
            heads.insert(tenant.clone(), hash);
            links.push((position, hash));
        }
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        let mut links = links.iter();
        for chunk in events.chunks(SQLITE_ROWS_PER_INSERT) {
            let chunk_links: Vec<&(i64, Hash)> = links.by_ref().take(chunk.len()).collect();
            for (Encoded { event, payload, metadata }, (position, _)) in chunk.iter().zip(&chunk_links) {
                let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
                query = query
                    .bind(*position)
                    .bind(event.aggregate_type.as_str())
                    .bind(event.aggregate_id.as_str())
                    .bind(sequence)
                    .bind(event.event_type.as_str())
                    .bind(event.event_version.as_str())
                    .bind(payload.text())
                    .bind(metadata.text());
            }
            for (position, hash) in chunk_links {
                query = query.bind(*position).bind(hash.to_vec());
            }
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for (tenant, subject) in erases {
            query = query.bind(tenant.as_str()).bind(subject.as_str()).bind(now.clone()).bind(now.clone());
        }
        // `fetch_all`, not `fetch_one`: a query stopped at its first row would not reach `COMMIT`.
        query.fetch_all(&mut *connection).await
    }
    .await;
    match appended {
        Ok(heads) => heads.last().copied().ok_or_else(|| {
            PersistenceError::ConnectionError(Box::new(std::io::Error::other("the append returned no head")))
        }),
        Err(error) => {
            // Where the failure was BEGIN or COMMIT, no transaction may be open; where ROLLBACK
            // fails for any other reason, the connection's state is unknown and it is not reused.
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *connection).await {
                if !rollback.to_string().contains("no transaction is active") {
                    connection.close_on_drop();
                }
            }
            Err(failed(error))
        }
    }
}

/// Moves a watched position forward to `position`, never back; watchers wake only when it moved.
pub fn raise(watched: &watch::Sender<i64>, position: i64) {
    watched.send_if_modified(|current| {
        let moved = position > *current;
        *current = (*current).max(position);
        moved
    });
}
