//! eventhost: a PostgreSQL (or embedded SQLite) event store whose durable subscriptions feed
//! batches of events to sandboxed WebAssembly plugins.
//!
//! This crate is the `eventhost` binary's: the command line ([`cli`]), the HTTP API
//! ([`http`]), what both of them do ([`operate`]), the configuration file ([`config`]) and
//! the daemon's wiring ([`daemon`]). The work happens in the crates
//! along an event's path: `eventhost-domain` (the words and the rules of an append),
//! `eventhost-store` (append, ordered gap-free reads, subscriptions, the outbox),
//! `eventhost-dispatch` (workers, wake-ups, the plugins folder), `eventhost-runtime`
//! (wasmtime and the plugin contract in `wit/`), `eventhost-deliveries` (sinks and the
//! workers that send the outbox's messages), and `eventhost-harness` (plugin tests with no
//! database). See `docs/architecture.md`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod http;
pub mod operate;
