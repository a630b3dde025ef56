//! The Rust guest SDK for eventhost plugins.
//!
//! A plugin implements [`Plugin`] and names its type in [`export_plugin!`]; the SDK makes it a
//! component of the `eventhost:plugin/handler` world, whose bindings are generated here from
//! the repository's `wit/` package (never hand-copied). Everything a plugin may do outside its
//! own memory goes through [`emit`], [`read_stream`], [`read_streams`], [`state`], [`deliver`]
//! and [`log`].
//!
//! ```no_run
//! use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};
//!
//! struct Counter;
//!
//! impl Plugin for Counter {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("counter", "1.0.0").subscription(Subscription::new("all"))
//!     }
//!
//!     fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
//!         let count = state::get::<u64>("count")?.unwrap_or(0);
//!         state::set("count", &(count + batch.len() as u64))
//!     }
//! }
//!
//! eventhost_sdk::export_plugin!(Counter);
//! ```
//!
//! Errors follow one rule: calls that only forward to the host ([`emit`], [`read_stream`],
//! [`read_streams`]) return the host's [`HostError`], so a plugin can match on a conflict;
//! calls that also encode or decode JSON return a [`HandlerError`], ready for `?` in
//! [`Plugin::handle`].
//! `?` also turns a [`HostError`] into a [`HandlerError`] (see [`error`]).

pub mod deliver;
pub mod error;
mod event;
pub mod id;
mod info;
pub mod log;
mod plugin;
pub mod state;

/// The bindings generated from `wit/`; used by [`export_plugin!`], not by plugin authors.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "::eventhost_sdk::bindings",
        additional_derives: [Clone, PartialEq, Eq],
    });
}

pub use bindings::eventhost::plugin::host::{emit, read_stream, read_streams};
pub use bindings::eventhost::plugin::types::{
    Event, ExpectedVersion, HandlerError, HostError, Level, Message, NewEvent, PluginInfo,
    StartFrom, StreamId, StreamPage, StreamRead, Subscription, VersionConflict,
};
pub use plugin::{Plugin, PluginExport};
pub use serde_json;
