//! Colloquy's infrastructure: the event stores (PostgreSQL and embedded SQLite) with their
//! migrations, the global log, the relay to NATS JetStream, the command runner with its
//! aggregate cache, tenants and API tokens, and `Config`. The only crate that knows SQL or NATS.
//!
//! Its modules depend only downwards, in this order (a test checks that none imports one above
//! it): `json`, `chain`, `error`, `upcast`, `event`, `bus`, `tx`, `personal`, `writer`, `store`,
//! `checkpoints`, `snapshots`, `log`, `audit`, `envelope`, `relay`, `feed`, `repository`,
//! `idempotency`, `erasure`, `secrets`, `tokens`, `config`.

pub mod audit;
pub mod bus;
pub mod chain;
pub mod checkpoints;
pub mod config;
pub mod envelope;
pub mod erasure;
mod error;
pub mod event;
pub mod feed;
pub mod idempotency;
pub mod json;
pub mod log;
pub mod personal;
pub mod relay;
pub mod repository;
pub mod secrets;
mod snapshots;
pub mod store;
pub mod tokens;
pub mod tx;
pub mod upcast;
mod writer;

pub use bus::EventBus;
pub use config::{Config, LogFormat};
pub use event::{DecodeError, StoredEvent};
pub use json::RawJson;
pub use log::GlobalLog;
pub use repository::{
    CacheLimits, CacheReads, CacheSize, CommandError, Committed, Intent, Origin, Repository, Until,
};
pub use store::{Durability, File, Store, StoreError, StoreLocation};
pub use tx::{Tx, WriteTx};

#[cfg(test)]
mod layering;
