//! The rules of an append, in one place: which input is valid ([`prepare`]), when an append
//! whose ids are already stored is a harmless retry ([`duplicate_outcome`]), and when the
//! stream's version refuses it ([`check_version`]).
//!
//! The SQLite store and the plugin test harness's in-memory store call these functions; the
//! PostgreSQL store calls [`prepare`] and applies the other two in its SQL function, and the
//! store conformance suite checks all three stores agree.

use std::collections::HashSet;

use uuid::Uuid;

use crate::event::{ExpectedVersion, NewEvent, Position, StreamId, Version};

/// Limits the store enforces on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// The largest payload, in bytes of compact JSON text.
    pub max_payload_bytes: usize,
    /// The most events one append may carry.
    pub max_events_per_append: usize,
    /// The longest aggregate type, aggregate id or event type, in bytes: they are indexed, and
    /// PostgreSQL refuses an index entry over about 2.7 KB.
    pub max_name_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
            max_name_bytes: 1024,
        }
    }
}

/// Why an append was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The stream was not at the expected version.
    #[error("version conflict on stream {stream}: expected {expected}, actual {actual}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Version,
    },

    /// Some, but not all, of an append's event ids were already stored (or stored in
    /// another stream).
    #[error(
        "{found} of the {total} event ids are already stored; an append is idempotent only when all of its ids were appended together to the same stream"
    )]
    PartialDuplicate { found: usize, total: usize },

    #[error("event {index}: payload is {size} bytes, over the {limit}-byte cap")]
    PayloadTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },

    #[error("invalid input: {0}")]
    Invalid(String),
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The appended (or, for a duplicate, the already stored) events, in version order.
    pub events: Vec<AppendedEvent>,
    /// True when every id was already stored in this stream: nothing was written.
    pub duplicate: bool,
}

