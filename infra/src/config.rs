//! `Config`: every setting Colloquy reads, from flags or `COLLOQUY_*` environment variables,
//! read once at start-up. Defaults give the zero-set-up embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::personal::MasterKey;
use crate::repository::CacheLimits;
use crate::store::{Store, StoreLocation};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Colloquy's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory of the embedded SQLite store (used when no database URL is set).
    #[arg(long, env = "COLLOQUY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (postgres://...). When set, events are stored there instead of SQLite.
    #[arg(long, env = "COLLOQUY_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Most PostgreSQL connections in the pool.
    #[arg(long, env = "COLLOQUY_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Address the HTTP API listens on.
    #[arg(long, env = "COLLOQUY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Admin token of the `default` tenant, for scripts and tests. When unset and the tenant has
    /// no token, one is generated on first start and printed once.
    #[arg(long, env = "COLLOQUY_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,

    /// Log format.
    #[arg(long, env = "COLLOQUY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// NATS server URL (nats://...). When set, committed events are relayed to a JetStream
    /// stream and projectors read from it; when unset, an in-process bus does both.
    #[arg(long, env = "COLLOQUY_NATS_URL")]
    pub nats_url: Option<String>,

    /// JetStream stream that receives the events (created if missing).
    #[arg(long, env = "COLLOQUY_NATS_STREAM", default_value = "COLLOQUY_EVENTS")]
    pub nats_stream: String,

    /// Subject prefix: events go to `<prefix>.<tenant>.<aggregate_type>.<aggregate_id>`.
    #[arg(long, env = "COLLOQUY_NATS_SUBJECT_PREFIX", default_value = "colloquy.events")]
    pub nats_subject_prefix: String,

    /// How long a query with `min_position` waits for the read model, in milliseconds, before
    /// answering 503.
    #[arg(long, env = "COLLOQUY_MIN_POSITION_TIMEOUT_MS", default_value_t = 5000)]
    pub min_position_timeout_ms: u64,

    /// How many API requests are handled at once; past it a request is answered 503 with
    /// `Retry-After` at once, so a client that sends faster than the server answers cannot grow
    /// its memory without bound. Health, readiness and metrics are not counted. A quarter of
    /// these places (at least one) may be held by reads waiting for a read model to reach their
    /// `min_position`; a read that would wait past that is answered 503 at once, so a projector
    /// that has fallen behind cannot fill the server with waiting reads and turn commands away.
    #[arg(long, env = "COLLOQUY_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024)]
    pub max_requests_in_flight: usize,

    /// How many HTTP connections are kept open at once. Each holds a task and its buffers even
    /// while idle between keep-alive requests; at the cap the server accepts no more until one
    /// closes, and newer clients wait in the kernel's accept queue.
    #[arg(long, env = "COLLOQUY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// How many loaded aggregates of each type are kept in memory.
    #[arg(long, env = "COLLOQUY_AGGREGATE_CACHE", default_value_t = 10_000)]
    pub aggregate_cache: usize,

    /// How much memory the loaded aggregates of each type may hold, all together, in MiB as
    /// their states estimate it (a cached conversation holds its messages and their texts).
    /// The least recently used are dropped past it and loaded from the store again when next
    /// used; 0 keeps only the one in use.
    #[arg(long, env = "COLLOQUY_AGGREGATE_CACHE_MB", default_value_t = 64)]
    pub aggregate_cache_mb: usize,

    /// Every how many events an aggregate's state is kept as a snapshot: loading an aggregate
    /// that is not cached reads its latest snapshot and the events after it, at most this many,
    /// instead of its whole history. 0 takes none.
    #[arg(long, env = "COLLOQUY_SNAPSHOT_EVERY", default_value_t = 256)]
    pub snapshot_every: usize,

    /// How long, in milliseconds, each projector lets a batch of events from the in-process bus
    /// (fed by this process's relay, or from JetStream) gather before applying it (default 5 on
    /// SQLite, 0 on PostgreSQL). Fewer, larger read-model transactions cost less per event (on
    /// SQLite fewer pages written, on PostgreSQL fewer statements), so a longer wait means more
    /// commands per second and read models that many milliseconds further behind.
    #[arg(long, env = "COLLOQUY_PROJECTION_LINGER_MS")]
    pub projection_linger_ms: Option<u64>,

    /// How long, in seconds, a read model may trail the log without moving before `/readyz`
    /// reports it `stuck` (not ready), whatever its lag: a projector that waits for events that
    /// never come, or on a lock, fails no check of its own.
    #[arg(long, env = "COLLOQUY_READY_STUCK_AFTER_SECS", default_value_t = 60)]
    pub ready_stuck_after_secs: u64,

    /// Projections this process does not run (comma-separated names, as `projections status`
    /// lists them): another process (`colloquy project`) may run them, and reads here still
    /// wait for them through their stored checkpoints. Also how a benchmark measures what one
    /// costs.
    #[arg(long = "skip-projection", env = "COLLOQUY_SKIP_PROJECTIONS", value_delimiter = ',')]
    pub skip_projections: Vec<String>,

    /// The master key (32 bytes in base64, such as `openssl rand -base64 32` prints) that wraps each
    /// contact's data key (docs/adr/0011). Without it the store keeps one of its own, so a copy
    /// of the database alone reads the personal data in it; erasure works either way.
    #[arg(long, env = "COLLOQUY_MASTER_KEY", value_parser = MasterKey::from_base64, hide_env_values = true)]
    pub master_key: Option<MasterKey>,

    /// Lets webhooks reach URLs whose host is, or resolves to, a loopback, private, link-local or
    /// otherwise internal address. Off by default, so that a subscription cannot make the server
    /// call into the network it runs in; for receivers on the same host or network (tests).
    #[arg(long, env = "COLLOQUY_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,

    /// How long, in seconds, a webhook's failing delivery is retried (with exponential backoff
    /// and jitter) before the subscription is paused with the reason.
    #[arg(long, env = "COLLOQUY_WEBHOOK_RETRY_FOR_SECS", default_value_t = 86_400)]
    pub webhook_retry_for_secs: u64,

    /// The first retry's pause in milliseconds; each next one doubles, up to an hour.
    #[arg(long, env = "COLLOQUY_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000)]
    pub webhook_retry_base_ms: u64,

    /// How long, in milliseconds, one webhook request may take, connecting included.
    #[arg(long, env = "COLLOQUY_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// How long, in milliseconds, a process holds a webhook subscription without renewing it
    /// (it renews at a third of that): how soon another process takes over from one that died.
    #[arg(long, env = "COLLOQUY_WEBHOOK_LEASE_MS", default_value_t = 30_000)]
    pub webhook_lease_ms: u64,
}

