//! Runs commands against aggregates: load (from a cache checked against the store), check tenant
//! and expected version, handle, append, retry on a conflict. Also serves reads of an
//! aggregate's current state.
//!
//! cqrs-es's `CqrsFramework` returns nothing from `execute` (no version, no events), cannot
//! check an expected version and does not retry; its snapshot and aggregate-store modes apply
//! events twice. So commands run here, on cqrs-es's `Aggregate` trait and the `Store` (postgres-es's
//! repository for PostgreSQL streams, its own one-row read on SQLite), and the speed on long
//! streams comes from a cache of loaded aggregates that is brought up to date with the events
//! after its version before every use.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use chrono::{SubsecRound, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use lru::LruCache;
use tokio::sync::Mutex;
use uuid::Uuid;

use colloquy_domain::personal::PersonalData;
use colloquy_domain::{Actor, CommandContext, EventMetadata, Footprint, Snapshot, TenantId, TenantOwned};

use crate::snapshots::{Of, StoredSnapshot};
use crate::store::Store;

/// How many times a command is tried when another process keeps appending first. Writers in
/// this process never conflict (they queue on the aggregate's slot), so this only bounds
/// contention between processes.
const MAX_ATTEMPTS: u32 = 10;

/// A random pause before retry `attempt` (1-based), growing with each try, so that two
/// processes racing for one aggregate stop colliding in lockstep.
async fn backoff(attempt: u32) {
    use rand::Rng;
    let ceiling_ms = 2u64.saturating_pow(attempt).min(64);
    let pause = rand::thread_rng().gen_range(0..=ceiling_ms * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
}

/// Who and what a command comes from, for its events' metadata.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The tenant the caller acts in.
    pub tenant: TenantId,
    /// The acting principal.
    pub actor: Actor,
    /// The token that carried the command, when `actor` is an agent it acted on behalf of.
    pub via_token: Option<String>,
    /// The request that carried the command.
    pub request_id: Option<String>,
    /// Correlates everything one original request caused; a new id when absent.
    pub correlation_id: Option<Uuid>,
    /// The event or request that caused this command.
    pub causation_id: Option<Uuid>,
}

/// Whether a command creates its aggregate or acts on an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// The aggregate must not exist yet (the domain refuses if it does).
    Create,
    /// The aggregate must exist in the caller's tenant.
    Update,
}

/// Where a point-in-time read stops ([`Repository::read_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The events up to this global position.
    Position(i64),
    /// The events recorded up to this instant.
    Instant(chrono::DateTime<Utc>),
    /// The events up to this global position that were recorded by this instant.
    Both(i64, chrono::DateTime<Utc>),
}

impl Until {
    /// Whether `event` had happened by then.
    pub fn includes(&self, event: &crate::StoredEvent) -> bool {
        let by_position = |at: i64| event.position.is_some_and(|p| p <= at);
        let by_time = |at| event.recorded_at().is_some_and(|recorded| recorded <= at);
        match *self {
            Until::Position(at) => by_position(at),
            Until::Instant(at) => by_time(at),
            Until::Both(position, at) => by_position(position) && by_time(at),
        }
    }
}

/// Events a command appended, the aggregate's version after them, and what the caller read
/// from the aggregate's new state.
#[derive(Debug)]
pub struct Committed<A: Aggregate, V> {
    /// The appended events, with metadata; empty when the command changed nothing.
    pub events: Vec<EventEnvelope<A>>,
    /// The aggregate's version (its last sequence) after the command.
    pub version: usize,
    /// The global position of the last appended event; `None` when nothing was appended.
    pub position: Option<i64>,
    /// The caller's view of the state after the command.
    pub view: V,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// No such aggregate in the caller's tenant.
    #[error("not found")]
    NotFound,
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(E),
    /// The caller's expected version is not the current one.
    #[error("expected version {expected}, but the current version is {actual}")]
    VersionMismatch {
        /// What the caller expected.
        expected: usize,
        /// What the store holds.
        actual: usize,
    },
    /// Other writers kept getting in first; retrying did not help.
    #[error("the aggregate kept changing under concurrent writes")]
    Conflict,
    /// The store failed.
    #[error("store failure: {0}")]
    Store(PersistenceError),
}

