//! What can go wrong in the store, in terms a caller can act on.

use crate::event::{ExpectedVersion, StreamId, Version};

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

    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("stored data is corrupt: {0}")]
    Corrupt(String),

    #[error("database error")]
    Database(#[from] sqlx::Error),
}
