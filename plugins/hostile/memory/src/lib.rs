//! hostile-memory: allocates and fills 1 MiB blocks in `handle` until memory runs out.
//!
//! Growing linear memory past the plugin's cap fails, the allocator aborts and the instance
//! traps; the daemon must fail the batch and stay within its own memory.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription};

/// Each block is written in full, so every page is really touched.
const BLOCK: usize = 1 << 20;

struct Memory;

impl Plugin for Memory {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-memory", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; BLOCK]);
            std::hint::black_box(&hoard);
        }
    }
}

eventhost_sdk::export_plugin!(Memory);