struct Loaded<A> {
    aggregate: A,
    version: usize,
    /// The version of its latest snapshot taken or read (0: none).
    snapshot_at: usize,
}

type Slot<A> = Arc<Mutex<Option<Loaded<A>>>>;

/// How far the cache of one aggregate type may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The most aggregates kept.
    pub aggregates: usize,
    /// The most memory their states may hold, all together, in bytes as their
    /// [`Footprint`]s estimate it. An aggregate's memory grows with its history (a conversation
    /// holds its messages and their texts), so a count of aggregates alone does not bound it;
    /// the least recently used go first when either limit is passed.
    pub bytes: usize,
    /// Every how many events an aggregate's state is kept as a snapshot, which a load on a
    /// miss starts from: it then reads at most this many events, not the aggregate's whole
    /// history. 0 takes none.
    pub snapshot_every: usize,
}

/// What a cache holds: how many aggregates, how many events they were built from, and their
/// estimated memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSize {
    /// Aggregates kept.
    pub aggregates: usize,
    /// The events their states were built from.
    pub events: usize,
    /// Their estimated memory, in bytes.
    pub bytes: usize,
}

/// What a repository has read from the store to load its aggregates, since it started: where
/// the cache holds the aggregates in use, few loads and few events per command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReads {
    /// Aggregates read from their first event: not in the cache (never loaded, evicted, or
    /// dropped from it after a conflict or a failure; a new aggregate's first read, which finds
    /// nothing, counts too).
    pub loads: u64,
    /// Events read, by those loads and by bringing cached aggregates up to date.
    pub events: u64,
    /// Of the loads, those that started from a snapshot.
    pub snapshots: u64,
}

/// What one cached aggregate weighs: the version it was built to, and its estimated memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Weight {
    events: usize,
    bytes: usize,
}

/// Loaded aggregates, least recently used first out, weighed by their estimated memory.
struct Cache<A> {
    slots: LruCache<String, Cached<A>>,
    /// The sum of the cached weights.
    events: usize,
    bytes: usize,
    limits: CacheLimits,
}

struct Cached<A> {
    slot: Slot<A>,
    /// What the slot held when last stored.
    weight: Weight,
}

impl<A> Cache<A> {
    fn new(limits: CacheLimits) -> Self {
        Self { slots: LruCache::unbounded(), events: 0, bytes: 0, limits }
    }

    fn add(&mut self, weight: Weight) {
        self.events += weight.events;
        self.bytes += weight.bytes;
    }

    fn remove(&mut self, weight: Weight) {
        self.events -= weight.events;
        self.bytes -= weight.bytes;
    }

    /// The slot for `key`, created empty if missing.
    fn slot(&mut self, key: &str) -> Slot<A> {
        if let Some(cached) = self.slots.get(key) {
            return cached.slot.clone();
        }
        let slot: Slot<A> = Arc::new(Mutex::new(None));
        self.slots.put(key.to_owned(), Cached { slot: slot.clone(), weight: Weight::default() });
        self.shrink();
        slot
    }

    /// Records that `slot` now holds an aggregate of `weight` (a use: it becomes the most
    /// recently used), then drops the least recently used aggregates past the limits. A slot
    /// dropped meanwhile (its holder kept it alive) is not counted.
    fn weigh(&mut self, key: &str, slot: &Slot<A>, weight: Weight) {
        if let Some(cached) = self.slots.get_mut(key).filter(|c| Arc::ptr_eq(&c.slot, slot)) {
            let before = std::mem::replace(&mut cached.weight, weight);
            self.remove(before);
            self.add(weight);
        }
        self.shrink();
    }

