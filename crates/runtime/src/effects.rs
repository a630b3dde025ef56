//! What one batch did: the buffer the dispatcher commits in one transaction (or discards).
//!
//! Emitted events stay grouped per `emit` call with the stream and expected version the plugin
//! gave, because each group is one atomic append. State is the batch's final word per key
//! (`None`: deleted), so state written twice in a batch is committed once. Messages for sinks
//! keep their call order, which is the order a sink receives those with the same key.

use std::collections::BTreeMap;

use serde::Serialize;

use eventhost_domain::{ExpectedVersion, Message, NewEvent, StreamId};

/// The buffered effects of one successful `handle` call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Effects {
    /// One entry per `emit` call, in call order.
    pub emitted: Vec<Emit>,
    /// The final value of every key the batch wrote; `None` means deleted.
    pub state: BTreeMap<String, Option<String>>,
    /// The messages the batch asked to deliver, in call order.
    pub messages: Vec<Message>,
    /// Everything the plugin logged (through `log`, stdout or stderr), in order.
    pub logs: Vec<LogLine>,
    /// Log lines dropped because the batch's log budget was spent.
    pub dropped_log_lines: u64,
}

/// One `emit` call: events to append atomically to one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emit {
    pub stream: StreamId,
    /// Checked by the host against the stream as read plus earlier emits of the batch; the
    /// store checks it again at commit.
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// A line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `log` host call.
    Log,
    /// The guest's standard output (logged at `info`).
    Stdout,
    /// The guest's standard error (logged at `warn`).
    Stderr,
}
