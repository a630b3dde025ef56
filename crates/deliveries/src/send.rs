//! One attempt to send one message to one sink, whatever its kind, and how it failed.

use std::time::Duration;

use super::config::{Sink, Target};
use super::http::HttpSender;
use super::nats::NatsSender;
use eventhost_domain::Message;

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    /// Another attempt may succeed (a time-out, a 5xx, a server away).
    pub retryable: bool,
    /// The receiver asked to wait this long first (`Retry-After`).
    pub after: Option<Duration>,
}

impl Failure {
    pub(crate) fn retry(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: true,
            after: None,
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: false,
            after: None,
        }
    }

    pub(crate) fn after(mut self, after: Option<Duration>) -> Self {
        self.after = after;
        self
    }
}

/// Sends messages to one sink.
pub(crate) enum Sender {
    Http(HttpSender),
    Nats(Box<NatsSender>),
}

impl Sender {
    pub(crate) fn new(sink: &Sink) -> Result<Self, String> {
        Ok(match &sink.target {
            Target::Http(target) => Self::Http(HttpSender::new(target.clone(), &sink.delivery)?),
            Target::Nats(target) => {
                Self::Nats(Box::new(NatsSender::new(target.clone(), &sink.delivery)))
            }
        })
    }

    pub(crate) async fn send(&self, message: &Message) -> Result<(), Failure> {
        match self {
            Self::Http(sender) => sender.send(message).await,
            Self::Nats(sender) => sender.send(message).await,
        }
    }
}
