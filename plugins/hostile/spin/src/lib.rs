//! hostile-spin: sixty subscriptions to every event, each spinning in `handle` until its
//! time limit stops it, never calling the host.
//!
//! The neighbour from hell: its batches keep the guest threads busy for as long as they are
//! allowed. A healthy plugin beside it must still get its turn at once, never be parked, and
//! the daemon must still stop promptly.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription};

/// How many subscriptions it asks for.
const SUBSCRIPTIONS: usize = 60;

struct Spin;

impl Plugin for Spin {
    fn describe() -> PluginInfo {
        (0..SUBSCRIPTIONS).fold(PluginInfo::new("hostile-spin", "1.0.0"), |info, index| {
            info.subscription(Subscription::new(format!("s{index:02}")))
        })
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        let mut spins = 0u64;
        loop {
            // black_box keeps the optimizer from reasoning about (and removing) the loop.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

eventhost_sdk::export_plugin!(Spin);
