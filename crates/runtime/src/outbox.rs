//! The `deliver` host call: the messages one batch asks to send, checked against the plugin's
//! grants and the batch's caps, and given their idempotency keys.
//!
//! A message's key is `<subscription>:<position of the batch's last event>:<index>`: batches
//! of one subscription never share a last position, so a key names one message of one
//! committed batch, whatever the daemon that ran it.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::bindings::wit;
use super::limits::Limits;
use eventhost_domain::{Message, message};

/// The sinks a plugin may deliver to: what its sidecar grants.
pub type Grants = Arc<BTreeSet<String>>;

/// The messages of one batch so far.
pub(crate) struct Outbox {
    grants: Grants,
    /// `<subscription>:<position>:`, completed by each message's index.
    id_prefix: String,
    messages: Vec<Message>,
    bytes: u64,
}

/// Why a message was refused: bad input, or a batch cap reached (which fails the batch).
pub(crate) enum Refusal {
    Invalid(String),
    Cap(String),
}

impl Outbox {
    pub(crate) fn new(grants: Grants, namespace: &str, last_position: u64) -> Self {
        Self {
            grants,
            id_prefix: format!("{namespace}:{last_position}:"),
            messages: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes a message for `sink` and returns its idempotency key.
    pub(crate) fn deliver(
        &mut self,
        limits: &Limits,
        sink: String,
        message: wit::Message,
    ) -> Result<String, Refusal> {
        if !self.grants.contains(&sink) {
            return Err(Refusal::Invalid(self.not_granted(&sink)));
        }
        message::check(&message.headers, message.key.as_deref())
            .map_err(|error| Refusal::Invalid(error.to_string()))?;
        let message = Message {
            id: format!("{}{}", self.id_prefix, self.messages.len()),
            sink,
            key: message.key,
            headers: message.headers,
            body: message.body,
        };
        let size = message.size();
        if size > limits.message_bytes {
            return Err(Refusal::Invalid(format!(
                "a message of {size} bytes is over the cap of {} bytes",
                limits.message_bytes
            )));
        }
        if self.messages.len() as u64 >= limits.messages {
            let cap = limits.messages;
            return Err(Refusal::Cap(format!(
                "more than {cap} messages in one batch"
            )));
        }
        if self.bytes + size > limits.messages_bytes {
            let cap = limits.messages_bytes;
            return Err(Refusal::Cap(format!(
                "more than {cap} bytes of messages in one batch"
            )));
        }
        self.bytes += size;
        let id = message.id.clone();
        self.messages.push(message);
        Ok(id)
    }

    pub(crate) fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    fn not_granted(&self, sink: &str) -> String {
        let granted = if self.grants.is_empty() {
            "it is granted none (the sidecar's `sinks = [...]` grants them)".to_owned()
        } else {
            let names: Vec<&str> = self.grants.iter().map(String::as_str).collect();
            format!("it is granted {}", names.join(", "))
        };
        format!("sink `{sink}` is not granted to this plugin: {granted}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(grants: &[&str]) -> Outbox {
        let grants = grants.iter().map(|name| (*name).to_owned()).collect();
        Outbox::new(Arc::new(grants), "notifier.paid", 42)
    }

    fn message(body: &str) -> wit::Message {
        wit::Message {
            body: body.as_bytes().to_vec(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            key: Some("o-1".to_owned()),
        }
    }

    fn refused(outcome: Result<String, Refusal>) -> (bool, String) {
        match outcome {
            Ok(id) => panic!("accepted as {id}"),
            Err(Refusal::Invalid(why)) => (false, why),
            Err(Refusal::Cap(why)) => (true, why),
        }
    }

    #[test]
    fn messages_get_keys_from_the_subscription_the_batch_and_their_index() {
        let mut outbox = outbox(&["hooks"]);
        let limits = Limits::default();
        let first = outbox.deliver(&limits, "hooks".to_owned(), message("{}"));
        let second = outbox.deliver(&limits, "hooks".to_owned(), message("{}"));
        assert_eq!(first.ok().as_deref(), Some("notifier.paid:42:0"));
        assert_eq!(second.ok().as_deref(), Some("notifier.paid:42:1"));
        assert_eq!(outbox.into_messages().len(), 2);
    }

    #[test]
    fn an_ungranted_sink_is_refused_naming_it_and_the_grants() {
        let mut outbox = outbox(&["hooks"]);
        let (cap, why) =
            refused(outbox.deliver(&Limits::default(), "billing".to_owned(), message("{}")));
        assert!(!cap);
        assert_eq!(
            why,
            "sink `billing` is not granted to this plugin: it is granted hooks"
        );
        let mut none = outbox_without_grants();
        let (_, why) =
            refused(none.deliver(&Limits::default(), "billing".to_owned(), message("{}")));
        assert!(why.contains("granted none"), "{why}");
    }

    fn outbox_without_grants() -> Outbox {
        outbox(&[])
    }

    #[test]
    fn a_large_message_is_invalid_and_too_many_fail_the_batch() {
        let limits = Limits {
            messages: 2,
            message_bytes: 100,
            ..Limits::default()
        };
        let mut outbox = outbox(&["hooks"]);
        let (cap, why) =
            refused(outbox.deliver(&limits, "hooks".to_owned(), message(&"x".repeat(100))));
        assert!(!cap && why.contains("over the cap of 100 bytes"), "{why}");
        for _ in 0..2 {
            assert!(
                outbox
                    .deliver(&limits, "hooks".to_owned(), message("{}"))
                    .is_ok()
            );
        }
        let (cap, why) = refused(outbox.deliver(&limits, "hooks".to_owned(), message("{}")));
        assert!(cap && why.contains("more than 2 messages"), "{why}");
    }
}
