//! hostile-panic: panics in `handle`.
//!
//! A Rust panic in a component prints its message to stderr and traps; the daemon must
//! fail the batch (discarding its effects) and keep running.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, state};

struct Panic;

impl Plugin for Panic {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-panic", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        // An effect written before the panic, which the host must discard.
        state::set("before-panic", &batch.len())?;
        panic!("hostile-panic: panicking in handle on purpose");
    }
}

eventhost_sdk::export_plugin!(Panic);
