//! Constructors for [`HandlerError`] and the conversion that lets `?` turn a [`HostError`]
//! into one.
//!
//! The conversion decides retryability by what a retry of the same batch could change:
//! a conflict or an unavailable host may clear up; invalid input or an exceeded cap will not.

use crate::{ExpectedVersion, HandlerError, HostError, VersionConflict};

impl HandlerError {
    /// A failure that retrying the same batch may cure (a timeout, a lost race).
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that will happen again on every retry (a payload that does not decode):
    /// the host goes straight to isolating the poison event.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<HostError> for HandlerError {
    fn from(error: HostError) -> Self {
        match error {
            HostError::Conflict(conflict) => HandlerError::transient(conflict_message(&conflict)),
            HostError::Unavailable(why) => {
                HandlerError::transient(format!("host unavailable: {why}"))
            }
            HostError::Invalid(why) => HandlerError::permanent(format!("rejected by host: {why}")),
            HostError::LimitExceeded(why) => {
                HandlerError::permanent(format!("host limit exceeded: {why}"))
            }
        }
    }
}

fn conflict_message(conflict: &VersionConflict) -> String {
    let expected = match conflict.expected {
        ExpectedVersion::Any => "any version".to_string(),
        ExpectedVersion::NoStream => "no stream".to_string(),
        ExpectedVersion::Exact(version) => format!("version {version}"),
    };
    format!(
        "version conflict on stream {}/{}: expected {expected}, found version {}",
        conflict.stream.aggregate_type, conflict.stream.aggregate_id, conflict.actual
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamId;

    #[test]
    fn conflict_and_unavailable_are_retryable_invalid_and_limits_are_not() {
        let conflict = HostError::Conflict(VersionConflict {
            stream: StreamId::new("shipment", "o-1"),
            expected: ExpectedVersion::NoStream,
            actual: 1,
        });
        let conflict = HandlerError::from(conflict);
        assert!(conflict.retryable);
        assert_eq!(
            conflict.message,
            "version conflict on stream shipment/o-1: expected no stream, found version 1"
        );
        assert!(HandlerError::from(HostError::Unavailable("timeout".into())).retryable);
        assert!(!HandlerError::from(HostError::Invalid("bad key".into())).retryable);
        assert!(!HandlerError::from(HostError::LimitExceeded("events".into())).retryable);
    }
}
