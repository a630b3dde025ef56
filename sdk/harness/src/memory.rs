//! The harness's event store: events, streams and subscription state in memory, with the
//! daemon store's rules (optimistic concurrency, idempotent ids) and a fixed clock.
//!
//! Event `n` (position `n`) is recorded at [`CLOCK_START`] plus `n` milliseconds, and an event
//! appended without an id gets one derived from its position, so runs are repeatable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use eventhost_domain::append::{self, AppendError, PreparedEvent, StoreLimits, StoredId};
use eventhost_domain::{Event, ExpectedVersion, Metadata, NewEvent, Payload, StreamId, Version};
use eventhost_runtime::{ReadError, Reads};

/// When the harness's clock starts: 2026-01-01T00:00:00Z.
pub const CLOCK_START: DateTime<Utc> =
    DateTime::from_timestamp_millis(1_767_225_600_000).expect("a valid instant");

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    streams: HashMap<StreamId, Vec<usize>>,
    /// Where each stored id's event is in `events`.
    ids: HashMap<Uuid, usize>,
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

    /// Appends `events` to `stream` atomically and returns the stored ones, by the rules
    /// of the daemon's stores ([`eventhost_domain::append`]): input checked against the
    /// store's default limits, a re-append of ids all stored in this stream is a duplicate
    /// that writes nothing, a partial duplicate or a version mismatch is refused.
    pub fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, AppendError> {
        self.append_all(vec![(stream.clone(), expected, events)])
    }

    /// Appends every group or none, as a batch's commit does: when one group is refused,
    /// the groups before it are taken back.
    pub fn append_all(
        &self,
        groups: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Result<Vec<Event>, AppendError> {
        let mut inner = self.inner();
        let before = inner.events.len();
        let mut stored = Vec::new();
        for (stream, expected, events) in groups {
            match inner.append(&stream, expected, events) {
                Ok(events) => stored.extend(events),
                Err(error) => {
                    inner.truncate(before);
                    return Err(error);
                }
            }
        }
        Ok(stored)
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
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, AppendError> {
        let next = self.events.len() as u64 + 1;
        for (offset, event) in (0..).zip(events.iter_mut()) {
            event.id.get_or_insert_with(|| derived_id(next + offset));
        }
        let prepared = append::prepare(stream, &events, StoreLimits::default())?;
        let already: Vec<StoredId> = prepared
            .iter()
            .filter_map(|event| self.ids.get(&event.id))
            .map(|&index| {
                let event = &self.events[index];
                StoredId {
                    id: event.id,
                    stream: event.stream(),
                    version: event.version,
                    position: event.position,
                }
            })
            .collect();
        if !already.is_empty() {
            append::duplicate_outcome(stream, prepared.len(), already)?;
            return Ok(Vec::new());
        }
        let actual = self
            .streams
            .get(stream)
            .map_or(0, |indexes| indexes.len() as Version);
        append::check_version(stream, expected, actual)?;
        Ok((1..)
            .zip(prepared.into_iter().zip(events))
            .map(|(offset, (prepared, event))| {
                self.push(stream, actual + offset, prepared, event.metadata)
            })
            .collect())
    }

    /// Forgets every event after the first `len`.
    fn truncate(&mut self, len: usize) {
        for event in self.events.drain(len..) {
            self.ids.remove(&event.id);
            if let Some(indexes) = self.streams.get_mut(&event.stream()) {
                indexes.retain(|&index| index < len);
            }
        }
        self.streams.retain(|_, indexes| !indexes.is_empty());
    }

    fn push(
        &mut self,
        stream: &StreamId,
        version: Version,
        event: PreparedEvent,
        metadata: Metadata,
    ) -> Event {
        let position = self.events.len() as u64 + 1;
        let recorded_at = CLOCK_START + chrono::Duration::milliseconds(position as i64);
        let stored = Event {
            id: event.id,
            position,
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
            version,
            event_type: event.event_type,
            payload: Payload::from_text(event.payload)
                .expect("a prepared payload is the text of a JSON value"),
            metadata,
            recorded_at,
        };
        self.ids.insert(stored.id, self.events.len());
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
        assert!(matches!(conflict, AppendError::Conflict { actual: 1, .. }));
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
    fn a_partial_duplicate_is_refused_as_the_daemon_refuses_it() {
        let store = MemoryStore::new();
        let mut stored = NewEvent::new("a", json!({}));
        stored.id = Some(Uuid::now_v7());
        store
            .append(&order("1"), ExpectedVersion::Any, vec![stored.clone()])
            .unwrap();
        let fresh = NewEvent::new("b", json!({}));
        let refused = store
            .append(
                &order("1"),
                ExpectedVersion::Any,
                vec![stored.clone(), fresh],
            )
            .unwrap_err();
        assert_eq!(
            refused,
            AppendError::PartialDuplicate { found: 1, total: 2 }
        );
        let elsewhere = store
            .append(&order("2"), ExpectedVersion::Any, vec![stored])
            .unwrap_err();
        assert!(matches!(elsewhere, AppendError::PartialDuplicate { .. }));
        assert_eq!(store.head(), 1);
    }

    #[test]
    fn a_refused_group_takes_back_the_groups_before_it() {
        let store = MemoryStore::new();
        let refused = store.append_all(vec![
            (
                order("1"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("a", json!(1))],
            ),
            (
                order("2"),
                ExpectedVersion::Exact(5),
                vec![NewEvent::new("b", json!(2))],
            ),
        ]);
        assert!(matches!(refused, Err(AppendError::Conflict { .. })));
        assert_eq!(store.head(), 0);
        let first = store
            .append(
                &order("1"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("a", json!(1))],
            )
            .unwrap();
        assert_eq!((first[0].version, first[0].position), (1, 1));
    }

    #[test]
    fn a_payload_over_the_store_cap_is_refused() {
        let store = MemoryStore::new();
        let big = json!("x".repeat(StoreLimits::default().max_payload_bytes));
        let refused = store
            .append(
                &order("1"),
                ExpectedVersion::Any,
                vec![NewEvent::new("a", big)],
            )
            .unwrap_err();
        assert!(matches!(
            refused,
            AppendError::PayloadTooLarge { index: 0, .. }
        ));
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
