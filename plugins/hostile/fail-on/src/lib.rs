//! hostile-fail-on: fails non-retryably on a poison event, counts every other event.
//!
//! Plugin `hostile-fail-on`, subscription `all` (no filter, batches of 100). If any event of
//! the batch has a JSON object payload with `"poison": true`, the batch fails with the
//! non-retryable error `poison event <id>` (the first such event); otherwise the batch's
//! length is added to the integer in state key `count`. Used by the poison-parking tests.

use eventhost_sdk::serde_json::Value;
use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

struct FailOn;

impl Plugin for FailOn {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-fail-on", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        for event in &batch {
            if event.payload::<Value>()?.get("poison") == Some(&Value::Bool(true)) {
                return Err(HandlerError::permanent(format!(
                    "poison event {}",
                    event.id
                )));
            }
        }
        let count = state::get::<u64>("count")?.unwrap_or(0);
        state::set("count", &(count + batch.len() as u64))
    }
}

eventhost_sdk::export_plugin!(FailOn);
