//! hostile-versioned-c: release `c` of plugin `versioned`, whose subscription's filter differs
//! from releases `a` and `b`: for the hot-reload test of a changed filter.
//!
//! Plugin `versioned` 1.0.0-c, subscription `all` (aggregate types `item` and `thing`,
//! batches of 5). Handles a batch as `a` and `b` do, with tag `c`: appends `c` to state key
//! `seen/<event id>` for every event, adds the batch's length to `count`, sets `tag` to `c`.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

const TAG: &str = "c";

struct Versioned;

impl Plugin for Versioned {
    fn describe() -> PluginInfo {
        PluginInfo::new("versioned", "1.0.0-c").subscription(
            Subscription::new("all")
                .aggregate_types(["item", "thing"])
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
