//! The host side of the plugin contract, generated from `wit/` by `bindgen!` (never hand-copied),
//! and the conversions between the generated types and the domain types of [`crate::event`].
//!
//! Every import is `async` on the host so that reads can await the store; exports are called
//! asynchronously so that epoch interruption and the per-batch timeout can stop a guest.

use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "handler",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) use generated::eventhost::plugin::host::Host;
pub(crate) use generated::eventhost::plugin::types as wit;
pub(crate) use generated::{Handler, HandlerPre};

impl From<wit::StreamId> for StreamId {
    fn from(stream: wit::StreamId) -> Self {
        StreamId::new(stream.aggregate_type, stream.aggregate_id)
    }
}

impl From<&StreamId> for wit::StreamId {
    fn from(stream: &StreamId) -> Self {
        wit::StreamId {
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
        }
    }
}

impl From<wit::ExpectedVersion> for ExpectedVersion {
    fn from(expected: wit::ExpectedVersion) -> Self {
        match expected {
            wit::ExpectedVersion::Any => ExpectedVersion::Any,
            wit::ExpectedVersion::NoStream => ExpectedVersion::NoStream,
            wit::ExpectedVersion::Exact(version) => ExpectedVersion::Exact(version),
        }
    }
}

impl From<ExpectedVersion> for wit::ExpectedVersion {
    fn from(expected: ExpectedVersion) -> Self {
        match expected {
            ExpectedVersion::Any => wit::ExpectedVersion::Any,
            ExpectedVersion::NoStream => wit::ExpectedVersion::NoStream,
            ExpectedVersion::Exact(version) => wit::ExpectedVersion::Exact(version),
        }
    }
}

impl From<&Event> for wit::Event {
    fn from(event: &Event) -> Self {
        wit::Event {
            id: event.id.hyphenated().to_string(),
            stream: wit::StreamId {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
            },
            version: event.version,
            event_type: event.event_type.clone(),
            payload: event.payload.as_str().to_owned(),
            metadata: event
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            recorded_at_ms: event.recorded_at.timestamp_millis(),
            position: event.position,
        }
    }
}

/// Turns an event a plugin emitted into a domain [`NewEvent`], or says why it is invalid.
pub(crate) fn new_event_from_wit(event: wit::NewEvent) -> Result<NewEvent, String> {
    if event.event_type.is_empty() {
        return Err("event-type must not be empty".to_owned());
    }
    let payload = serde_json::from_str(&event.payload).map_err(|error| {
        format!(
            "payload of a `{}` event is not JSON: {error}",
            event.event_type
        )
    })?;
    let id = event
        .id
        .map(|id| {
            uuid::Uuid::parse_str(&id).map_err(|error| format!("id `{id}` is not a UUID: {error}"))
        })
        .transpose()?;
    Ok(NewEvent {
        id,
        event_type: event.event_type,
        payload,
        metadata: event.metadata.into_iter().collect(),
    })
}