    /// Records that `slot` was left empty (a command failed after taking its aggregate out):
    /// it holds nothing, so it weighs nothing. Not a use; a slot dropped meanwhile is ignored.
    fn emptied(&mut self, key: &str, slot: &Slot<A>) {
        if let Some(cached) = self.slots.peek_mut(key).filter(|c| Arc::ptr_eq(&c.slot, slot)) {
            let before = std::mem::take(&mut cached.weight);
            self.remove(before);
        }
    }

    fn shrink(&mut self) {
        // The most recently used one always stays, however large.
        while self.slots.len() > 1
            && (self.slots.len() > self.limits.aggregates || self.bytes > self.limits.bytes)
        {
            match self.slots.pop_lru() {
                Some((_, evicted)) => self.remove(evicted.weight),
                None => break,
            }
        }
    }
}

/// Commands and reads for one aggregate type.
pub struct Repository<A: Aggregate> {
    store: Store,
    cache: SyncMutex<Cache<A>>,
    loads: AtomicU64,
    events_read: AtomicU64,
    snapshot_loads: AtomicU64,
    snapshot_every: usize,
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository").field("aggregate", &A::TYPE).field("store", &self.store.kind()).finish()
    }
}

impl<A> Repository<A>
where
    A: Aggregate<Services = CommandContext> + TenantOwned + Footprint + Snapshot + PersonalData,
    A::Command: Clone,
{
    /// A repository over `store` that keeps loaded aggregates within `cache`.
    pub fn new(store: Store, cache: CacheLimits) -> Self {
        Self {
            store,
            cache: SyncMutex::new(Cache::new(cache)),
            loads: AtomicU64::new(0),
            events_read: AtomicU64::new(0),
            snapshot_loads: AtomicU64::new(0),
            snapshot_every: cache.snapshot_every,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The slot for one aggregate, under its [`key`]. Commands and reads of one aggregate in
    /// this process queue on its slot, so they never conflict with each other; other processes
    /// are caught by the store's optimistic lock.
    fn slot(&self, key: &str) -> Slot<A> {
        self.cache().slot(key)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache<A>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `loaded` back into its slot (whose lock `guard` is) and weighs it in the cache,
    /// taking a snapshot of it first when one is due.
    fn keep(&self, key: &str, slot: &Slot<A>, guard: &mut Option<Loaded<A>>, mut loaded: Loaded<A>) {
        self.snapshot_if_due(key, &mut loaded);
        let weight = Weight { events: loaded.version, bytes: loaded.aggregate.footprint() };
        *guard = Some(loaded);
        self.cache().weigh(key, slot, weight);
    }

    /// Drops every aggregate this process holds (after an erasure: a cached one holds the
    /// contact's values as they read before it); each is read again from the store at its next
    /// use.
    pub fn forget_all(&self) {
        let mut cache = self.cache();
        cache.slots.clear();
        (cache.events, cache.bytes) = (0, 0);
    }

    /// What the cache holds now.
    pub fn cached(&self) -> CacheSize {
        let cache = self.cache();
        CacheSize { aggregates: cache.slots.len(), events: cache.events, bytes: cache.bytes }
    }

    /// What it has read from the store to load aggregates, since it started.
    pub fn reads(&self) -> CacheReads {
        CacheReads {
            loads: self.loads.load(Ordering::Relaxed),
            events: self.events_read.load(Ordering::Relaxed),
            snapshots: self.snapshot_loads.load(Ordering::Relaxed),
        }
    }

    /// Saves a snapshot of `loaded` (of the aggregate `key` names) when it has moved
    /// [`CacheLimits::snapshot_every`] events past its last one, in the background: a lost or
    /// failed save only makes a later load longer.
    fn snapshot_if_due(&self, key: &str, loaded: &mut Loaded<A>) {
        let every = self.snapshot_every;
        if every == 0 || loaded.version < loaded.snapshot_at + every {
            return;
        }
        loaded.snapshot_at = loaded.version;
        let Some((tenant, id)) = key.split_once('\0') else { return };
        let (Ok(tenant), Ok(state)) = (TenantId::parse(tenant), serde_json::to_string(&loaded.aggregate))
        else {
            return;
        };
        let snapshot = StoredSnapshot {
            version: i64::try_from(loaded.version).unwrap_or(i64::MAX),
            shape: i64::from(A::SHAPE),
            state,
        };
        let (store, id) = (self.store.clone(), id.to_owned());
        tokio::spawn(async move {
            let of = Of { tenant: &tenant, aggregate_type: A::TYPE, aggregate_id: &id };
            if let Err(error) = store.save_snapshot(of, &snapshot).await {
                tracing::warn!(aggregate = A::TYPE, %id, %error, "a snapshot was not saved");
            }
        });
    }

    /// The aggregate as its latest snapshot has it, when there is one of this shape that reads
    /// back; `None` otherwise (the events are read from the first then).
    async fn restore(&self, tenant: &TenantId, aggregate_id: &str) -> Option<Loaded<A>> {
        if self.snapshot_every == 0 {
            return None;
        }
        let of = Of { tenant, aggregate_type: A::TYPE, aggregate_id };
        let snapshot = match self.store.snapshot(of).await {
            Ok(Some(snapshot)) if snapshot.shape == i64::from(A::SHAPE) => snapshot,
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(aggregate = A::TYPE, id = aggregate_id, %error, "a snapshot could not be read");
                return None;
            }
        };
        let version = usize::try_from(snapshot.version).ok()?;
        match serde_json::from_str::<A>(&snapshot.state) {
            Ok(mut aggregate) => {
                aggregate.restored();
                Some(Loaded { aggregate, version, snapshot_at: version })
            }
            Err(error) => {
                tracing::warn!(aggregate = A::TYPE, id = aggregate_id, %error, "a snapshot does not read back");
                None
            }
        }
    }

    /// Brings a cached aggregate (or a new one) up to the store's latest version, applying its
    /// events a page at a time ([`Store::load_page`]), so that a long stream is never all in
    /// memory at once. One not cached starts from its snapshot when `snapshot` says to look for
    /// one (not for a create: a new aggregate has none, and the look-up would cost every create
    /// a query).
    async fn refresh(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        cached: Option<Loaded<A>>,
        snapshot: bool,
    ) -> Result<Loaded<A>, PersistenceError> {
        let mut loaded = match cached {
            Some(cached) if cached.version > 0 => cached,
            _ => {
                self.loads.fetch_add(1, Ordering::Relaxed);
                let restored = match snapshot {
                    true => self.restore(tenant, aggregate_id).await,
                    false => None,
                };
                match restored {
                    Some(restored) => {
                        self.snapshot_loads.fetch_add(1, Ordering::Relaxed);
                        restored
                    }
                    None => Loaded { aggregate: A::default(), version: 0, snapshot_at: 0 },
                }
            }
        };
        loop {
            let page = self.store.load_page::<A>(tenant, aggregate_id, loaded.version).await?;
            self.events_read.fetch_add(page.events.len() as u64, Ordering::Relaxed);
            for stored in &page.events {
                let event = stored
                    .decode::<A::Event>()
                    .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
                loaded.version = usize::try_from(stored.sequence).unwrap_or(loaded.version);
                loaded.aggregate.apply(event);
            }
            if !page.more {
                return Ok(loaded);
            }
        }
    }

    /// Reads an aggregate of `tenant` as it stood at `until`: its stream's events up to then
    /// (by global position, or by when each was recorded) folded through its own `apply`, the
    /// code the live state is folded by. With the version it had then and the global position
    /// of its last event folded; `None` when it had no event by then (or is not the tenant's).
    /// Reads the store, never the cache.
    pub async fn read_at<R>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        until: Until,
        read: impl FnOnce(&A, usize) -> R,
    ) -> Result<Option<(R, i64)>, crate::StoreError> {
        let mut aggregate = A::default();
        let (mut version, mut position, mut after) = (0usize, 0i64, 0i64);
        'read: loop {
            let page = self.store.stream_page(tenant, A::TYPE, aggregate_id, after, 1000).await?;
            if page.is_empty() {
                break;
            }
            for stored in page {
                if !until.includes(&stored) {
                    break 'read;
                }
                after = stored.sequence;
                let event = stored.decode::<A::Event>().map_err(|e| {
                    crate::StoreError::Corrupt(format!(
                        "{} {aggregate_id} at {}: {e}",
                        A::TYPE,
                        stored.sequence
                    ))
                })?;
                aggregate.apply(event);
                version = usize::try_from(stored.sequence).unwrap_or(version);
                position = stored.position.unwrap_or(position);
            }
        }
        if version == 0 || aggregate.tenant() != Some(tenant) {
            return Ok(None);
        }
        Ok(Some((read(&aggregate, version), position)))
    }

    /// Reads the current state of an aggregate of `tenant`. `None` when it does not exist there.
    pub async fn read<R>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        read: impl FnOnce(&A, usize) -> R,
    ) -> Result<Option<R>, PersistenceError> {
        let key = key(tenant, aggregate_id);
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        let loaded = match self.refresh(tenant, aggregate_id, guard.take(), true).await {
            Ok(loaded) => loaded,
            Err(error) => {
                self.cache().emptied(&key, &slot);
                return Err(error);
            }
        };
        let result =
            (loaded.aggregate.tenant() == Some(tenant)).then(|| read(&loaded.aggregate, loaded.version));
        self.keep(&key, &slot, &mut guard, loaded);
        Ok(result)
    }

    /// Reads, for an aggregate of `tenant`, a fact that never changes once the aggregate exists
    /// (a conversation's group, say): from the cache when it holds the aggregate, without asking
    /// the store for newer events, since none can change the answer; as [`Self::read`] does
    /// otherwise. `None` when the aggregate does not exist there.
    pub async fn read_settled<R>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        read: impl FnOnce(&A) -> R,
    ) -> Result<Option<R>, PersistenceError> {
        self.read_cached(tenant, aggregate_id, |aggregate, _| read(aggregate)).await
    }

    /// Reads an aggregate of `tenant` from the cache when it holds it, without asking the store
    /// for newer events (only another process can have appended them), as [`Self::read`] does
    /// otherwise. For a caller that reads only to save itself work before a command, which
    /// [`Self::execute`] then decides on the aggregate as the store has it (a stale read costs
    /// it work, never a wrong outcome). `None` when the aggregate does not exist there.
    pub async fn read_cached<R>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        read: impl FnOnce(&A, usize) -> R,
    ) -> Result<Option<R>, PersistenceError> {
        {
            let slot = self.slot(&key(tenant, aggregate_id));
            let guard = slot.lock().await;
            if let Some(loaded) = guard.as_ref().filter(|loaded| loaded.aggregate.tenant() == Some(tenant)) {
                return Ok(Some(read(&loaded.aggregate, loaded.version)));
            }
        }
        self.read(tenant, aggregate_id, read).await
    }

    /// Runs `command` on the aggregate `aggregate_id` and reads `view` from the state after it.
    ///
    /// A cached aggregate is used as it is, without asking the store for newer events first:
    /// when another process did append since, the append conflicts and the command is decided
    /// again on the reloaded aggregate. An answer that appends nothing (a refusal, a command that
    /// changes nothing, not found, a version mismatch) is only given after checking the store,
    /// so a stale cache never decides an answer.
    pub async fn execute<V>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        intent: Intent,
        expected_version: Option<usize>,
        origin: &Origin,
        view: impl FnOnce(&A, usize) -> V,
    ) -> Result<Committed<A, V>, CommandError<A::Error>> {
        let tenant = &origin.tenant;
        let key = key(tenant, aggregate_id);
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        let correlation_id = origin.correlation_id.unwrap_or_else(Uuid::now_v7);
        let mut trust_cache = true;
        let mut conflicts = 0;
        let outcome = async {
            loop {
                // `checked`: the aggregate in hand was brought up to date with the store just now.
                let (mut loaded, checked) = match guard.take() {
                    Some(cached) if trust_cache => (cached, false),
                    cached => {
                        let snapshot = intent == Intent::Update;
                        (
                            self.refresh(tenant, aggregate_id, cached, snapshot)
                                .await
                                .map_err(CommandError::Store)?,
                            true,
                        )
                    }
                };
                trust_cache = false;
                // Microseconds, as PostgreSQL's timestamptz keeps them, so the aggregate and the read
                // models built from its events show the same times.
                let now = Utc::now().trunc_subsecs(6);
                let events =
                    match decide(&mut loaded, command.clone(), intent, expected_version, origin, now).await {
                        Decision::Append(events) => events,
                        Decision::Unchanged if !checked => {
                            self.keep(&key, &slot, &mut guard, loaded);
                            continue;
                        }
                        Decision::Unchanged => {
                            let version = loaded.version;
                            let view = view(&loaded.aggregate, version);
                            self.keep(&key, &slot, &mut guard, loaded);
                            return Ok(Committed { events: Vec::new(), version, view, position: None });
                        }
                        Decision::Refused { error, intact } => {
                            // The domain decides before it writes, so a refusal with no events leaves the
                            // aggregate as it was and it can stay cached.
                            if intact {
                                self.keep(&key, &slot, &mut guard, loaded);
                            }
                            if checked {
                                return Err(error);
                            }
                            continue;
                        }
                    };
                // The aggregate has applied the events: it knows whose each value is.
                let personal: Vec<_> = events.iter().map(|e| loaded.aggregate.personal_data(e)).collect();
                let erases: Vec<(String, String)> = events
                    .iter()
                    .filter_map(|e| loaded.aggregate.erases(e))
                    .map(|subject| (tenant.as_str().to_owned(), subject.0.to_string()))
                    .collect();
                let envelopes = wrap(aggregate_id, loaded.version, events, origin, correlation_id, now);
                let mut serialized = serialize(&envelopes).map_err(CommandError::Store)?;
                let mut payloads: Vec<&mut serde_json::Value> =
                    serialized.iter_mut().map(|e| &mut e.payload).collect();
                self.store
                    .keys()
                    .seal(tenant, &mut payloads, &personal)
                    .await
                    .map_err(|e| CommandError::Store(PersistenceError::ConnectionError(Box::new(e))))?;
                match self.store.append_erasing(serialized, erases.clone()).await {
                    Ok(position) => {
                        for (tenant, subject) in &erases {
                            self.store.keys().forget(tenant, subject);
                        }
                        loaded.version += envelopes.len();
                        let version = loaded.version;
                        let view = view(&loaded.aggregate, version);
                        self.keep(&key, &slot, &mut guard, loaded);
                        return Ok(Committed { events: envelopes, version, view, position: Some(position) });
                    }
                    // Another process appended first. The handled aggregate is discarded (the slot
                    // stays empty) and the next attempt reloads and decides again.
                    Err(PersistenceError::OptimisticLockError) => {
                        if let Some(expected) = expected_version {
                            let actual = self
                                .refresh(tenant, aggregate_id, None, true)
                                .await
                                .map_err(CommandError::Store)?;
                            let version = actual.version;
                            self.keep(&key, &slot, &mut guard, actual);
                            return Err(CommandError::VersionMismatch { expected, actual: version });
                        }
                        conflicts += 1;
                        if conflicts >= MAX_ATTEMPTS {
                            return Err(CommandError::Conflict);
                        }
                        backoff(conflicts).await;
                    }
                    Err(other) => return Err(CommandError::Store(other)),
                }
            }
        }
        .await;
        // A failure may leave the slot empty (the aggregate it took out is discarded).
        if guard.is_none() {
            self.cache().emptied(&key, &slot);
        }
        outcome
    }
}

