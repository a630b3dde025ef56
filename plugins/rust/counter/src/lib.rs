//! counter: counts every event it is given. The smallest plugin, used by the benchmarks.
//!
//! Plugin `counter` 1.0.0 has one subscription, `all`: no filter, batches of 1000, from the
//! beginning. Each batch adds its length to the JSON integer in state key `count` (absent
//! reads as 0): one state read and one state write per batch, whatever its size.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

struct Counter;

impl Plugin for Counter {
    fn describe() -> PluginInfo {
        PluginInfo::new("counter", "1.0.0").subscription(Subscription::new("all").batch_size(1000))
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        let count = state::get::<u64>("count")?.unwrap_or(0);
        state::set("count", &(count + batch.len() as u64))
    }
}

eventhost_sdk::export_plugin!(Counter);