impl Config {
    /// Opens the store (with the read models' `tables`, see [`Store::open_with_read_models`])
    /// and gives it the configured master key.
    pub async fn open_store(&self, tables: &[&str]) -> Result<Store, crate::StoreError> {
        let store = Store::open_with_read_models(&self.store_location(), tables).await?;
        if let Some(key) = &self.master_key {
            store.keys().configure(key.clone());
        }
        store.keys().prepare().await?;
        Ok(store)
    }

    /// The limits of each aggregate type's cache.
    pub fn cache_limits(&self) -> CacheLimits {
        CacheLimits {
            aggregates: self.aggregate_cache,
            bytes: self.aggregate_cache_mb.saturating_mul(1 << 20),
            snapshot_every: self.snapshot_every,
        }
    }

    /// How long projectors fed by the in-process bus let a batch gather; `None`: their default.
    pub fn projection_linger(&self) -> Option<Duration> {
        self.projection_linger_ms.map(Duration::from_millis)
    }

    /// Where the events are kept, as configured.
    pub fn store_location(&self) -> StoreLocation {
        match &self.database_url {
            Some(url) => {
                StoreLocation::Postgres { url: url.clone(), max_connections: self.db_max_connections }
            }
            None => StoreLocation::Sqlite { path: self.data_dir.join("colloquy.db") },
        }
    }
}