/// The cache's key of aggregate `aggregate_id` of `tenant`: a stream is keyed by its tenant
/// (docs/adr/0003), so the same id in two tenants is two aggregates. Tenant ids never hold a NUL.
fn key(tenant: &TenantId, aggregate_id: &str) -> String {
    format!("{}\0{aggregate_id}", tenant.as_str())
}

/// What deciding a command on an aggregate came to.
enum Decision<A: Aggregate> {
    /// Events to append; the aggregate has applied them already.
    Append(Vec<A::Event>),
    /// The command changes nothing.
    Unchanged,
    /// An answer without events; `intact` when the aggregate is as it was (it may stay cached).
    Refused { error: CommandError<A::Error>, intact: bool },
}

/// Checks tenant and expected version, then lets the domain handle the command.
async fn decide<A>(
    loaded: &mut Loaded<A>,
    command: A::Command,
    intent: Intent,
    expected_version: Option<usize>,
    origin: &Origin,
    now: chrono::DateTime<Utc>,
) -> Decision<A>
where
    A: Aggregate<Services = CommandContext> + TenantOwned,
{
    let refused = |error| Decision::Refused { error, intact: true };
    match loaded.aggregate.tenant() {
        None if intent == Intent::Update => return refused(CommandError::NotFound),
        Some(owner) if owner != &origin.tenant && intent == Intent::Update => {
            return refused(CommandError::NotFound)
        }
        _ => {}
    }
    if let Some(expected) = expected_version.filter(|v| *v != loaded.version) {
        return refused(CommandError::VersionMismatch { expected, actual: loaded.version });
    }
    let context = CommandContext::new(now, origin.actor.clone());
    let sink = EventSink::default();
    let handled = loaded.aggregate.handle(command, &context, &sink).await;
    let events = sink.collect().await;
    match handled {
        Err(refusal) => {
            Decision::Refused { error: CommandError::Rejected(refusal), intact: events.is_empty() }
        }
        Ok(()) if events.is_empty() => Decision::Unchanged,
        Ok(()) => Decision::Append(events),
    }
}

