//! hostile-fail-on-fixed: the fixed release of `hostile-fail-on`, for the replay tests.
//!
//! Same plugin name (`hostile-fail-on`) and subscription (`all`, no filter, batches of 100),
//! so it takes over the durable subscription, its state and its parked events. It never
//! fails: every batch's length, poison events included, is added to the integer in state
//! key `count`. Replaying a parked poison event through it therefore adds exactly one.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

struct FailOnFixed;

impl Plugin for FailOnFixed {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-fail-on", "1.0.1").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        let count = state::get::<u64>("count")?.unwrap_or(0);
        state::set("count", &(count + batch.len() as u64))
    }
}

eventhost_sdk::export_plugin!(FailOnFixed);
