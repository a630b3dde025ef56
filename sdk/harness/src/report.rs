//! What a harness run prints, and the expectations file it can be checked against.
//!
//! Expectations (JSON; every section optional, an omitted section is not checked):
//! ```json
//! {
//!   "state":   { "<subscription>": { "<key>": <value>, ... } },
//!   "emitted": [ { "aggregate_type": "...", "aggregate_id": "...", "event_type": "...",
//!                  "payload": { ... }, "metadata": { ... } } ],
//!   "messages": [ { "sink": "...", "key": "...", "headers": [["name", "value"]],
//!                   "body": { ... } } ],
//!   "errors":  [ "<text each error message contains>" ]
//! }
//! ```
//! - `state`: each listed subscription's state must hold exactly the listed keys. Values are
//!   compared as parsed JSON when the stored value parses (so formatting differences between
//!   languages do not matter), else as strings.
//! - `emitted`: the plugin's emitted events, in order, exactly that many; only the fields an
//!   entry gives are compared (payload and metadata as JSON).
//! - `messages`: the messages for sinks the committed batches asked for, in order, exactly
//!   that many; only the fields an entry gives are compared (`body` as JSON when the body
//!   parses as JSON, else as text; `key` null for none).
//! - `errors`: exactly that many failures, in order, each containing the given text;
//!   `[]` means the plugin must not fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use eventhost_domain::message::BodyText;
use eventhost_domain::{Event, Message, Metadata};
use eventhost_runtime::PluginInfo;

use crate::driver::{HandlerFailure, Harness, SubscriptionLog};

/// What the plugin did, as printed by `eventhost test`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub plugin: PluginInfo,
    /// Events the plugin emitted, as stored.
    pub emitted: Vec<Event>,
    /// Messages for sinks, in commit order: recorded, never sent.
    pub messages: Vec<Message>,
    /// Final state per subscription; values shown as JSON when they parse, else as strings.
    pub state: BTreeMap<String, BTreeMap<String, Value>>,
    pub logs: Vec<SubscriptionLog>,
    pub errors: Vec<HandlerFailure>,
    /// How many `handle` calls were made.
    pub batches: usize,
}

impl Report {
    pub fn of(harness: &Harness) -> Self {
        let info = harness.plugin().info().clone();
        let state = info
            .subscriptions
            .iter()
            .map(|subscription| {
                let values = harness
                    .state(&subscription.name)
                    .into_iter()
                    .map(|(key, value)| (key, parsed(&value)))
                    .collect();
                (subscription.name.clone(), values)
            })
            .collect();
        let run = harness.run_so_far();
        Self {
            plugin: info,
            emitted: run.emitted.clone(),
            messages: run.messages.clone(),
            state,
            logs: run.logs.clone(),
            errors: run.errors.clone(),
            batches: run.batches,
        }
    }
}

/// A stored state value as JSON: parsed when it is JSON, a string otherwise.
pub fn parsed(value: &str) -> Value {
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
}

/// What a run should have produced. See the module documentation for the format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub state: Option<BTreeMap<String, BTreeMap<String, Value>>>,
    #[serde(default)]
    pub emitted: Option<Vec<ExpectedEvent>>,
    #[serde(default)]
    pub messages: Option<Vec<ExpectedMessage>>,
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

/// A message as expected; fields left out are not compared.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedMessage {
    pub sink: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub key: Option<Value>,
    pub headers: Option<Vec<(String, String)>>,
    pub body: Option<Value>,
}

/// A field that is present, even as `null`, is `Some`: `"key": null` expects no key.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// An emitted event as expected; fields left out are not compared.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedEvent {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub payload: Option<Value>,
    pub metadata: Option<Metadata>,
}

impl Expectations {
    /// Every way `report` differs from these expectations, one line each (empty: it matches).
    pub fn differences(&self, report: &Report) -> Vec<String> {
        let mut differences = Vec::new();
        if let Some(state) = &self.state {
            differences.extend(state_differences(state, &report.state));
        }
        if let Some(emitted) = &self.emitted {
            differences.extend(emitted_differences(emitted, &report.emitted));
        }
        if let Some(messages) = &self.messages {
            differences.extend(message_differences(messages, &report.messages));
        }
        if let Some(errors) = &self.errors {
            differences.extend(error_differences(errors, &report.errors));
        }
        differences
    }
}

