//! The JSONL event format people write by hand: one object per line, used by
//! `eventhost append --file` and by the plugin test harness's fixtures.
//!
//! `{"aggregate_type": "order", "aggregate_id": "o-1", "event_type": "order.created",
//!   "payload": {...}, "metadata": {"k": "v"}, "id": "<uuid>", "expected_version": 0}`;
//! `metadata`, `id` and `expected_version` (a number, "any" or "no-stream") are optional.

use std::io::BufRead;

use serde::Deserialize;
use uuid::Uuid;

use crate::event::{ExpectedVersion, Metadata, NewEvent, StreamId};

/// One line of event input.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// Any JSON value.
    pub payload: serde_json::Value,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default, deserialize_with = "deserialize_expected_version")]
    #[schema(value_type = WrittenExpectedVersion)]
    pub expected_version: ExpectedVersion,
    /// Where the line is in its input, counting from 1 (0 for an event not read from one).
    #[serde(skip)]
    pub line: usize,
}

impl EventLine {
    pub fn stream(&self) -> StreamId {
        StreamId::new(&self.aggregate_type, &self.aggregate_id)
    }

    pub fn new_event(&self) -> NewEvent {
        NewEvent {
            id: self.id,
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// A line of input that is not a valid event.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("cannot read input: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads every line before returning, so a bad line is found before anything is written.
/// Blank lines are skipped; line numbers in errors count from 1.
pub fn read_event_lines(reader: impl BufRead) -> Result<Vec<EventLine>, InputError> {
    let mut lines = Vec::new();
    for (index, text) in reader.lines().enumerate() {
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let line = index + 1;
        let mut event: EventLine =
            serde_json::from_str(&text).map_err(|error| InputError::Invalid {
                line,
                message: error.to_string(),
            })?;
        event.line = line;
        if event.aggregate_type.is_empty()
            || event.aggregate_id.is_empty()
            || event.event_type.is_empty()
        {
            return Err(InputError::Invalid {
                line,
                message: "aggregate_type, aggregate_id and event_type must not be empty".into(),
            });
        }
        lines.push(event);
    }
    Ok(lines)
}

/// Parses an expected version as people write it: `any`, `no-stream`, or a version number
/// (0 meaning no stream).
pub fn parse_expected_version(text: &str) -> Result<ExpectedVersion, String> {
    match text {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        number => match number.parse::<u64>() {
            Ok(0) => Ok(ExpectedVersion::NoStream),
            Ok(version) => Ok(ExpectedVersion::Exact(version)),
            Err(_) => Err(format!(
                "expected version must be `any`, `no-stream` or a number, got {text:?}"
            )),
        },
    }
}

/// An expected version as people write it: a number, `"any"` or `"no-stream"` (what
/// [`deserialize_expected_version`] reads, and the API documents).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum WrittenExpectedVersion {
    /// The version the stream must be at (0: it must not exist).
    Number(u64),
    /// `any` or `no-stream`.
    Word(String),
}

/// Reads an expected version written as a number, `"any"` or `"no-stream"` (serde's
/// `deserialize_with` for input formats people write).
pub fn deserialize_expected_version<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ExpectedVersion, D::Error> {
    match WrittenExpectedVersion::deserialize(deserializer)? {
        WrittenExpectedVersion::Number(number) => parse_expected_version(&number.to_string()),
        WrittenExpectedVersion::Word(word) => parse_expected_version(&word),
    }
    .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_optional_fields_and_blank_lines() {
        let input = concat!(
            r#"{"aggregate_type":"order","aggregate_id":"o-1","event_type":"order.created","payload":{"n":1}}"#,
            "\n\n",
            r#"{"aggregate_type":"order","aggregate_id":"o-1","event_type":"order.paid","payload":null,"expected_version":1,"metadata":{"k":"v"}}"#,
            "\n"
        );
        let lines = read_event_lines(input.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].line, lines[1].line), (1, 3));
        assert_eq!(lines[0].expected_version, ExpectedVersion::Any);
        assert_eq!(lines[1].expected_version, ExpectedVersion::Exact(1));
        assert_eq!(lines[1].metadata["k"], "v");
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let input = "{\"aggregate_type\":\"a\",\"aggregate_id\":\"1\",\"event_type\":\"t\",\"payload\":1}\n{oops\n";
        let error = read_event_lines(input.as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with("line 2:"), "{error}");
        let unknown = "{\"aggregate_type\":\"a\",\"aggregate_id\":\"1\",\"event_type\":\"t\",\"payload\":1,\"extra\":2}";
        assert!(read_event_lines(unknown.as_bytes()).is_err());
    }

    #[test]
    fn expected_versions_read_as_words_or_numbers() {
        assert_eq!(parse_expected_version("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected_version("0"), Ok(ExpectedVersion::NoStream));
        assert_eq!(
            parse_expected_version("no-stream"),
            Ok(ExpectedVersion::NoStream)
        );
        assert_eq!(parse_expected_version("7"), Ok(ExpectedVersion::Exact(7)));
        assert!(parse_expected_version("seven").is_err());
    }
}
