//! hostile-deliver: asks for whatever messages its events describe, to test the host's checks.
//!
//! Plugin `hostile-deliver`, subscription `all` (aggregate type `probe`, batches of 100). Each
//! event's payload is `{"sink": s, "body": text, "headers": [[name, value]...], "key": k,
//! "copies": n, "fail": bool}` (all optional: sink `hooks`, body `{"n":<event version>}`, no
//! headers, key the aggregate id, 1 copy). It delivers `copies` messages; a refused one fails
//! the batch with the host's error (non-retryable). After its messages, an event with
//! `"fail": true` fails the batch (retryable): nothing it asked for may be sent.

use eventhost_sdk::deliver::{self, Message};
use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription};
use serde::Deserialize;

struct Deliver;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Order {
    sink: Option<String>,
    body: Option<String>,
    headers: Vec<(String, String)>,
    key: Option<String>,
    copies: Option<u32>,
    fail: bool,
}

impl Plugin for Deliver {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-deliver", "1.0.0").subscription(
            Subscription::new("all")
                .aggregate_types(["probe"])
                .batch_size(100),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        for event in &batch {
            let order: Order = event.payload()?;
            let body = order
                .body
                .unwrap_or_else(|| format!("{{\"n\":{}}}", event.version));
            let mut message = Message::bytes(body.into_bytes()).key(
                order
                    .key
                    .unwrap_or_else(|| event.stream.aggregate_id.clone()),
            );
            message.headers = order.headers;
            let sink = order.sink.as_deref().unwrap_or("hooks");
            for _ in 0..order.copies.unwrap_or(1) {
                deliver::send(sink, &message)
                    .map_err(|error| HandlerError::permanent(format!("{error:?}")))?;
            }
            if order.fail {
                return Err(HandlerError::transient(format!(
                    "asked to fail at {}",
                    event.id
                )));
            }
        }
        Ok(())
    }
}

eventhost_sdk::export_plugin!(Deliver);
