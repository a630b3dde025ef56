//! The domain's words: streams, events, versions and positions.
//!
//! These types are shared by the store, the runtime and the dispatcher. They hold data only;
//! validation that needs configuration (payload caps) lives with the store.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// String metadata attached to an event (correlation/causation ids, traceparent...).
pub type Metadata = BTreeMap<String, String>;

/// A stream: all events of one aggregate, versioned 1, 2, 3...
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl StreamId {
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// A stream's version: the number of events in it. 0 means the stream does not exist.
pub type Version = u64;

/// An event's place in the global order. Positions increase but may have gaps.
pub type Position = u64;

/// The version a stream must be at for an append to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn accepts(self, actual: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// An event to append. The store assigns its version, position and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Supplied ids make appends idempotent; `None` gets a fresh UUIDv7.
    pub id: Option<Uuid>,
    pub event_type: String,
    pub payload: serde_json::Value,
    #[serde(default)]
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            id: None,
            event_type: event_type.into(),
            payload,
            metadata: Metadata::new(),
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: Version,
    pub event_type: String,
    /// Any JSON value.
    #[schema(value_type = serde_json::Value)]
    pub payload: Payload,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

impl Event {
    /// The bytes of the event's text (names, payload, metadata): what holding it costs,
    /// give or take a fixed overhead. Caps on what the daemon holds count these.
    pub fn text_bytes(&self) -> usize {
        let metadata: usize = self
            .metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        self.aggregate_type.len()
            + self.aggregate_id.len()
            + self.event_type.len()
            + self.payload.as_str().len()
            + metadata
    }
}

/// One stream of a batch of stream reads: its events from `from_version` (inclusive), at
/// most `limit` of them. A `limit` of 0 reads only the stream's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    pub stream: StreamId,
    pub from_version: Version,
    pub limit: usize,
}

/// What one [`StreamRead`] found, as of one moment: the stream's committed version (0 when
/// it does not exist) and the events asked for, in version order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamPage {
    pub version: Version,
    pub events: Vec<Event>,
}

/// A stored event's payload: valid JSON kept as its text, so events go from the store to a
/// plugin (which takes text) without being parsed into a tree and printed again. Two payloads
/// are equal when their JSON values are, whatever their spacing or key order.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Checks that `text` is one JSON value.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    pub fn from_value(value: &Value) -> Self {
        // A `Value` always prints as valid JSON.
        Self(RawValue::from_string(value.to_string()).expect("a JSON value prints as JSON"))
    }

    /// The JSON text, as stored.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The same JSON without whitespace between its tokens: PostgreSQL's `jsonb` prints
    /// `{"a": 1, "b": [1, 2]}` where SQLite keeps `{"a":1,"b":[1,2]}`. Strings, numbers and
    /// the order of keys stay byte for byte (parsing into a tree and printing again would
    /// round numbers past 64 bits).
    pub fn compacted(&self) -> Payload {
        let text = self.as_str();
        let mut out = Vec::with_capacity(text.len());
        let (mut in_string, mut escaped) = (false, false);
        for &byte in text.as_bytes() {
            if in_string {
                out.push(byte);
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                in_string = byte == b'"';
                out.push(byte);
            }
        }
        String::from_utf8(out)
            .ok()
            .and_then(|text| Payload::from_text(text).ok())
            .unwrap_or_else(|| self.clone())
    }

    /// The payload parsed.
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
            || matches!((self.value(), other.value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.value().is_ok_and(|value| value == *other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    pub fn stream(&self) -> StreamId {
        StreamId::new(&self.aggregate_type, &self.aggregate_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_keep_their_text_and_compare_as_json_values() {
        let stored = Payload::from_text(r#"{"b": [1, 2], "a": "x"}"#.to_owned()).unwrap();
        assert_eq!(stored.as_str(), r#"{"b": [1, 2], "a": "x"}"#);
        assert_eq!(
            stored,
            Payload::from_value(&json!({ "a": "x", "b": [1, 2] }))
        );
        assert_eq!(stored, json!({ "a": "x", "b": [1, 2] }));
        assert_ne!(stored, json!({ "a": "x", "b": [2, 1] }));
        assert!(Payload::from_text("{oops".to_owned()).is_err());
        assert!(Payload::from_text("1 2".to_owned()).is_err());
    }

    #[test]
    fn a_compacted_payload_keeps_strings_numbers_and_key_order() {
        let spaced = r#"{"b": [1, 2.50, 12345678901234567890123], "a": "x y", "q": "say \"hi\", ok", "e": "\\", "z": {"k": " "}}"#;
        let payload = Payload::from_text(spaced.to_owned()).unwrap();
        assert_eq!(
            payload.compacted().as_str(),
            r#"{"b":[1,2.50,12345678901234567890123],"a":"x y","q":"say \"hi\", ok","e":"\\","z":{"k":" "}}"#
        );
        assert_eq!(payload.compacted(), payload);
        let scalar = Payload::from_text(" \"a b\" ".to_owned()).unwrap();
        assert_eq!(scalar.compacted().as_str(), "\"a b\"");
    }

    #[test]
    fn a_payload_serializes_as_its_json_not_as_a_string() {
        let payload = Payload::from_text(r#"{"n":1}"#.to_owned()).unwrap();
        assert_eq!(serde_json::to_string(&payload).unwrap(), r#"{"n":1}"#);
        let back: Payload = serde_json::from_str(r#" {"n": 1} "#).unwrap();
        assert_eq!(back, payload);
    }
}
