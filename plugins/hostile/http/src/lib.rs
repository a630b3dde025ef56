//! hostile-http: sends an HTTP request through `wasi:http`, which the `handler` world
//! does not grant.
//!
//! The component imports `wasi:http/outgoing-handler` (through the `wasi` crate), so the
//! daemon must refuse to load it, naming the import, and keep running every other plugin.
//! Were it loaded anyway, a refused request is logged and a sent one fails the batch.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, log};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

const AUTHORITY: &str = "127.0.0.1:5432";

struct Http;

impl Plugin for Http {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-http", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        let request = OutgoingRequest::new(Fields::new());
        request
            .set_scheme(Some(&Scheme::Http))
            .and_then(|()| request.set_authority(Some(AUTHORITY)))
            .map_err(|()| HandlerError::permanent("the HTTP request was rejected as malformed"))?;
        match outgoing_handler::handle(request, None) {
            Ok(_) => Err(HandlerError::permanent(format!(
                "sandbox breach: sent an HTTP request to {AUTHORITY}"
            ))),
            Err(code) => {
                log::info(format_args!(
                    "HTTP request to {AUTHORITY} refused: {code:?}"
                ));
                Ok(())
            }
        }
    }
}

eventhost_sdk::export_plugin!(Http);
