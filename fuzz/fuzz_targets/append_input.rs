//! The rules every store applies to an append, on arbitrary names, payloads and metadata:
//! one error or prepared events, never a panic; prepared events are within the limits, hold
//! no NUL, and their JSON reads back as what was given.
#![no_main]

use eventhost_domain::append::prepare;
use eventhost_domain::{Metadata, NewEvent, StoreLimits, StreamId};
use eventhost_fuzz::holds_nul;
use libfuzzer_sys::fuzz_target;

// `data` split at 0xFF bytes: aggregate type, aggregate id, event type, payload JSON, then
// metadata keys and values in turn.
fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|byte| *byte == 0xFF);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let stream = StreamId::new(text(), text());
    let event_type = text();
    let Ok(payload) = serde_json::from_str::<serde_json::Value>(&text()) else {
        return;
    };
    let mut metadata = Metadata::new();
    loop {
        let (key, value) = (text(), text());
        if key.is_empty() && value.is_empty() {
            break;
        }
        metadata.insert(key, value);
    }
    let event = NewEvent {
        metadata: metadata.clone(),
        ..NewEvent::new(event_type, payload.clone())
    };
    let limits = StoreLimits {
        max_payload_bytes: 4096,
        max_events_per_append: 4,
        max_name_bytes: 64,
    };
    let Ok(prepared) = prepare(&stream, &[event], limits) else {
        return;
    };
    let [prepared] = prepared.as_slice() else {
        panic!("one event in, one out");
    };
    assert!(prepared.payload.len() <= limits.max_payload_bytes);
    assert!(stream.aggregate_type.len() <= limits.max_name_bytes);
    let read: serde_json::Value = serde_json::from_str(&prepared.payload).expect("payload JSON");
    assert!(!holds_nul(&read));
    assert_eq!(read, payload);
    let read: Metadata = serde_json::from_str(&prepared.metadata).expect("metadata JSON");
    assert!(
        read.iter()
            .all(|(key, value)| !key.contains('\0') && !value.contains('\0'))
    );
    assert_eq!(read, metadata);
});
