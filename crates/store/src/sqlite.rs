//! The embedded store: one SQLite file in WAL mode, used when no server is configured.
//!
//! Appends run in `BEGIN IMMEDIATE` transactions, so writers (in this process or another)
//! take turns and position order is commit order: a subscription checkpoints on the
//! position alone. The file's folder is created on first use.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use tokio::sync::watch;
use uuid::Uuid;

use eventhost_domain::append::{StoredId, check_version, duplicate_outcome, prepare};

use super::{
    Appended, AppendedEvent, BatchEntry, BatchLimit, Checkpoint, EventStore, Filter, PendingAppend,
    PreparedEvent, Pulse, Signal, StoreError, StoreLimits, collect_until, entry_bytes,
    from_sql_int, prepare_all, sql_int, sql_limit,
};
use eventhost_domain::{
    Event, ExpectedVersion, Metadata, NewEvent, Payload, Position, StreamId, Version,
};

/// A pool of connections to one SQLite database file (or one in-memory database).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    limits: StoreLimits,
    /// Bumped after every commit that appends, so a dispatcher in this process need not
    /// wait for its next poll. A watch channel: a receiver never misses that it changed.
    appended: Signal,
    /// Bumped after every commit that enqueues messages for sinks, and after every retry an
    /// operator asks for, so that a delivery worker in this process sends them at once.
    enqueued: Signal,
}

macro_rules! event_columns {
    () => {
        "position, id, aggregate_type, aggregate_id, version, event_type, payload, metadata, \
         recorded_at"
    };
}

/// The subscription read: `?1` is the position after which to read, `?2` the limit; the
/// filters take JSON arrays of names.
macro_rules! batch_query {
    ($filter:literal) => {
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > ?1 ",
            $filter,
            " ORDER BY position LIMIT ?2"
        )
    };
}

mod deliveries;
// Declared after the column macros, which it uses.
mod subscriptions;

