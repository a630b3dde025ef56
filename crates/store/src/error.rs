//! What can go wrong in the store, in terms a caller can act on.

use eventhost_domain::{AppendError, ExpectedVersion, StreamId, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("version conflict on stream {stream}: expected {expected}, actual {actual}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Version,
    },

    /// Some, but not all, of an append's event ids were already stored.
    #[error(
        "{found} of the {total} event ids are already stored; an append is idempotent only when all of its ids were appended together to the same stream"
    )]
    PartialDuplicate { found: usize, total: usize },

    #[error("event {index}: payload is {size} bytes, over the {limit}-byte cap")]
    PayloadTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },

    /// One append of several made in one transaction was refused; none was written.
    #[error("append {index} of the transaction was refused (nothing was written): {source}")]
    InAppend {
        /// Which append, counted from 0.
        index: usize,
        #[source]
        source: Box<StoreError>,
    },

    /// The subscription's checkpoint moved since the batch was read (another daemon
    /// committed it, or an operator reset the subscription): the batch must be dropped.
    #[error("the checkpoint of subscription {subscription} moved while its batch was handled")]
    CheckpointMoved { subscription: String },

    #[error("{0} not found")]
    NotFound(String),

    #[error("invalid input: {0}")]
    Invalid(String),

    #[error(
        "unsupported database URL: expected postgres://... or sqlite://PATH (set --database-url or DATABASE_URL)"
    )]
    UnsupportedUrl,

    #[error("cannot connect to {target} (from --database-url or DATABASE_URL)")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("cannot create the SQLite directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("stored data is corrupt: {0}")]
    Corrupt(String),

    /// The database failed an operation (or refused it, for a reason the caller did not
    /// cause): the message names the operation and the driver's cause.
    #[error("{operation} failed: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// What a database error is said to interrupt until the store method it happened in names
/// its operation ([`StoreError::during`]).
const UNNAMED_OPERATION: &str = "a database call";

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        Self::Database {
            operation: UNNAMED_OPERATION,
            source,
        }
    }
}

impl From<AppendError> for StoreError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Conflict {
                stream,
                expected,
                actual,
            } => Self::Conflict {
                stream,
                expected,
                actual,
            },
            AppendError::PartialDuplicate { found, total } => {
                Self::PartialDuplicate { found, total }
            }
            AppendError::PayloadTooLarge { index, size, limit } => {
                Self::PayloadTooLarge { index, size, limit }
            }
            AppendError::Invalid(message) => Self::Invalid(message),
        }
    }
}

impl StoreError {
    /// The error of the append at `index` of several made in one transaction.
    pub fn in_append(self, index: usize) -> Self {
        Self::InAppend {
            index,
            source: Box::new(self),
        }
    }

    /// Names the operation a database error interrupted, unless a deeper call already did.
    pub fn during(self, operation: &'static str) -> Self {
        match self {
            Self::Database {
                operation: UNNAMED_OPERATION,
                source,
            } => Self::Database { operation, source },
            other => other,
        }
    }
}
