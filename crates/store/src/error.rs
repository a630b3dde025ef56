//! What can go wrong in the store, in terms a caller can act on.

use eventhost_domain::{AppendError, ExpectedVersion, StreamId, Version};
use sqlx::error::DatabaseError;

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

    /// The batch's daemon no longer holds the subscription's lease (it expired, or another
    /// daemon took it): the batch must be dropped and the daemon stop running it.
    #[error("this daemon no longer holds the lease of subscription {subscription}")]
    LeaseLost { subscription: String },

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

    /// The SQLite database (or its folder, where its journal lives) cannot be written.
    #[error(
        "the SQLite database {path} is read-only here: eventhost needs to write it and its folder ({source})"
    )]
    ReadOnly {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot create the SQLite directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The SQLite database file was deleted or replaced while the store had it open: what
    /// is written now would be lost with the unlinked file, so nothing more is.
    #[error(
        "the SQLite database file {path} was deleted or replaced while it was open: nothing more is written to it (put it back, or restart to start a new database there)"
    )]
    FileGone { path: String },

    #[error(
        "another daemon runs on the SQLite database {database} ({holder}): SQLite takes one daemon; stop it first, or run several daemons on PostgreSQL"
    )]
    DaemonRunning { database: String, holder: String },

    #[error("cannot take the daemon lock {path}")]
    DaemonLock {
        path: String,
        #[source]
        source: std::io::Error,
    },

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

    /// Whether the database could not be reached or used (a restart, a stop, a terminated
    /// session, the network, no connection free in time; a full disk, a read-only or lost
    /// file): the same call may succeed later. Whether a commit interrupted this way landed
    /// is unknown.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::FileGone { .. } => true,
            Self::Database { source, .. } => unreachable_database(source),
            Self::InAppend { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }

    /// Whether the database may be read but not written: a full disk, a read-only file, a
    /// file deleted or replaced (see [`StoreError::is_unavailable`]).
    pub fn is_unwritable(&self) -> bool {
        match self {
            Self::FileGone { .. } | Self::ReadOnly { .. } => true,
            Self::Database { source, .. } => matches!(sqlite_primary_code(source), Some(8 | 13)),
            Self::InAppend { source, .. } => source.is_unwritable(),
            _ => false,
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

/// See [`StoreError::is_unavailable`]. PostgreSQL's SQLSTATEs: class 08 (connection
/// exceptions), 57P01-57P03 (the server is shutting down, crashed, or not yet accepting
/// connections), 53300 (too many connections). SQLite's primary result codes: 8 (read-only),
/// 10 (I/O error), 13 (full), 14 (cannot open).
fn unreachable_database(error: &sqlx::Error) -> bool {
    if let Some(code) = sqlite_primary_code(error) {
        return matches!(code, 8 | 10 | 13 | 14);
    }
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// SQLite's primary result code of an error SQLite returned.
fn sqlite_primary_code(error: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    let sqlite = database.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    let code = sqlite.code()?.parse::<i32>().ok()?;
    Some(code & 0xff)
}
