//! `AppState`: what every handler shares: the store, one repository per aggregate type, and a
//! short-lived cache of verified tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;

use colloquy_domain::calendar::CalendarAggregate;
use colloquy_domain::report::ReportSettingsAggregate;
use colloquy_domain::sla::{ConversationSla, SlaPolicyAggregate};
use colloquy_domain::webhook::WebhookAggregate;
use colloquy_domain::{Contact, Conversation, Group};
use colloquy_infra::relay::JetStreamTransport;
use colloquy_infra::tokens::{self, Principal};
use colloquy_infra::{CacheLimits, GlobalLog, Repository, Store, StoreError};
use colloquy_projections::Projector;

/// How long a verified token is trusted without asking the store again. Revocation takes effect
/// within this time.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// Shared state of the HTTP API.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    log: GlobalLog,
    contacts: Repository<Contact>,
    conversations: Arc<Repository<Conversation>>,
    groups: Repository<Group>,
    calendars: Repository<CalendarAggregate>,
    policies: Repository<SlaPolicyAggregate>,
    report_settings: Repository<ReportSettingsAggregate>,
    clocks: Repository<ConversationSla>,
    webhooks: Repository<WebhookAggregate>,
    /// How webhooks are delivered (a ping is sent from here).
    webhook_settings: crate::webhook_delivery::Settings,
    verified_tokens: Mutex<HashMap<String, (Principal, Instant)>>,
    projectors: Arc<Vec<Projector>>,
    min_position_timeout: Duration,
    /// Turns true when the server shuts down, so long-lived responses (event streams) end and
    /// graceful shutdown can finish.
    closing: tokio::sync::watch::Sender<bool>,
    metrics: crate::metrics::Metrics,
    /// The JetStream connection of this process's relay and projectors, for `/readyz`.
    jetstream: Option<JetStreamTransport>,
    /// Permits for API requests in flight, and how many there are in all.
    admission: (Arc<Semaphore>, usize),
    /// Permits for requests waiting for a read model to reach their `min_position`, and how many
    /// there are in all: a quarter of `admission`'s, so that reads waiting on a projector that has
    /// fallen behind (or stalled) never hold more than a quarter of the places, and commands keep
    /// the rest.
    waiting: (Arc<Semaphore>, usize),
    /// Event streams open per token.
    streams: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
    /// What `/readyz` has seen of the read models' progress.
    progress: crate::routes::health::Progress,
    /// The one reader of the log that event streams follow.
    log_feed: crate::log_feed::LogFeed,
    /// How long a trailing read model may stay still before `/readyz` reports it stuck.
    stuck_after: Duration,
}

/// The most event streams one token may have open at once in one process: each holds a
/// connection and reads of the log, and a client that leaks them must not take the server's.
pub const MAX_STREAMS_PER_TOKEN: usize = 8;

/// A token's place among its open event streams, given back when the stream ends.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
    token_id: uuid::Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = streams.get_mut(&self.token_id) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.token_id);
            }
        }
    }
}

