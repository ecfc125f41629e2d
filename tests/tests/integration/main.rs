//! The integration tests, as one test binary: the real `colloquy` server over HTTP, on the
//! embedded store and on PostgreSQL (and NATS where a test says so). One binary links the server
//! once; each module is one area. (`logging.rs` is a binary of its own: it installs the process's
//! one tracing subscriber.)

#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod audit;
mod bad_input;
mod conversations;
mod erasure;
mod fanout;
mod fuzz;
mod global_log;
mod groups;
mod idempotency;
mod inbox;
mod migrations;
mod openapi;
mod reports;
mod revert;
mod shutdown;
mod sla;
mod sqlite_files;
mod stream;
mod tenancy;
mod timers;
mod upcasting;
mod webhooks;
