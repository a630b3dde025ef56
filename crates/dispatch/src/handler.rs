//! What the dispatcher runs a batch through: a [`Handler`]. A WebAssembly [`Plugin`] is the
//! one the daemon uses; the benchmarks put a native Rust handler through the same pipeline to
//! measure what the sandbox costs.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::Event;
use eventhost_runtime::{Effects, HandleError, Plugin, PluginInfo, Reads};

/// Handles batches of the subscriptions it describes.
pub trait Handler: Send + Sync {
    fn info(&self) -> &PluginInfo;

    /// The sinks the handler may deliver messages to, in name order.
    fn sinks(&self) -> Vec<&str> {
        Vec::new()
    }

    /// Handles one batch of `subscription` (the handler's own name for it) and returns its
    /// effects, to be committed together with the new checkpoint.
    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>>;
}

impl Handler for Plugin {
    fn info(&self) -> &PluginInfo {
        Plugin::info(self)
    }

    fn sinks(&self) -> Vec<&str> {
        Plugin::sinks(self).collect()
    }

    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        Plugin::handle(self, subscription, batch, reads).boxed()
    }
}
