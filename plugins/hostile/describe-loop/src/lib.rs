//! hostile-describe-loop: spins forever in `describe`, so it never says what it is.
//!
//! Loading it must cost no more than its time limit (then the file is rejected as timed
//! out), and a daemon loading it must still stop at once when asked.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo};

struct DescribeLoop;

impl Plugin for DescribeLoop {
    fn describe() -> PluginInfo {
        let mut spins = 0u64;
        loop {
            // black_box keeps the optimizer from reasoning about (and removing) the loop.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        Ok(())
    }
}

eventhost_sdk::export_plugin!(DescribeLoop);
