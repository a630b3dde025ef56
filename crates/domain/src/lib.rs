//! eventhost's domain: the words every other crate speaks, and the rules of an append.
//!
//! Owns the data types ([`Event`], [`NewEvent`], [`StreamId`], [`Checkpoint`], [`Filter`],
//! [`Message`]),
//! the input limits ([`StoreLimits`]) and the rules every store applies to an append
//! ([`append`]): what input is valid, when an append is a harmless duplicate, and when its
//! expected version conflicts. It does no I/O; the store, the runtime, the dispatcher and the
//! plugin test harness all depend on it and on nothing of each other's through it.

pub mod append;
mod checkpoint;
mod event;
mod filter;
pub mod input;
pub mod message;
pub mod name;
pub mod retry;

pub use append::{AppendError, Appended, AppendedEvent, PreparedEvent, StoreLimits};
pub use checkpoint::{Checkpoint, InvalidCheckpoint};
pub use event::{
    Event, ExpectedVersion, Metadata, NewEvent, Payload, Position, StreamId, StreamPage,
    StreamRead, Version,
};
pub use filter::Filter;
pub use message::{Message, MessageError};
