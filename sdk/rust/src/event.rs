//! Helpers on the event types: decoding a delivered [`Event`]'s JSON payload into the
//! plugin's own type, and building a [`NewEvent`] from a serializable value.
//!
//! Decoding and encoding failures become non-retryable [`HandlerError`]s naming the event,
//! since the same bytes would fail again on every retry.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Event, HandlerError, NewEvent, StreamId, StreamRead};

impl StreamId {
    /// The stream of aggregate `aggregate_id` of type `aggregate_type`.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        StreamId {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

impl StreamRead {
    /// A read of `stream`'s events from `from_version` (inclusive), at most `limit` of them
    /// (the host caps it at 1000), with the stream's version.
    pub fn events(stream: &StreamId, from_version: u64, limit: u32) -> Self {
        StreamRead {
            stream: stream.clone(),
            from_version,
            limit,
        }
    }

    /// A read of `stream`'s version alone: what an `emit` later in the batch checks its
    /// expected version against, without a round trip of its own.
    pub fn version(stream: &StreamId) -> Self {
        Self::events(stream, 1, 0)
    }
}

impl Event {
    /// Decodes the JSON payload into `T`; a payload that does not fit `T` is a non-retryable
    /// error naming the event's id and type.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(&self.payload).map_err(|e| {
            HandlerError::permanent(format!(
                "event {} ({}): payload does not decode: {e}",
                self.id, self.event_type
            ))
        })
    }

    /// The value of metadata entry `key`, if present.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl NewEvent {
    /// An event of type `event_type` whose payload is `payload` encoded as JSON, with no id
    /// (the host assigns one) and no metadata.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        payload: &T,
    ) -> Result<Self, HandlerError> {
        let event_type = event_type.into();
        let payload = serde_json::to_string(payload).map_err(|e| {
            HandlerError::permanent(format!(
                "new {event_type} event: payload does not encode: {e}"
            ))
        })?;
        Ok(NewEvent {
            id: None,
            event_type,
            payload,
            metadata: Vec::new(),
        })
    }

    /// Sets the event's id (a UUID). A deterministic id makes re-emitting the event idempotent.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets metadata entry `key` to `value`, replacing an earlier value of the same key.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Event {
        Event {
            id: "e-1".to_string(),
            stream: StreamId::new("order", "o-1"),
            version: 1,
            event_type: "order.created".to_string(),
            payload: payload.to_string(),
            metadata: vec![("correlation-id".to_string(), "c-1".to_string())],
            recorded_at_ms: 0,
            position: 1,
        }
    }

    #[test]
    fn payload_decodes_into_the_callers_type() {
        let value: serde_json::Value = event(r#"{"customer":"ada"}"#).payload().unwrap();
        assert_eq!(value["customer"], "ada");
    }

    #[test]
    fn undecodable_payload_is_a_permanent_error_naming_the_event() {
        let error = event("{}").payload::<Vec<u8>>().unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.starts_with("event e-1 (order.created):"),
            "{}",
            error.message
        );
    }

    #[test]
    fn metadata_is_looked_up_by_key() {
        assert_eq!(event("{}").metadata("correlation-id"), Some("c-1"));
        assert_eq!(event("{}").metadata("causation-id"), None);
    }

    #[test]
    fn new_event_encodes_compact_json_and_replaces_metadata_keys() {
        let new = NewEvent::json(
            "shipment.requested",
            &serde_json::json!({"order_id": "o-1"}),
        )
        .unwrap()
        .with_id("id-1")
        .with_metadata("causation-id", "a")
        .with_metadata("causation-id", "b");
        assert_eq!(new.payload, r#"{"order_id":"o-1"}"#);
        assert_eq!(new.id.as_deref(), Some("id-1"));
        assert_eq!(
            new.metadata,
            vec![("causation-id".to_string(), "b".to_string())]
        );
    }
}
