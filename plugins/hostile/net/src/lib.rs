//! hostile-net: tries to open a TCP connection to `127.0.0.1:5432` (Postgres) in `handle`.
//!
//! The host grants no network, so the connection must fail (or the component must fail to
//! load, if it imports sockets the host does not link). A failure is logged and the batch
//! succeeds; a successful connection fails the batch with a "sandbox breach" error.

use std::net::TcpStream;

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, log};

const ADDRESS: &str = "127.0.0.1:5432";

struct Net;

impl Plugin for Net {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-net", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        match TcpStream::connect(ADDRESS) {
            Ok(_) => Err(HandlerError::permanent(format!(
                "sandbox breach: connected to {ADDRESS}"
            ))),
            Err(e) => {
                log::info(format_args!("connecting to {ADDRESS} failed: {e}"));
                Ok(())
            }
        }
    }
}

eventhost_sdk::export_plugin!(Net);