fn state_differences(
    expected: &BTreeMap<String, BTreeMap<String, Value>>,
    actual: &BTreeMap<String, BTreeMap<String, Value>>,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (subscription, expected_keys) in expected {
        let Some(actual_keys) = actual.get(subscription) else {
            differences.push(format!(
                "state.{subscription}: the plugin has no such subscription"
            ));
            continue;
        };
        for (key, value) in expected_keys {
            match actual_keys.get(key) {
                Some(found) if found == value => {}
                Some(found) => differences.push(format!(
                    "state.{subscription}[{key:?}]: expected {value}, got {found}"
                )),
                None => differences.push(format!(
                    "state.{subscription}[{key:?}]: expected {value}, but the key is missing"
                )),
            }
        }
        for (key, found) in actual_keys
            .iter()
            .filter(|(key, _)| !expected_keys.contains_key(*key))
        {
            differences.push(format!(
                "state.{subscription}[{key:?}]: not expected, got {found}"
            ));
        }
    }
    differences
}

fn emitted_differences(expected: &[ExpectedEvent], actual: &[Event]) -> Vec<String> {
    let metadata = |metadata: &Metadata| serde_json::to_value(metadata).unwrap_or(Value::Null);
    let text = |text: &Option<String>| text.clone().map(Value::String);
    list_differences("emitted", "events", expected, actual, |want, got| {
        vec![
            (
                "aggregate_type",
                text(&want.aggregate_type),
                Value::String(got.aggregate_type.clone()),
            ),
            (
                "aggregate_id",
                text(&want.aggregate_id),
                Value::String(got.aggregate_id.clone()),
            ),
            (
                "event_type",
                text(&want.event_type),
                Value::String(got.event_type.clone()),
            ),
            (
                "payload",
                want.payload.clone(),
                got.payload.value().unwrap_or(Value::Null),
            ),
            (
                "metadata",
                want.metadata.as_ref().map(metadata),
                metadata(&got.metadata),
            ),
        ]
    })
}

fn message_differences(expected: &[ExpectedMessage], actual: &[Message]) -> Vec<String> {
    let pairs = |headers: &[(String, String)]| serde_json::to_value(headers).unwrap_or(Value::Null);
    list_differences("messages", "messages", expected, actual, |want, got| {
        vec![
            (
                "sink",
                want.sink.clone().map(Value::String),
                Value::String(got.sink.clone()),
            ),
            (
                "key",
                want.key.clone(),
                got.key.clone().map_or(Value::Null, Value::String),
            ),
            (
                "headers",
                want.headers.as_deref().map(pairs),
                pairs(&got.headers),
            ),
            (
                "body",
                want.body.clone(),
                parsed(&BodyText(&got.body).to_string()),
            ),
        ]
    })
}

/// Compares two lists entry by entry: the count, then each field an expected entry gives
/// (`fields` returns name, expected value if given, actual value).
fn list_differences<W, G>(
    section: &str,
    noun: &str,
    expected: &[W],
    actual: &[G],
    fields: impl Fn(&W, &G) -> Vec<(&'static str, Option<Value>, Value)>,
) -> Vec<String> {
    let mut differences = Vec::new();
    if expected.len() != actual.len() {
        differences.push(format!(
            "{section}: expected {} {noun}, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        for (field, want, got) in fields(want, got) {
            if let Some(want) = want.filter(|want| *want != got) {
                differences.push(format!(
                    "{section}[{index}].{field}: expected {want}, got {got}"
                ));
            }
        }
    }
    differences
}

fn error_differences(expected: &[String], actual: &[HandlerFailure]) -> Vec<String> {
    let mut differences = Vec::new();
    if expected.len() != actual.len() {
        let messages: Vec<&str> = actual
            .iter()
            .map(|failure| failure.error.as_str())
            .collect();
        differences.push(format!(
            "errors: expected {}, got {}: {messages:?}",
            expected.len(),
            actual.len()
        ));
    }
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        if !got.error.contains(want.as_str()) {
            differences.push(format!(
                "errors[{index}]: expected a message containing {want:?}, got {:?}",
                got.error
            ));
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(values: Value) -> BTreeMap<String, BTreeMap<String, Value>> {
        serde_json::from_value(values).unwrap()
    }

    #[test]
    fn state_values_compare_as_json_not_as_text() {
        let stored = r#"{ "total_cents" : 1500, "status":"paid" }"#;
        let actual = state(json!({"totals": {"order/o-1": parsed(stored)}}));
        let expected =
            state(json!({"totals": {"order/o-1": {"status": "paid", "total_cents": 1500}}}));
        assert!(state_differences(&expected, &actual).is_empty());
    }

    #[test]
    fn wrong_missing_and_unexpected_keys_are_each_reported() {
        let actual = state(json!({"totals": {"a": 1, "c": 3}}));
        let expected = state(json!({"totals": {"a": 2, "b": 2}}));
        let differences = state_differences(&expected, &actual);
        assert_eq!(differences.len(), 3, "{differences:?}");
    }
}