fn wrap<A: Aggregate>(
    aggregate_id: &str,
    last_sequence: usize,
    events: Vec<A::Event>,
    origin: &Origin,
    correlation_id: Uuid,
    recorded_at: chrono::DateTime<Utc>,
) -> Vec<EventEnvelope<A>> {
    events
        .into_iter()
        .zip(last_sequence + 1..)
        .map(|(payload, sequence)| {
            let metadata = EventMetadata {
                event_id: Uuid::now_v7(),
                tenant_id: origin.tenant.clone(),
                actor: origin.actor.clone(),
                via_token: origin.via_token.clone(),
                request_id: origin.request_id.clone(),
                correlation_id,
                causation_id: origin.causation_id,
                recorded_at,
            };
            EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                payload,
                metadata: metadata.to_map(),
            }
        })
        .collect()
}

fn serialize<A: Aggregate>(envelopes: &[EventEnvelope<A>]) -> Result<Vec<SerializedEvent>, PersistenceError> {
    envelopes
        .iter()
        .map(|envelope| {
            Ok(SerializedEvent::new(
                envelope.aggregate_id.clone(),
                envelope.sequence,
                A::TYPE.to_owned(),
                envelope.payload.event_type(),
                envelope.payload.event_version(),
                serde_json::to_value(&envelope.payload)?,
                serde_json::to_value(&envelope.metadata)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(aggregates: usize, bytes: usize) -> CacheLimits {
        CacheLimits { aggregates, bytes, snapshot_every: 0 }
    }

    /// An aggregate of `bytes`, built from a tenth as many events.
    fn weight(bytes: usize) -> Weight {
        Weight { events: bytes / 10, bytes }
    }

    fn ids(cache: &Cache<()>) -> Vec<String> {
        let mut ids: Vec<String> = cache.slots.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn evicts_least_recently_used_past_the_byte_budget() {
        let mut cache = Cache::<()>::new(limits(100, 1_000));
        let a = cache.slot("a");
        cache.weigh("a", &a, weight(400));
        let b = cache.slot("b");
        cache.weigh("b", &b, weight(400));
        // "a" was used last, so "b" is the one to go when "c" grows past the budget.
        let again = cache.slot("a");
        assert!(Arc::ptr_eq(&a, &again));
        let c = cache.slot("c");
        cache.weigh("c", &c, weight(300));
        assert_eq!(ids(&cache), ["a", "c"]);
        assert_eq!(cache.bytes, 700);
    }

    #[test]
    fn the_limit_is_on_bytes_and_events_are_only_counted() {
        let mut cache = Cache::<()>::new(limits(100, 1_000));
        let a = cache.slot("a");
        cache.weigh("a", &a, Weight { events: 10_000, bytes: 600 });
        let b = cache.slot("b");
        cache.weigh("b", &b, Weight { events: 10_000, bytes: 300 });
        assert_eq!(ids(&cache), ["a", "b"]);
        assert_eq!((cache.events, cache.bytes), (20_000, 900));
        cache.weigh("b", &b, Weight { events: 10_001, bytes: 500 });
        assert_eq!(ids(&cache), ["b"]);
        assert_eq!((cache.events, cache.bytes), (10_001, 500));
    }

    #[test]
    fn a_growing_aggregate_is_weighed_as_it_is_now() {
        let mut cache = Cache::<()>::new(limits(100, 1_000));
        let a = cache.slot("a");
        cache.weigh("a", &a, weight(10));
        cache.weigh("a", &a, weight(25));
        let b = cache.slot("b");
        cache.weigh("b", &b, weight(5));
        assert_eq!(cache.bytes, 30);
        // Growing past the budget alone evicts the others but keeps the one in use.
        cache.weigh("a", &a, weight(5_000));
        assert_eq!(ids(&cache), ["a"]);
        assert_eq!(cache.bytes, 5_000);
    }

    #[test]
    fn the_count_limit_still_applies() {
        let mut cache = Cache::<()>::new(limits(2, 1_000_000));
        for (id, bytes) in [("a", 3), ("b", 4), ("c", 5)] {
            let slot = cache.slot(id);
            cache.weigh(id, &slot, weight(bytes));
        }
        assert_eq!(ids(&cache), ["b", "c"]);
        assert_eq!(cache.bytes, 9);
    }

    #[test]
    fn an_evicted_slot_stored_back_later_is_not_counted() {
        let mut cache = Cache::<()>::new(limits(1, 1_000));
        let a = cache.slot("a");
        let b = cache.slot("b");
        assert_eq!(ids(&cache), ["b"]);
        // The holder of the evicted slot stores its aggregate back: it counts for nothing.
        cache.weigh("a", &a, weight(50));
        assert_eq!(cache.bytes, 0);
        // Nor does it count under the id of a newer slot.
        let newer = cache.slot("a");
        assert!(!Arc::ptr_eq(&a, &newer));
        cache.weigh("a", &a, weight(70));
        cache.weigh("a", &newer, weight(20));
        assert_eq!(cache.bytes, 20);
        drop(b);
    }

    #[test]
    fn a_slot_left_empty_weighs_nothing_and_is_not_a_use() {
        let mut cache = Cache::<()>::new(limits(10, 1_000));
        let a = cache.slot("a");
        cache.weigh("a", &a, weight(300));
        let b = cache.slot("b");
        cache.weigh("b", &b, weight(200));
        cache.emptied("a", &a);
        assert_eq!(cache.bytes, 200);
        assert_eq!(ids(&cache), ["a", "b"]);
        assert_eq!(cache.slots.peek_lru().map(|(id, _)| id.as_str()), Some("a"), "not promoted");
        // Loaded again, it counts with its new weight.
        cache.weigh("a", &a, weight(310));
        assert_eq!(cache.bytes, 510);
        // A stale slot under the same id changes nothing.
        let stale: Slot<()> = Arc::new(Mutex::new(None));
        cache.emptied("b", &stale);
        assert_eq!(cache.bytes, 510);
    }
}
