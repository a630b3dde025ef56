//! What the command line and the HTTP API both do, written once so the two never disagree:
//! each call takes the store and returns records that the CLI prints as lines and the API
//! sends as JSON.

use serde::Serialize;
use uuid::Uuid;

use eventhost_domain::input::EventLine;
use eventhost_domain::{ExpectedVersion, NewEvent, Position, StreamId, Version};
use eventhost_store::{EventStore, PendingAppend, Store, StoreError};

/// Where one appended event landed, as both faces report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendedRecord {
    pub id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: Version,
    pub position: Position,
    /// True when the event's append was a retry: every id of it was already stored, and
    /// nothing was written.
    pub duplicate: bool,
}

/// Appends every line, each to its own stream with its own expected version, in one
/// transaction: all of them or none. A refused line is named by its index in
/// [`StoreError::InAppend`].
pub async fn append_lines(
    store: &Store,
    lines: &[EventLine],
) -> Result<Vec<AppendedRecord>, StoreError> {
    let appends: Vec<PendingAppend> = lines
        .iter()
        .map(|line| PendingAppend {
            stream: line.stream(),
            expected: line.expected_version,
            events: vec![line.new_event()],
        })
        .collect();
    let appended = store.append_all(&appends).await?;
    Ok(lines
        .iter()
        .zip(&appended)
        .flat_map(|(line, appended)| {
            appended.events.iter().map(|event| AppendedRecord {
                id: event.id,
                aggregate_type: line.aggregate_type.clone(),
                aggregate_id: line.aggregate_id.clone(),
                version: event.version,
                position: event.position,
                duplicate: appended.duplicate,
            })
        })
        .collect())
}

/// Appends `events` to one stream atomically if it is at `expected`.
pub async fn append_stream(
    store: &Store,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<AppendedRecord>, StoreError> {
    let appended = store.append(stream, expected, events).await?;
    Ok(appended
        .events
        .iter()
        .map(|event| AppendedRecord {
            id: event.id,
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
            version: event.version,
            position: event.position,
            duplicate: appended.duplicate,
        })
        .collect())
}
