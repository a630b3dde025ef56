//! The harness's event store: events, streams and subscription state in memory, with the
//! daemon store's rules (optimistic concurrency, idempotent ids) and a fixed clock.
//!
//! Event `n` (position `n`) is recorded at [`CLOCK_START`] plus `n` milliseconds, and an event
//! appended without an id gets one derived from its position, so runs are repeatable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::event::{Event, ExpectedVersion, NewEvent, Payload, StreamId, Version};
use crate::runtime::{ReadError, Reads};

/// When the harness's clock starts: 2026-01-01T00:00:00Z.
pub const CLOCK_START: DateTime<Utc> =
    DateTime::from_timestamp_millis(1_767_225_600_000).expect("a valid instant");

/// An append found the stream at another version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream} is at version {actual}, expected {expected}")]
pub struct Conflict {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub actual: Version,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    streams: HashMap<StreamId, Vec<usize>>,
    ids: HashSet<Uuid>,
    state: BTreeMap<String, BTreeMap<String, String>>,
}

/// An in-memory store. Cheap to clone: clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below completes before it can panic, so a poisoned lock holds
        // consistent data.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `events` to `stream` atomically and returns the stored ones. Events whose id is
    /// already stored are skipped (idempotent); the expected version is checked only when
    /// something is left to append.
    pub fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, Conflict> {
        let mut inner = self.inner();
        let fresh: Vec<NewEvent> = events
            .into_iter()
            .filter(|event| event.id.is_none_or(|id| !inner.ids.contains(&id)))
            .collect();
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let actual = inner
            .streams
            .get(stream)
            .map_or(0, |indexes| indexes.len() as Version);
        if !expected.accepts(actual) {
            return Err(Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        Ok(fresh
            .into_iter()
            .enumerate()
            .map(|(offset, event)| inner.push(stream, actual + 1 + offset as u64, event))
            .collect())
    }

    /// Every stored event, in position order.
    pub fn events(&self) -> Vec<Event> {
        self.inner().events.clone()
    }

    /// The events after `position`, in order.
    pub fn events_after(&self, position: u64) -> Vec<Event> {
        let inner = self.inner();
        inner.events[usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(inner.events.len())..]
            .to_vec()
    }

    /// The position of the last stored event (0 when empty).
    pub fn head(&self) -> u64 {
        self.inner().events.len() as u64
    }

    /// A namespace's committed state.
    pub fn state(&self, namespace: &str) -> BTreeMap<String, String> {
        self.inner()
            .state
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// Deletes every key of `namespace`.
    pub fn clear_state(&self, namespace: &str) {
        self.inner().state.remove(namespace);
    }

    /// Applies a batch's final state changes to `namespace`.
    pub fn apply_state(&self, namespace: &str, changes: &BTreeMap<String, Option<String>>) {
        let mut inner = self.inner();
        let state = inner.state.entry(namespace.to_owned()).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
    }
}

impl Inner {
    fn push(&mut self, stream: &StreamId, version: Version, event: NewEvent) -> Event {
        let position = self.events.len() as u64 + 1;
        let recorded_at = CLOCK_START + chrono::Duration::milliseconds(position as i64);
        let id = event.id.unwrap_or_else(|| derived_id(position));
        let stored = Event {
            id,
            position,
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
            version,
            event_type: event.event_type,
            payload: Payload::from_value(&event.payload),
            metadata: event.metadata,
            recorded_at,
        };
        self.ids.insert(id);
        self.streams
            .entry(stream.clone())
            .or_default()
            .push(self.events.len());
        self.events.push(stored.clone());
        stored
    }
}

/// A UUIDv7 whose time and "random" bits both come from the position: repeatable ids.
fn derived_id(position: u64) -> Uuid {
    let millis = CLOCK_START.timestamp_millis() as u64 + position;
    let mut counter = [0u8; 10];
    counter[2..].copy_from_slice(&position.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &counter).into_uuid()
}

impl Reads for MemoryStore {
    fn state_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
        let value = self
            .inner()
            .state
            .get(namespace)
            .and_then(|state| state.get(key).cloned());
        Box::pin(async move { Ok(value) })
    }

    fn state_scan<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>> {
        let entries = self
            .inner()
            .state
            .get(namespace)
            .map_or_else(Vec::new, |state| {
                state
                    .iter()
                    .filter(|(key, _)| {
                        key.starts_with(prefix) && after.is_none_or(|after| key.as_str() > after)
                    })
                    .take(limit as usize)
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            });
        Box::pin(async move { Ok(entries) })
    }

    fn stream_version<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Version, ReadError>> {
        let version = self
            .inner()
            .streams
            .get(stream)
            .map_or(0, |indexes| indexes.len() as Version);
        Box::pin(async move { Ok(version) })
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: Version,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
        let inner = self.inner();
        let events = inner.streams.get(stream).map_or_else(Vec::new, |indexes| {
            indexes
                .iter()
                .map(|&index| &inner.events[index])
                .filter(|event| event.version >= from_version)
                .take(limit as usize)
                .cloned()
                .collect()
        });
        Box::pin(async move { Ok(events) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order(id: &str) -> StreamId {
        StreamId::new("order", id)
    }

    #[test]
    fn appends_check_the_expected_version() {
        let store = MemoryStore::new();
        let first = store
            .append(
                &order("1"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("a", json!({}))],
            )
            .unwrap();
        assert_eq!((first[0].version, first[0].position), (1, 1));
        let conflict = store
            .append(
                &order("1"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("b", json!({}))],
            )
            .unwrap_err();
        assert_eq!(conflict.actual, 1);
    }

    #[test]
    fn re_appending_a_stored_id_is_a_no_op() {
        let store = MemoryStore::new();
        let mut event = NewEvent::new("a", json!({}));
        event.id = Some(Uuid::now_v7());
        store
            .append(&order("1"), ExpectedVersion::NoStream, vec![event.clone()])
            .unwrap();
        let again = store
            .append(&order("1"), ExpectedVersion::NoStream, vec![event])
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(store.head(), 1);
    }

    #[test]
    fn ids_and_times_are_repeatable() {
        let one = MemoryStore::new();
        let two = MemoryStore::new();
        let a = one
            .append(
                &order("1"),
                ExpectedVersion::Any,
                vec![NewEvent::new("a", json!(1))],
            )
            .unwrap();
        let b = two
            .append(
                &order("1"),
                ExpectedVersion::Any,
                vec![NewEvent::new("a", json!(1))],
            )
            .unwrap();
        assert_eq!(a, b);
    }
}
