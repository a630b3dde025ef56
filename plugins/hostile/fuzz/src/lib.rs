//! hostile-fuzz: a guest whose output is whatever its input says. Each event's payload is
//! `{"script": "<hex>"}`; the bytes are a program of host calls with arguments taken from
//! the bytes that follow: emits (any stream, expected version, event type, payload text, id,
//! metadata), state writes, reads and scans, log lines at any level, raw bytes on stdout and
//! stderr, deliveries, and the batch's result. Strings may hold NUL, invalid JSON, anything.
//! The fuzz target `guest_output` drives it through the harness with arbitrary bytes: the
//! host must turn every output into effects or one error, and never panic.

use eventhost_sdk::bindings::eventhost::plugin::host;
use eventhost_sdk::{
    Event, ExpectedVersion, HandlerError, Level, Message, NewEvent, Plugin, PluginInfo, StreamId,
    Subscription,
};
use std::io::Write;

struct Fuzz;

/// The script's bytes, read from the front.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    /// A length-prefixed run of bytes (the length byte times 4, so long strings are cheap
    /// to reach).
    fn bytes(&mut self) -> Vec<u8> {
        let length = usize::from(self.byte().unwrap_or(0)) * 4;
        let length = length.min(self.0.len());
        let (taken, rest) = self.0.split_at(length);
        self.0 = rest;
        taken.to_vec()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn number(&mut self) -> u64 {
        u64::from(self.byte().unwrap_or(0))
    }
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter_map(|c| (c as char).to_digit(16).map(|d| d as u8))
        .collect();
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair.get(1).copied().unwrap_or(0))
        .collect()
}

fn level(byte: u64) -> Level {
    match byte % 5 {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        _ => Level::Error,
    }
}

fn run(script: &mut Script) -> Result<(), HandlerError> {
    while let Some(op) = script.byte() {
        match op % 10 {
            0 => {
                let stream = StreamId {
                    aggregate_type: script.text(),
                    aggregate_id: script.text(),
                };
                let expected = match script.number() % 3 {
                    0 => ExpectedVersion::Any,
                    1 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact(script.number()),
                };
                let events = (0..=script.number() % 3)
                    .map(|_| NewEvent {
                        id: (script.number() % 2 == 1).then(|| script.text()),
                        event_type: script.text(),
                        payload: script.text(),
                        metadata: vec![(script.text(), script.text())],
                    })
                    .collect::<Vec<_>>();
                let _ = host::emit(&stream, expected, &events);
            }
            1 => {
                let _ = host::state_set(&script.text(), &script.text());
            }
            2 => {
                let _ = host::state_get(&script.text());
            }
            3 => {
                let _ = host::state_scan(&script.text(), None, script.number() as u32 * 100);
            }
            4 => host::log(level(script.number()), &script.text()),
            5 => {
                let _ = std::io::stdout().write_all(&script.bytes());
            }
            6 => {
                let _ = std::io::stderr().write_all(&script.bytes());
            }
            7 => {
                let message = Message {
                    body: script.bytes(),
                    headers: vec![(script.text(), script.text())],
                    key: (script.number() % 2 == 1).then(|| script.text()),
                };
                let _ = host::deliver(&script.text(), &message);
            }
            8 => {
                let _ = host::state_delete(&script.text());
            }
            _ => {
                return Err(HandlerError {
                    message: script.text(),
                    retryable: script.number() % 2 == 1,
                });
            }
        }
    }
    Ok(())
}

impl Plugin for Fuzz {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-fuzz", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        for event in &batch {
            let payload: eventhost_sdk::serde_json::Value = event.payload()?;
            let bytes = hex(payload["script"].as_str().unwrap_or_default());
            run(&mut Script(&bytes))?;
        }
        Ok(())
    }
}

eventhost_sdk::export_plugin!(Fuzz);
