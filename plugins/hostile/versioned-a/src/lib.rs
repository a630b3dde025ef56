//! hostile-versioned-a: release `a` of plugin `versioned`, for the hot-reload tests.
//!
//! Plugin `versioned` 1.0.0-a, subscription `all` (aggregate type `item`, batches of 5). For
//! every event it appends its tag `a` to state key `seen/<event id>` and adds one to `count`;
//! so a key holding two tags is an event handled twice, a missing key an event lost. Each
//! batch also sets `tag` to `a`, so a test can see which release committed last.
//! hostile-versioned-b is the same plugin tagged `b`; hostile-versioned-c, tagged `c`, also
//! subscribes to `thing` events.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

const TAG: &str = "a";

struct Versioned;

impl Plugin for Versioned {
    fn describe() -> PluginInfo {
        PluginInfo::new("versioned", "1.0.0-a").subscription(
            Subscription::new("all")
                .aggregate_types(["item"])
                .batch_size(5),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        for event in &batch {
            let key = format!("seen/{}", event.id);
            let seen = state::get::<String>(&key)?.unwrap_or_default();
            state::set(&key, &(seen + TAG))?;
        }
        let count = state::get::<u64>("count")?.unwrap_or(0);
        state::set("count", &(count + batch.len() as u64))?;
        state::set("tag", TAG)
    }
}

eventhost_sdk::export_plugin!(Versioned);
