//! Messages for the operator's sinks: what a batch asks the host to deliver, and the rules a
//! message must follow before it is stored.
//!
//! A message commits with its batch and is sent afterwards, at least once, under its `id`:
//! the idempotency key receivers use to drop the copies a retry may bring. The rules here
//! are the ones every sink can honour: header names that are HTTP tokens, values without
//! line breaks, and none of the headers the host sets itself.

use serde::Serialize;

/// The most headers one message carries.
pub const MAX_HEADERS: usize = 64;

/// The most bytes of one header value or of a message's ordering key.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;

/// The most bytes of one header name.
pub const MAX_HEADER_NAME_BYTES: usize = 256;

/// Headers the host sets on every delivery (compared without case); a message cannot set
/// them, nor any `nats-` header, which NATS JetStream reads as instructions.
pub const RESERVED_HEADERS: &[&str] = &[
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
];

/// A message a committed batch (or a relay) asks to be delivered to a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Message {
    /// The idempotency key, unique per sink: `<subscription>:<position>:<index>` for a
    /// plugin's message, the event's id for a relay's.
    pub id: String,
    /// The sink's name, as the operator's configuration gives it.
    pub sink: String,
    /// Messages with the same key reach the sink in commit order.
    pub key: Option<String>,
    /// `[name, value]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// UTF-8 text as is; other bytes as `base64:...`.
    #[serde(serialize_with = "body_text")]
    #[schema(value_type = String)]
    pub body: Vec<u8>,
}

impl Message {
    /// What the message weighs against the per-message and per-batch byte caps.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        (self.body.len() + headers + self.key.as_ref().map_or(0, String::len)) as u64
    }
}

/// The body as text when it is UTF-8 (most are JSON), else as its bytes' lowercase hex with
/// a `hex:` prefix: shown by `eventhost test` and `deliveries list --json`.
fn body_text<S: serde::Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&BodyText(body))
}

/// A message body, printable.
pub struct BodyText<'a>(pub &'a [u8]);

impl std::fmt::Display for BodyText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => f.write_str(text),
            Err(_) => {
                f.write_str("hex:")?;
                self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

/// Why a message cannot be stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("a message carries at most {MAX_HEADERS} headers; this one has {0}")]
    TooManyHeaders(usize),
    #[error("header name {0:?} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)")]
    HeaderName(String),
    #[error("header {0:?} is set by the host and cannot be set by a message")]
    ReservedHeader(String),
    #[error("the value of header {0:?} holds a line break or another control character")]
    HeaderValue(String),
    #[error("the value of header {name:?} is {bytes} bytes; the cap is {MAX_HEADER_VALUE_BYTES}")]
    LongHeaderValue { name: String, bytes: usize },
    #[error("the ordering key holds a control character")]
    KeyCharacters,
    #[error("the ordering key is {0} bytes; the cap is {MAX_HEADER_VALUE_BYTES}")]
    LongKey(usize),
}

/// Checks a message's headers and ordering key against the rules every sink can honour.
pub fn check(headers: &[(String, String)], key: Option<&str>) -> Result<(), MessageError> {
    if headers.len() > MAX_HEADERS {
        return Err(MessageError::TooManyHeaders(headers.len()));
    }
    for (name, value) in headers {
        check_header(name, value)?;
    }
    if let Some(key) = key {
        if key.len() > MAX_HEADER_VALUE_BYTES {
            return Err(MessageError::LongKey(key.len()));
        }
        if key.chars().any(char::is_control) {
            return Err(MessageError::KeyCharacters);
        }
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), MessageError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES || !name.chars().all(token) {
        return Err(MessageError::HeaderName(shortened(name)));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("nats-") {
        return Err(MessageError::ReservedHeader(name.to_owned()));
    }
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(MessageError::LongHeaderValue {
            name: name.to_owned(),
            bytes: value.len(),
        });
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(MessageError::HeaderValue(name.to_owned()));
    }
    Ok(())
}

/// At most 64 characters of a rejected name, so that an error stays one short line.
fn shortened(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), value.to_owned())]
    }

    #[test]
    fn headers_that_could_split_a_request_or_pose_as_the_host_are_refused() {
        assert_eq!(
            check(&header("content-type", "application/json"), Some("o-1")),
            Ok(())
        );
        assert_eq!(
            check(&header("x-note", "a\r\nx-injected: 1"), None),
            Err(MessageError::HeaderValue("x-note".to_owned()))
        );
        assert_eq!(
            check(&header("x bad", "v"), None),
            Err(MessageError::HeaderName("x bad".to_owned()))
        );
        for reserved in [
            "Idempotency-Key",
            "webhook-signature",
            "Nats-Msg-Id",
            "nats-expected-stream",
        ] {
            assert_eq!(
                check(&header(reserved, "v"), None),
                Err(MessageError::ReservedHeader(reserved.to_owned()))
            );
        }
        assert_eq!(check(&[], Some("a\nb")), Err(MessageError::KeyCharacters));
        let many = vec![("x".to_owned(), "v".to_owned()); MAX_HEADERS + 1];
        assert_eq!(
            check(&many, None),
            Err(MessageError::TooManyHeaders(MAX_HEADERS + 1))
        );
    }

    #[test]
    fn a_body_prints_as_text_when_it_is_utf8_and_as_hex_otherwise() {
        assert_eq!(BodyText(b"{\"a\":1}").to_string(), "{\"a\":1}");
        assert_eq!(BodyText(&[0xff, 0x00, 0x1a]).to_string(), "hex:ff001a");
    }
}
