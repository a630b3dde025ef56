//! hostile-fs: tries to read `/etc/passwd` through `std::fs` in `handle`.
//!
//! The host grants no filesystem, so the read must fail (or the component must fail to
//! load, if the host links no `wasi:filesystem` at all). A failed read is logged and the
//! batch succeeds; a successful read fails the batch with a "sandbox breach" error.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, log};

const PATH: &str = "/etc/passwd";

struct Fs;

impl Plugin for Fs {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-fs", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        match std::fs::read_to_string(PATH) {
            Ok(text) => Err(HandlerError::permanent(format!(
                "sandbox breach: read {} bytes of {PATH}",
                text.len()
            ))),
            Err(e) => {
                log::info(format_args!("reading {PATH} failed: {e}"));
                Ok(())
            }
        }
    }
}

eventhost_sdk::export_plugin!(Fs);
