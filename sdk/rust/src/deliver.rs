//! Messages for the operator's sinks (webhooks, NATS subjects): build a [`Message`], [`send`]
//! it to a sink the operator granted the plugin.
//!
//! Nothing leaves during the batch: the host stores the message with the batch's other
//! effects and sends it after the commit, at least once, under the idempotency key [`send`]
//! returns. A batch that fails sends nothing.
//!
//! ```no_run
//! use eventhost_sdk::deliver::{self, Message};
//! # fn f() -> Result<(), eventhost_sdk::HandlerError> {
//! let paid = eventhost_sdk::serde_json::json!({"order": "o-1", "total_cents": 1500});
//! deliver::send("billing-webhook", &Message::json(&paid)?.key("o-1"))?;
//! # Ok(()) }
//! ```

use serde::Serialize;

use crate::bindings::eventhost::plugin::host;
use crate::{HandlerError, HostError};

pub use crate::Message;

impl Message {
    /// A message whose body is `body` as compact JSON, sent as `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(body: &T) -> Result<Self, HandlerError> {
        let body = serde_json::to_vec(body).map_err(|error| {
            HandlerError::permanent(format!("a message body does not encode: {error}"))
        })?;
        Ok(Self::bytes(body).header("content-type", "application/json"))
    }

    /// A message whose body is `body`, sent as `content-type: text/plain; charset=utf-8`.
    pub fn text(body: impl Into<String>) -> Self {
        Self::bytes(body.into().into_bytes()).header("content-type", "text/plain; charset=utf-8")
    }

    /// A message whose body is `body`, with no headers.
    pub fn bytes(body: Vec<u8>) -> Self {
        Message {
            body,
            headers: Vec::new(),
            key: None,
        }
    }

    /// Orders the message after the earlier messages with the same key (e.g. an order's id).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (an HTTP token name; a value without line breaks).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Asks the host to deliver `message` to `sink` when the batch commits; returns the message's
/// idempotency key. `invalid` names a sink the plugin is not granted, or a bad header;
/// `limit-exceeded` says the batch asked for too many messages or bytes.
pub fn send(sink: &str, message: &Message) -> Result<String, HostError> {
    host::deliver(sink, message)
}
