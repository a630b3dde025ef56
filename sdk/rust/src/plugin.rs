//! The [`Plugin`] trait a plugin author implements, and [`export_plugin!`], which exports it.
//!
//! The generated bindings want an implementation of their `Guest` trait named by a plain
//! identifier; [`PluginExport`] is that implementation for any [`Plugin`], so the macro only
//! has to name it. A plugin crate needs no direct dependency on `wit-bindgen`.

use std::marker::PhantomData;

use crate::bindings::Guest;
use crate::{Event, HandlerError, PluginInfo};

/// An eventhost plugin: what it subscribes to, and how it handles a batch.
///
/// The host creates a fresh instance for every batch, so a plugin keeps nothing in memory
/// between calls: durable data goes through [`crate::state`].
pub trait Plugin {
    /// Says who the plugin is and what it subscribes to. Called once per load, outside any
    /// batch: [`crate::log`] works, every other host call fails with `unavailable`.
    fn describe() -> PluginInfo;

    /// Handles one batch of the subscription named `subscription` (its name as given in
    /// [`Plugin::describe`]), events in order. `Ok` commits every effect of the batch with
    /// the new checkpoint; `Err` (or a panic) discards them all.
    fn handle(subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError>;
}

/// Adapts a [`Plugin`] to the generated bindings. Named by [`export_plugin!`]; not for
/// direct use.
#[doc(hidden)]
pub struct PluginExport<P>(PhantomData<P>);

impl<P: Plugin> Guest for PluginExport<P> {
    fn describe() -> PluginInfo {
        P::describe()
    }

    fn handle(subscription: String, batch: Vec<Event>) -> Result<(), HandlerError> {
        P::handle(&subscription, batch)
    }
}

/// Exports a type implementing [`Plugin`] as the component's `describe` and `handle`.
///
/// Use it once, at the top level of the plugin crate: `eventhost_sdk::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            type EventhostPluginExport = $crate::PluginExport<$plugin>;
            $crate::bindings::export_handler!(
                EventhostPluginExport with_types_in $crate::bindings
            );
        };
    };
}
