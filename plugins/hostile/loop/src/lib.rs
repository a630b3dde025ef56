//! hostile-loop: spins forever in `handle`, never calling the host.
//!
//! Only the per-batch time limit (epoch interruption) can stop it; the daemon must fail the
//! batch and keep every other plugin running.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription};

struct Loop;

impl Plugin for Loop {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-loop", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        let mut spins = 0u64;
        loop {
            // black_box keeps the optimizer from reasoning about (and removing) the loop.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

eventhost_sdk::export_plugin!(Loop);