impl SqliteStore {
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Opens (creating if needed) the database at `url` and runs pending migrations.
    pub async fn connect(url: &str, limits: StoreLimits) -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
                target: format!("SQLite database {url:?} (the URL does not parse)"),
                source,
            })?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let path = options.get_filename().to_path_buf();
        if !in_memory {
            create_parent_dir(&path)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // Several processes opening a new file at once race to switch it to WAL and to
        // migrate it (sqlx has no migration lock on SQLite); the loser tries again. Each
        // migration is one transaction, so a retry finds it applied and goes on.
        let mut attempt = 1;
        let pool = loop {
            match open(&options, in_memory, &path).await {
                Ok(pool) => break pool,
                Err(error) if attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(%error, attempt, "opening the database failed; trying again");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(Self {
            pool,
            limits,
            appended: Signal::new(),
            enqueued: Signal::new(),
        })
    }

    /// Changes after each commit in this process that appends events.
    pub fn appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Changes after each commit in this process that enqueues messages, and each retry.
    pub fn enqueues(&self) -> watch::Receiver<u64> {
        self.enqueued.subscribe()
    }

    pub(super) fn signal_enqueued(&self) {
        self.enqueued.raise();
    }

    pub(super) fn signal_append(&self) {
        self.appended.raise();
    }
}

/// How many times opening may meet another process opening the same new file.
const OPEN_ATTEMPTS: u32 = 8;

/// A pool on the database, migrated.
async fn open(
    options: &SqliteConnectOptions,
    in_memory: bool,
    path: &Path,
) -> Result<SqlitePool, StoreError> {
    let pool = SqlitePoolOptions::new()
        // Each connection to `:memory:` would be a database of its own.
        .max_connections(if in_memory { 1 } else { 4 })
        .connect_with(options.clone())
        .await
        .map_err(|source| StoreError::Connect {
            target: format!("SQLite database {}", path.display()),
            source,
        })?;
    if let Err(error) = sqlx::migrate!("../../migrations/sqlite").run(&pool).await {
        pool.close().await;
        return Err(error.into());
    }
    Ok(pool)
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn parse_id(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text)
        .map_err(|_| StoreError::Corrupt(format!("event id {text:?} is not a UUID")))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

/// Appends inside `conn`'s open `BEGIN IMMEDIATE` transaction (an append of its own, or a
/// batch's commit). The caller commits.
pub(super) async fn append_in(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    prepared: &[PreparedEvent],
) -> Result<Appended, StoreError> {
    let ids: Vec<String> = prepared.iter().map(|event| event.id.to_string()).collect();
    let ids_json = serde_json::to_string(&ids)
        .map_err(|error| StoreError::Invalid(format!("event ids: {error}")))?;
    let stored: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, aggregate_type, aggregate_id, version, position FROM events
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&ids_json)
    .fetch_all(&mut *conn)
    .await?;
    if !stored.is_empty() {
        let stored = stored
            .into_iter()
            .map(|(id, aggregate_type, aggregate_id, version, position)| {
                Ok(StoredId {
                    id: parse_id(&id)?,
                    stream: StreamId::new(aggregate_type, aggregate_id),
                    version: from_sql_int(version),
                    position: from_sql_int(position),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        return Ok(duplicate_outcome(stream, prepared.len(), stored)?);
    }

    let actual: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM streams WHERE aggregate_type = ?1 AND aggregate_id = ?2",
    )
    .bind(&stream.aggregate_type)
    .bind(&stream.aggregate_id)
    .fetch_optional(&mut *conn)
    .await?;
    let actual = actual.map_or(0, from_sql_int);
    check_version(stream, expected, actual)?;

    let recorded_at = Utc::now();
    let mut appended = Appended {
        events: Vec::with_capacity(prepared.len()),
        duplicate: false,
    };
    for (offset, event) in (1..).zip(prepared) {
        let version = actual + offset;
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events
                 (id, aggregate_type, aggregate_id, version, event_type, payload, metadata, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             RETURNING position",
        )
        .bind(event.id.to_string())
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(sql_int(version, "version")?)
        .bind(&event.event_type)
        .bind(&event.payload)
        .bind(&event.metadata)
        .bind(recorded_at)
        .fetch_one(&mut *conn)
        .await?;
        appended.events.push(AppendedEvent {
            id: event.id,
            version,
            position: from_sql_int(position),
        });
    }
    sqlx::query(
        "INSERT INTO streams (aggregate_type, aggregate_id, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = excluded.version",
    )
    .bind(&stream.aggregate_type)
    .bind(&stream.aggregate_id)
    .bind(sql_int(appended.last_version(), "version")?)
    .execute(&mut *conn)
    .await?;
    Ok(appended)
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: parse_id(row.try_get("id")?)?,
        position: from_sql_int(row.try_get("position")?),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        version: from_sql_int(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        payload: parse_json(row.try_get("payload")?, "payload")?,
        metadata: parse_json(row.try_get("metadata")?, "metadata")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}

/// A row's event without its payload and metadata, for a row whose content cannot be read:
/// enough to park it.
fn event_without_content(row: &SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: parse_id(row.try_get("id")?)?,
        position: from_sql_int(row.try_get("position")?),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        version: from_sql_int(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        payload: Payload::from_value(&serde_json::Value::Null),
        metadata: Metadata::new(),
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Appended, StoreError> {
        let prepared = prepare(stream, events, self.limits)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let appended = append_in(&mut tx, stream, expected, &prepared).await?;
        if !appended.duplicate {
            tx.commit().await?;
            self.signal_append();
        }
        Ok(appended)
    }

    async fn append_all(&self, appends: &[PendingAppend]) -> Result<Vec<Appended>, StoreError> {
        let prepared = prepare_all(appends, self.limits)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut done = Vec::with_capacity(appends.len());
        for (index, (append, prepared)) in appends.iter().zip(&prepared).enumerate() {
            let appended = append_in(&mut tx, &append.stream, append.expected, prepared)
                .await
                .map_err(|error| error.in_append(index))?;
            done.push(appended);
        }
        tx.commit().await?;
        if done.iter().any(|appended| !appended.duplicate) {
            self.signal_append();
        }
        Ok(done)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM streams WHERE aggregate_type = ?1 AND aggregate_id = ?2",
        )
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(version.map_or(0, from_sql_int))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version >= ?3
             ORDER BY version LIMIT ?4"
        ))
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(sql_int(from_version, "version")?)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = match aggregate_type {
            None => batch_query!(""),
            Some(_) => batch_query!("AND aggregate_type = ?3"),
        };
        let mut query = sqlx::query(sql)
            .bind(sql_int(after, "position")?)
            .bind(sql_limit(limit));
        if let Some(aggregate_type) = aggregate_type {
            query = query.bind(aggregate_type);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_batch(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: impl Into<BatchLimit> + Send,
    ) -> Result<Vec<BatchEntry>, StoreError> {
        let limit = limit.into();
        let by_type = !filter.aggregate_types.is_empty();
        let by_event = !filter.event_types.is_empty();
        let sql = match (by_type, by_event) {
            (false, false) => batch_query!(""),
            (true, false) => {
                batch_query!("AND aggregate_type IN (SELECT value FROM json_each(?3))")
            }
            (false, true) => batch_query!("AND event_type IN (SELECT value FROM json_each(?3))"),
            (true, true) => batch_query!(
                "AND aggregate_type IN (SELECT value FROM json_each(?3))
                 AND event_type IN (SELECT value FROM json_each(?4))"
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(sql_int(after.position(), "position")?)
            .bind(sql_limit(limit.events));
        for (used, names) in [
            (by_type, &filter.aggregate_types),
            (by_event, &filter.event_types),
        ] {
            if used {
                let json = serde_json::to_string(names)
                    .map_err(|error| StoreError::Invalid(format!("filter: {error}")))?;
                query = query.bind(json);
            }
        }
        collect_until(
            query.fetch(&self.pool),
            limit.bytes,
            |row| {
                let (event, defect) = match event_from_row(row) {
                    Ok(event) => (event, None),
                    Err(error) => (event_without_content(row)?, Some(error.to_string())),
                };
                Ok(BatchEntry {
                    checkpoint: Checkpoint::new(0, event.position),
                    event,
                    defect,
                })
            },
            entry_bytes,
        )
        .await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        Ok(self.pulse().await?.head)
    }
}

impl SqliteStore {
    /// The head of the log and the control counter, in one query.
    pub(crate) async fn pulse(&self) -> Result<Pulse, StoreError> {
        let (position, control): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT max(position) FROM events), (SELECT version FROM control WHERE id = 1)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Pulse {
            head: Checkpoint::new(0, position.map_or(0, from_sql_int)),
            control: from_sql_int(control),
        })
    }
}
