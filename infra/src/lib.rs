//! Colloquy's infrastructure: the event stores (PostgreSQL and embedded SQLite) with their
//! migrations, the command runner with its aggregate cache, tenants and API tokens, and
//! `Config`. The only crate that knows SQL.

pub mod config;
pub mod idempotency;
pub mod json;
pub mod log;
pub mod relay;
pub mod repository;
mod snapshots;
pub mod store;
pub mod tokens;
pub mod tx;
mod writer;

pub use config::{Config, LogFormat};
pub use json::RawJson;
pub use log::GlobalLog;
pub use repository::{
    CacheLimits, CacheReads, CacheSize, CommandError, Committed, Intent, Origin, Repository,
};
pub use store::{Durability, File, Store, StoreError, StoreLocation, StoredEvent};
pub use tx::{Tx, WriteTx};