impl AppState {
    /// State over `store` and its global log, caching aggregates of each type within `cache`,
    /// serving the read models of `projectors` (a query with `min_position` waits up to
    /// `min_position_timeout` for them). `jetstream` is the NATS connection the process's
    /// relay and projectors use, if any; readiness checks it. At most `max_in_flight` API requests
    /// are handled at once (at least one), and at most a quarter of them (at least one) wait for a
    /// read model.
    pub fn new(
        store: Store,
        log: GlobalLog,
        cache: CacheLimits,
        projectors: Arc<Vec<Projector>>,
        min_position_timeout: Duration,
        jetstream: Option<JetStreamTransport>,
        max_in_flight: usize,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let max_waiting = (max_in_flight / 4).max(1);
        Self {
            inner: Arc::new(Inner {
                log_feed: crate::log_feed::LogFeed::new(log.clone()),
                log,
                contacts: Repository::new(store.clone(), cache),
                conversations: Arc::new(Repository::new(store.clone(), cache)),
                groups: Repository::new(store.clone(), cache),
                calendars: Repository::new(store.clone(), cache),
                policies: Repository::new(store.clone(), cache),
                report_settings: Repository::new(store.clone(), cache),
                clocks: Repository::new(store.clone(), cache),
                webhooks: Repository::new(store.clone(), cache),
                webhook_settings: crate::webhook_delivery::Settings {
                    allow_private: false,
                    retry_for: Duration::from_secs(86_400),
                    retry_base: Duration::from_secs(5),
                    timeout: Duration::from_secs(10),
                    lease: Duration::from_secs(30),
                },
                store,
                verified_tokens: Mutex::new(HashMap::new()),
                closing: tokio::sync::watch::channel(false).0,
                metrics: crate::metrics::Metrics::default(),
                projectors,
                min_position_timeout,
                jetstream,
                admission: (Arc::new(Semaphore::new(max_in_flight)), max_in_flight),
                waiting: (Arc::new(Semaphore::new(max_waiting)), max_waiting),
                streams: Arc::new(Mutex::new(HashMap::new())),
                progress: crate::routes::health::Progress::default(),
                stuck_after: Duration::from_secs(60),
            }),
        }
    }