impl Appended {
    /// The stream's version after the last of these events.
    pub fn last_version(&self) -> Version {
        self.events.last().map_or(0, |event| event.version)
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEvent {
    pub id: Uuid,
    pub version: Version,
    pub position: Position,
}

/// An event ready to be written: validated, with its id fixed and its JSON encoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    pub id: Uuid,
    pub event_type: String,
    /// The payload as compact JSON text.
    pub payload: String,
    /// The metadata as a JSON object of strings.
    pub metadata: String,
}

/// Checks an append against `limits` before any database work, so bad input writes nothing;
/// fixes each event's id (a fresh UUIDv7 when none is given) and encodes its JSON once.
pub fn prepare(
    stream: &StreamId,
    events: &[NewEvent],
    limits: StoreLimits,
) -> Result<Vec<PreparedEvent>, AppendError> {
    if stream.aggregate_type.is_empty() || stream.aggregate_id.is_empty() {
        return Err(AppendError::Invalid(
            "aggregate_type and aggregate_id must not be empty".into(),
        ));
    }
    check_name("aggregate_type", &stream.aggregate_type, limits)?;
    check_name("aggregate_id", &stream.aggregate_id, limits)?;
    if events.is_empty() {
        return Err(AppendError::Invalid(
            "an append needs at least one event".into(),
        ));
    }
    if events.len() > limits.max_events_per_append {
        return Err(AppendError::Invalid(format!(
            "an append may carry at most {} events, got {}",
            limits.max_events_per_append,
            events.len()
        )));
    }
    let prepared: Vec<PreparedEvent> = events
        .iter()
        .enumerate()
        .map(|(index, event)| prepare_event(index, event, limits))
        .collect::<Result<_, _>>()?;
    let mut ids = HashSet::with_capacity(prepared.len());
    if let Some(index) = prepared.iter().position(|event| !ids.insert(event.id)) {
        return Err(AppendError::Invalid(format!(
            "event {index}: id {} appears twice in one append",
            prepared[index].id
        )));
    }
    Ok(prepared)
}

fn prepare_event(
    index: usize,
    event: &NewEvent,
    limits: StoreLimits,
) -> Result<PreparedEvent, AppendError> {
    if event.event_type.is_empty() {
        return Err(AppendError::Invalid(format!(
            "event {index}: event_type must not be empty"
        )));
    }
    let invalid = |error: AppendError| match error {
        AppendError::Invalid(message) => AppendError::Invalid(format!("event {index}: {message}")),
        other => other,
    };
    check_name("event_type", &event.event_type, limits).map_err(invalid)?;
    for (key, value) in &event.metadata {
        if key.contains('\0') || value.contains('\0') {
            return Err(invalid(AppendError::Invalid(format!(
                "metadata {key:?} holds a NUL character, which the store cannot keep"
            ))));
        }
    }
    if holds_nul(&event.payload) {
        return Err(invalid(AppendError::Invalid(
            "the payload holds a NUL character (\\u0000), which the store cannot keep".into(),
        )));
    }
    let payload = event.payload.to_string();
    if payload.len() > limits.max_payload_bytes {
        return Err(AppendError::PayloadTooLarge {
            index,
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    let metadata = serde_json::to_string(&event.metadata)
        .map_err(|error| AppendError::Invalid(format!("event {index}: metadata: {error}")))?;
    Ok(PreparedEvent {
        id: event.id.unwrap_or_else(Uuid::now_v7),
        event_type: event.event_type.clone(),
        payload,
        metadata,
    })
}

/// Checks an indexed name: no NUL character, at most `limits.max_name_bytes`.
pub fn check_name(what: &str, name: &str, limits: StoreLimits) -> Result<(), AppendError> {
    if name.contains('\0') {
        return Err(AppendError::Invalid(format!(
            "{what} holds a NUL character, which the store cannot keep"
        )));
    }
    if name.len() > limits.max_name_bytes {
        return Err(AppendError::Invalid(format!(
            "{what} is {} bytes, over the {}-byte cap",
            name.len(),
            limits.max_name_bytes
        )));
    }
    Ok(())
}

/// Whether a JSON value holds a NUL character in a string or a key (PostgreSQL's `jsonb`
/// refuses `\u0000`): what no store may keep.
pub fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(entries) => entries
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// An event already stored under one of an append's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredId {
    pub id: Uuid,
    pub stream: StreamId,
    pub version: Version,
    pub position: Position,
}

/// What an append of `total` events to `stream` means when the events in `stored` already
/// hold some of its ids: a duplicate, which writes nothing, when all of them were appended
/// to this stream; an error otherwise, since writing the rest would split one logical
/// append in two.
pub fn duplicate_outcome(
    stream: &StreamId,
    total: usize,
    mut stored: Vec<StoredId>,
) -> Result<Appended, AppendError> {
    let same_stream = stored.iter().all(|event| event.stream == *stream);
    if stored.len() != total || !same_stream {
        return Err(AppendError::PartialDuplicate {
            found: stored.len(),
            total,
        });
    }
    stored.sort_by_key(|event| event.version);
    Ok(Appended {
        events: stored
            .into_iter()
            .map(|event| AppendedEvent {
                id: event.id,
                version: event.version,
                position: event.position,
            })
            .collect(),
        duplicate: true,
    })
}

/// Refuses an append to `stream`, now at `actual`, that expected another version.
pub fn check_version(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Version,
) -> Result<(), AppendError> {
    if expected.accepts(actual) {
        Ok(())
    } else {
        Err(AppendError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event_with_id(id: Uuid) -> NewEvent {
        NewEvent {
            id: Some(id),
            ..NewEvent::new("t", json!({}))
        }
    }

    fn stored(id: Uuid, stream: &StreamId, version: Version) -> StoredId {
        StoredId {
            id,
            stream: stream.clone(),
            version,
            position: version,
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/append_input.rs`): without correctly rounded
    /// float parsing, a number sent as text came back one unit in the last place off once
    /// the payload was encoded for the store and read again.
    #[test]
    fn a_payload_number_is_stored_as_the_nearest_float_and_reads_back_the_same() {
        let text = r#"{"n": 6.666766666664667e+60, "m": 0.30000000000000004, "k": 1e-7}"#;
        let payload: serde_json::Value = serde_json::from_str(text).unwrap();
        let prepared = prepare(
            &StreamId::new("a", "1"),
            &[NewEvent::new("t", payload.clone())],
            StoreLimits::default(),
        )
        .unwrap();
        let read: serde_json::Value = serde_json::from_str(&prepared[0].payload).unwrap();
        assert_eq!(read, payload);
        assert_eq!(read["n"].as_f64(), Some(6.666766666664667e60));
    }

    #[test]
    fn an_append_repeating_an_id_is_invalid() {
        let id = Uuid::now_v7();
        let stream = StreamId::new("a", "1");
        let error = prepare(
            &stream,
            &[event_with_id(id), event_with_id(id)],
            StoreLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(error, AppendError::Invalid(message) if message.contains("twice")));
    }

    #[test]
    fn what_the_store_cannot_keep_is_refused_before_writing() {
        let limits = StoreLimits::default();
        let stream = StreamId::new("a", "1");
        let refused = |stream: &StreamId, event: NewEvent| {
            matches!(
                prepare(stream, &[event], limits),
                Err(AppendError::Invalid(_))
            )
        };
        assert!(refused(&stream, NewEvent::new("t\0", json!({}))));
        assert!(refused(
            &stream,
            NewEvent::new("t", json!({ "k": ["a\0"] }))
        ));
        assert!(refused(&stream, NewEvent::new("t", json!({ "k\0": 1 }))));
        let mut metadata = NewEvent::new("t", json!({}));
        metadata.metadata.insert("k".into(), "v\0".into());
        assert!(refused(&stream, metadata));
        let long = "x".repeat(limits.max_name_bytes + 1);
        assert!(refused(
            &StreamId::new("a", long.clone()),
            NewEvent::new("t", json!({}))
        ));
        assert!(refused(&stream, NewEvent::new(long, json!({}))));
        assert!(
            prepare(
                &stream,
                &[NewEvent::new("t", json!({ "k": "\\u0000" }))],
                limits
            )
            .is_ok()
        );
    }

    #[test]
    fn a_payload_over_the_cap_names_its_event() {
        let limits = StoreLimits {
            max_payload_bytes: 8,
            ..StoreLimits::default()
        };
        let events = [
            NewEvent::new("t", json!(1)),
            NewEvent::new("t", json!("long text")),
        ];
        let error = prepare(&StreamId::new("a", "1"), &events, limits).unwrap_err();
        assert_eq!(
            error,
            AppendError::PayloadTooLarge {
                index: 1,
                size: 11,
                limit: 8
            }
        );
    }

    #[test]
    fn only_all_ids_in_the_same_stream_make_a_duplicate() {
        let stream = StreamId::new("a", "1");
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let whole = vec![stored(second, &stream, 2), stored(first, &stream, 1)];
        let outcome = duplicate_outcome(&stream, 2, whole).unwrap();
        assert!(outcome.duplicate);
        assert_eq!(outcome.last_version(), 2);
        assert_eq!(outcome.events[0].id, first);

        let partial = duplicate_outcome(&stream, 2, vec![stored(first, &stream, 1)]);
        assert_eq!(
            partial.unwrap_err(),
            AppendError::PartialDuplicate { found: 1, total: 2 }
        );
        let elsewhere =
            duplicate_outcome(&stream, 1, vec![stored(first, &StreamId::new("a", "2"), 1)]);
        assert!(matches!(
            elsewhere,
            Err(AppendError::PartialDuplicate { .. })
        ));
    }

    #[test]
    fn a_version_mismatch_names_both_versions() {
        let stream = StreamId::new("a", "1");
        assert!(check_version(&stream, ExpectedVersion::Any, 3).is_ok());
        assert_eq!(
            check_version(&stream, ExpectedVersion::NoStream, 3),
            Err(AppendError::Conflict {
                stream,
                expected: ExpectedVersion::NoStream,
                actual: 3
            })
        );
    }
}
