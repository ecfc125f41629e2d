//! Runs commands against aggregates: load (from a cache checked against the store), check tenant
//! and expected version, handle, append, retry on a conflict. Also serves reads of an
//! aggregate's current state.
//!
//! cqrs-es's `CqrsFramework` returns nothing from `execute` (no version, no events), cannot
//! check an expected version and does not retry; its snapshot and aggregate-store modes apply
//! events twice. So commands run here, on cqrs-es's `Aggregate` trait and the store crates'
//! repositories, and the speed on long streams comes from a cache of loaded aggregates that is
//! brought up to date with the events after its version before every use.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex as SyncMutex};

use chrono::{SubsecRound, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use lru::LruCache;
use tokio::sync::Mutex;
use uuid::Uuid;

use colloquy_domain::{Actor, CommandContext, EventMetadata, TenantId, TenantOwned};

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
}

type Slot<A> = Arc<Mutex<Option<Loaded<A>>>>;

/// Commands and reads for one aggregate type.
pub struct Repository<A: Aggregate> {
    store: Store,
    cache: SyncMutex<LruCache<String, Slot<A>>>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository").field("aggregate", &A::TYPE).field("store", &self.store.kind()).finish()
    }
}

impl<A> Repository<A>
where
    A: Aggregate<Services = CommandContext> + TenantOwned,
    A::Command: Clone,
{
    /// A repository over `store` that keeps up to `cache_capacity` loaded aggregates.
    pub fn new(store: Store, cache_capacity: usize, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        let capacity = NonZeroUsize::new(cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self { store, cache: SyncMutex::new(LruCache::new(capacity)), upcasters }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The slot for one aggregate. Commands and reads of one aggregate in this process queue on
    /// its slot, so they never conflict with each other; other processes are caught by the
    /// store's optimistic lock.
    fn slot(&self, aggregate_id: &str) -> Slot<A> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = cache.get(aggregate_id) {
            return slot.clone();
        }
        let slot: Slot<A> = Arc::new(Mutex::new(None));
        cache.put(aggregate_id.to_owned(), slot.clone());
        slot
    }

    fn deserialize(&self, events: Vec<SerializedEvent>) -> Result<Vec<EventEnvelope<A>>, PersistenceError> {
        events
            .into_iter()
            .map(|event| {
                let event = self.upcasters.iter().fold(event, |event, upcaster| {
                    if upcaster.can_upcast(&event.event_type, &event.event_version) {
                        upcaster.upcast(event)
                    } else {
                        event
                    }
                });
                EventEnvelope::<A>::try_from(event)
            })
            .collect()
    }

    /// Brings a cached aggregate (or a new one) up to the store's latest version.
    async fn refresh(
        &self,
        aggregate_id: &str,
        cached: Option<Loaded<A>>,
    ) -> Result<Loaded<A>, PersistenceError> {
        let mut loaded = cached.unwrap_or_else(|| Loaded { aggregate: A::default(), version: 0 });
        let newer = if loaded.version == 0 {
            self.store.load::<A>(aggregate_id).await?
        } else {
            self.store.load_after::<A>(aggregate_id, loaded.version).await?
        };
        for envelope in self.deserialize(newer)? {
            loaded.version = envelope.sequence;
            loaded.aggregate.apply(envelope.payload);
        }
        Ok(loaded)
    }

    /// Reads the current state of an aggregate of `tenant`. `None` when it does not exist there.
    pub async fn read<R>(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        read: impl FnOnce(&A, usize) -> R,
    ) -> Result<Option<R>, PersistenceError> {
        let slot = self.slot(aggregate_id);
        let mut guard = slot.lock().await;
        let loaded = self.refresh(aggregate_id, guard.take()).await?;
        let result =
            (loaded.aggregate.tenant() == Some(tenant)).then(|| read(&loaded.aggregate, loaded.version));
        *guard = Some(loaded);
        Ok(result)
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
        let slot = self.slot(aggregate_id);
        let mut guard = slot.lock().await;
        let correlation_id = origin.correlation_id.unwrap_or_else(Uuid::now_v7);
        let mut trust_cache = true;
        let mut conflicts = 0;
        loop {
            // `checked`: the aggregate in hand was brought up to date with the store just now.
            let (mut loaded, checked) = match guard.take() {
                Some(cached) if trust_cache => (cached, false),
                cached => (self.refresh(aggregate_id, cached).await.map_err(CommandError::Store)?, true),
            };
            trust_cache = false;
            // Microseconds, as PostgreSQL's timestamptz keeps them, so the aggregate and the read
            // models built from its events show the same times.
            let now = Utc::now().trunc_subsecs(6);
            let events =
                match decide(&mut loaded, command.clone(), intent, expected_version, origin, now).await {
                    Decision::Append(events) => events,
                    Decision::Unchanged if !checked => {
                        *guard = Some(loaded);
                        continue;
                    }
                    Decision::Unchanged => {
                        let version = loaded.version;
                        let view = view(&loaded.aggregate, version);
                        *guard = Some(loaded);
                        return Ok(Committed { events: Vec::new(), version, view, position: None });
                    }
                    Decision::Refused { error, intact } => {
                        // The domain decides before it writes, so a refusal with no events leaves the
                        // aggregate as it was and it can stay cached.
                        if intact {
                            *guard = Some(loaded);
                        }
                        if checked {
                            return Err(error);
                        }
                        continue;
                    }
                };
            let envelopes = wrap(aggregate_id, loaded.version, events, origin, correlation_id, now);
            let serialized = serialize(&envelopes).map_err(CommandError::Store)?;
            match self.store.append(serialized).await {
                Ok(position) => {
                    loaded.version += envelopes.len();
                    let version = loaded.version;
                    let view = view(&loaded.aggregate, version);
                    *guard = Some(loaded);
                    return Ok(Committed { events: envelopes, version, view, position: Some(position) });
                }
                // Another process appended first. The handled aggregate is discarded (the slot
                // stays empty) and the next attempt reloads and decides again.
                Err(PersistenceError::OptimisticLockError) => {
                    if let Some(expected) = expected_version {
                        let actual = self.refresh(aggregate_id, None).await.map_err(CommandError::Store)?;
                        let version = actual.version;
                        *guard = Some(actual);
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
