//! eventhost: a PostgreSQL (or embedded SQLite) event store whose durable subscriptions feed
//! batches of events to sandboxed WebAssembly plugins.
//!
//! The path of an event: [`store`] (append, ordered gap-free reads) -> [`dispatch`]
//! (subscriptions, checkpoints, effects) -> [`runtime`] (wasmtime, the plugin contract in
//! `wit/`) -> the plugin. [`cli`] is a thin layer on top that parses, calls, and prints.

pub mod cli;
pub mod dispatch;
pub mod event;
pub mod harness;
pub mod input;
pub mod plugins;
pub mod runtime;
pub mod shutdown;
pub mod store;

pub use event::{Event, ExpectedVersion, Metadata, NewEvent, Payload, Position, StreamId, Version};