    /// This state, with `/readyz` reporting a read model that trails the log without moving
    /// for `after` as stuck (60 s unless set). Only while the state is not shared yet.
    #[must_use]
    pub fn with_stuck_after(mut self, after: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.stuck_after = after;
        }
        self
    }

    /// This state, its conversations commanded and read through `repository`, which a process
    /// shares with the process managers that command conversations (one cache, and their
    /// commands queue with the API's on an aggregate's slot instead of conflicting with them in
    /// the store). Only while the state is not shared yet.
    #[must_use]
    pub fn with_conversations(mut self, repository: Arc<Repository<Conversation>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.conversations = repository;
        }
        self
    }

    /// This state, with webhooks checked and pinged by `settings`. Only while the state is not
    /// shared yet.
    #[must_use]
    pub fn with_webhook_settings(mut self, settings: crate::webhook_delivery::Settings) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.webhook_settings = settings;
        }
        self
    }

    /// How webhooks are delivered.
    pub fn webhook_settings(&self) -> &crate::webhook_delivery::Settings {
        &self.inner.webhook_settings
    }

    /// The webhook subscriptions' repository.
    pub fn webhooks(&self) -> &Repository<WebhookAggregate> {
        &self.inner.webhooks
    }

    /// The one reader of the log that event streams follow.
    pub fn log_feed(&self) -> &crate::log_feed::LogFeed {
        &self.inner.log_feed
    }

    /// What `/readyz` has seen of the read models' progress.
    pub fn progress(&self) -> &crate::routes::health::Progress {
        &self.inner.progress
    }

    /// How long a trailing read model may stay still before it counts as stuck.
    pub fn stuck_after(&self) -> Duration {
        self.inner.stuck_after
    }

    /// The permits for API requests in flight, and their number.
    pub fn admission(&self) -> (&Arc<Semaphore>, usize) {
        (&self.inner.admission.0, self.inner.admission.1)
    }

    /// Read-your-writes: waits until projection `name` has applied global position
    /// `min_position` (when given), up to the configured timeout; 503 with Retry-After after it,
    /// and at once when as many requests as may wait already do.
    pub async fn await_projection(
        &self,
        name: &str,
        min_position: Option<i64>,
    ) -> Result<(), crate::problem::ApiError> {
        let Some(position) = min_position else { return Ok(()) };
        let projector = self
            .inner
            .projectors
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| crate::problem::ApiError::internal(&format!("no projector {name}")))?;
        if projector.applied() >= position {
            return Ok(());
        }
        // A position past the log's head is no write of anyone's: waiting for it would only hold
        // a place. This process's head trails other processes' commits by a poll, so the store
        // has the last word.
        if position > self.inner.log.head() {
            let head = colloquy_infra::log::read_head(&self.inner.store)
                .await
                .map_err(crate::problem::ApiError::from)?;
            if position > head {
                return Err(crate::problem::ApiError::invalid_field(
                    "min_position",
                    format!(
                        "{position} is past the log's head ({head}): pass the Colloquy-Position of a write"
                    ),
                ));
            }
        }
        let (waiting, limit) = &self.inner.waiting;
        let Ok(_waiting) = waiting.clone().try_acquire_owned() else {
            self.metrics().count_overloaded();
            return Err(crate::problem::ApiError::unavailable(format!(
                "{limit} requests are already waiting for the read models to catch up; retry shortly"
            )));
        };
        match projector.wait_for(position, self.inner.min_position_timeout).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::problem::ApiError::unavailable(format!(
                "the {name} read model has not reached position {position} yet; retry shortly"
            ))),
            Err(error) => Err(crate::problem::ApiError::internal(&error)),
        }
    }

    /// The request and command counters behind `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// The projectors whose read models this server serves.
    pub fn projectors(&self) -> &[Projector] {
        &self.inner.projectors
    }

    /// The JetStream connection, when this process relays or projects through NATS.
    pub fn jetstream(&self) -> Option<&JetStreamTransport> {
        self.inner.jetstream.as_ref()
    }

    /// The event store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The global log.
    pub fn log(&self) -> &GlobalLog {
        &self.inner.log
    }

    /// Contact commands and reads.
    pub fn contacts(&self) -> &Repository<Contact> {
        &self.inner.contacts
    }

    /// Conversation commands and reads.
    pub fn conversations(&self) -> &Repository<Conversation> {
        &self.inner.conversations
    }

    /// Group commands and reads.
    pub fn groups(&self) -> &Repository<Group> {
        &self.inner.groups
    }

    /// Business calendar commands and reads.
    pub fn calendars(&self) -> &Repository<CalendarAggregate> {
        &self.inner.calendars
    }

    /// SLA policy commands and reads.
    pub fn policies(&self) -> &Repository<SlaPolicyAggregate> {
        &self.inner.policies
    }

    /// How long a read waits for a read model to reach its `min_position`.
    pub fn min_position_timeout(&self) -> Duration {
        self.inner.min_position_timeout
    }

    /// Each tenant's report settings: which definition version its reports read.
    pub fn report_settings(&self) -> &Repository<ReportSettingsAggregate> {
        &self.inner.report_settings
    }

    /// Conversations' SLA clocks: reads, and policies applied by command.
    pub fn clocks(&self) -> &Repository<ConversationSla> {
        &self.inner.clocks
    }

    /// Watches for shutdown (see [`AppState::close_streams`]).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Ends every open event stream: called when graceful shutdown begins.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// A place for one more event stream of `token_id`, or `None` when it has
    /// [`MAX_STREAMS_PER_TOKEN`] open.
    pub fn open_stream(&self, token_id: uuid::Uuid) -> Option<StreamSlot> {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(token_id).or_insert(0);
        if *open >= MAX_STREAMS_PER_TOKEN {
            return None;
        }
        *open += 1;
        Some(StreamSlot { streams: self.inner.streams.clone(), token_id })
    }

    /// Drops every verified token from the cache, so a revocation takes effect at once here.
    pub fn forget_verified_tokens(&self) {
        self.inner.verified_tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Verifies a bearer secret, from the cache when it was verified moments ago.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        {
            let cache = self.inner.verified_tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((principal, at)) = cache.get(secret) {
                // A token that expires within the cache's life is not accepted past its expiry.
                let unexpired = principal.expires_at.is_none_or(|expiry| expiry > Utc::now());
                if at.elapsed() < TOKEN_CACHE_TTL && unexpired {
                    return Ok(Some(principal.clone()));
                }
            }
        }
        let principal = tokens::authenticate(&self.inner.store, secret, Utc::now()).await?;
        let mut cache = self.inner.verified_tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a flood of distinct bad secrets is never cached, and good ones are few.
        if cache.len() > 10_000 {
            cache.clear();
        }
        match &principal {
            Some(principal) => {
                cache.insert(secret.to_owned(), (principal.clone(), Instant::now()));
            }
            None => {
                cache.remove(secret);
            }
        }
        Ok(principal)
    }
}
