//! The embedded store: one SQLite file in WAL mode, used when no server is configured.
//!
//! Appends run in `BEGIN IMMEDIATE` transactions, so writers (in this process or another)
//! take turns and position order is commit order: a subscription checkpoints on the
//! position alone. The file's folder is created on first use.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use uuid::Uuid;

use eventhost_domain::append::{StoredId, check_version, duplicate_outcome, prepare};

use super::{
    Appended, AppendedEvent, BatchEntry, BatchLimit, Checkpoint, EventStore, Filter, NameKind,
    PendingAppend, PreparedEvent, Pulse, Signal, StoreError, StoreLimits, collect_until,
    entry_bytes, from_sql_int, prepare_all, sql_int, sql_limit,
};
use eventhost_domain::{
    Event, ExpectedVersion, Metadata, NewEvent, Payload, Position, StreamId, StreamPage,
    StreamRead, Version,
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
    /// The database file as opened (none in memory): writes stop once the path no longer
    /// names it.
    file: Option<Arc<OpenedFile>>,
    /// This process's writers take turns here before `BEGIN IMMEDIATE`: queued, each starts
    /// the moment the previous one ends, where SQLite's own busy handler would have it sleep
    /// and try again (1 ms, then longer) while another connection of the pool writes.
    writer: Arc<Mutex<()>>,
}

/// A write transaction, holding this process's turn to write until it ends. Dropped without
/// [`WriteTx::commit`], it rolls back.
pub(super) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A database file by path and identity (device and inode).
#[derive(Debug)]
struct OpenedFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl OpenedFile {
    fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
        let metadata = std::fs::metadata(path)?;
        Ok((metadata.dev(), metadata.ino()))
    }

    /// Fails once `path` names another file, or none: the open one was deleted or replaced.
    fn check(&self) -> Result<(), StoreError> {
        match Self::identity(&self.path) {
            Ok(identity) if identity == self.identity => Ok(()),
            _ => Err(StoreError::FileGone {
                path: self.path.display().to_string(),
            }),
        }
    }
}

macro_rules! event_columns {
    () => {
        "position, id, aggregate_type, aggregate_id, version, event_type, payload, metadata, \
         recorded_at"
    };
}

/// A stream's version: `?1` and `?2` name it.
const STREAM_VERSION_QUERY: &str =
    "SELECT version FROM streams WHERE aggregate_type = ?1 AND aggregate_id = ?2";

/// A stream's events from version `?3`, at most `?4`.
const STREAM_QUERY: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version >= ?3
     ORDER BY version LIMIT ?4"
);

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

/// A filtered read, name by name: each name's rows after the checkpoint on the index that
/// leads with its column (`events_type` or `events_category`, in position order), merged.
/// Given an `IN` list, SQLite either walks the whole log in position order and filters, or
/// sorts every matching row since the checkpoint; name by name it reads only what it
/// returns, and a name no event has costs one index probe. The names are bound, as `?3`
/// onwards, never written into the SQL.
struct ByName<'f> {
    /// `event_type`, or `aggregate_type` when the filter names only aggregate types.
    column: &'static str,
    /// Without repeats.
    names: Vec<&'f str>,
    /// The aggregate types, as a JSON array, when the filter names both kinds.
    checked: Option<String>,
}

impl<'f> ByName<'f> {
    fn of(filter: &'f Filter) -> Result<Option<Self>, StoreError> {
        let unique = |names: &'f [String]| {
            let names: std::collections::BTreeSet<&str> =
                names.iter().map(String::as_str).collect();
            names.into_iter().collect()
        };
        let by_name = match (
            filter.aggregate_types.is_empty(),
            filter.event_types.is_empty(),
        ) {
            (true, true) => return Ok(None),
            (false, true) => Self {
                column: "aggregate_type",
                names: unique(&filter.aggregate_types),
                checked: None,
            },
            (any_aggregate, false) => Self {
                column: "event_type",
                names: unique(&filter.event_types),
                checked: if any_aggregate {
                    None
                } else {
                    Some(
                        serde_json::to_string(&filter.aggregate_types)
                            .map_err(|error| StoreError::Invalid(format!("filter: {error}")))?,
                    )
                },
            },
        };
        Ok(Some(by_name))
    }

    /// The conditions of the `index`th name (from 0), after the position `?1`, for a
    /// statement whose names are bound from the parameter `first` on.
    fn conditions(&self, index: usize, first: usize) -> String {
        let mut conditions = format!("{} = ?{} AND position > ?1", self.column, first + index);
        if self.checked.is_some() {
            conditions.push_str(&format!(
                " AND aggregate_type IN (SELECT value FROM json_each(?{}))",
                first + self.names.len()
            ));
        }
        conditions
    }

    /// The read: `?1` the position after which to read, `?2` the limit.
    fn batch_sql(&self) -> String {
        let each: Vec<String> = (0..self.names.len())
            .map(|index| {
                format!(
                    "SELECT * FROM (SELECT {} FROM events WHERE {} ORDER BY position LIMIT ?2)",
                    event_columns!(),
                    self.conditions(index, 3)
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) ORDER BY position LIMIT ?2",
            each.join(" UNION ALL ")
        )
    }

    /// How many events come after the position `?1`.
    fn count_sql(&self) -> String {
        let each: Vec<String> = (0..self.names.len())
            .map(|index| {
                format!(
                    "(SELECT count(*) FROM events WHERE {})",
                    self.conditions(index, 2)
                )
            })
            .collect();
        format!("SELECT {}", each.join(" + "))
    }

    /// Binds the names and the aggregate types checked, after the statement's other
    /// parameters (two for a read, one for a count).
    fn bind<'q>(
        self,
        mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
        for name in self.names {
            query = query.bind(name);
        }
        if let Some(checked) = self.checked {
            query = query.bind(checked);
        }
        query
    }
}

/// How many events of `filter` come after `after`.
pub(super) async fn count_after(
    pool: &SqlitePool,
    after: Position,
    filter: &Filter,
) -> Result<u64, StoreError> {
    let count: i64 = match ByName::of(filter)? {
        None => {
            sqlx::query_scalar("SELECT count(*) FROM events WHERE position > ?1")
                .bind(sql_int(after, "position")?)
                .fetch_one(pool)
                .await?
        }
        Some(by_name) => {
            let query = sqlx::query(sqlx::AssertSqlSafe(by_name.count_sql()))
                .bind(sql_int(after, "position")?);
            by_name
                .bind(query)
                .try_map(|row: SqliteRow| row.try_get(0))
                .fetch_one(pool)
                .await?
        }
    };
    Ok(from_sql_int(count))
}

pub use daemon_lock::DaemonLock;

mod daemon_lock;
mod deliveries;
#[cfg(test)]
mod plan_tests;
// Declared after the column macros, which it uses.
mod subscriptions;

impl SqliteStore {
    /// The database file, unless the database is in memory.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref().map(|file| file.path.as_path())
    }

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
            let error = match open(&options, in_memory, &path).await {
                Ok(pool) => break pool,
                Err(error) => error,
            };
            if !in_memory && let Some(source) = read_only(&path) {
                tracing::debug!(%error, "opening the database failed");
                return Err(StoreError::ReadOnly {
                    path: path.display().to_string(),
                    source,
                });
            }
            if attempt >= OPEN_ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(%error, attempt, "opening the database failed; trying again");
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            attempt += 1;
        };
        let file = if in_memory {
            None
        } else {
            let identity = OpenedFile::identity(&path).map_err(|source| StoreError::Connect {
                target: format!("SQLite database {}", path.display()),
                source: sqlx::Error::Io(source),
            })?;
            Some(Arc::new(OpenedFile { path, identity }))
        };
        Ok(Self {
            pool,
            limits,
            appended: Signal::new(),
            enqueued: Signal::new(),
            file,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Begins a write transaction once this process's previous writers are done (`BEGIN
    /// IMMEDIATE`: it takes the write lock at once, so two writers never deadlock
    /// upgrading), unless the database file was deleted or replaced since it was opened.
    pub(super) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.writer.clone().lock_owned().await;
        if let Some(file) = &self.file {
            file.check()?;
        }
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the connections (SQLite has nothing pending after a commit).
    pub async fn close(&self) {
        self.pool.close().await;
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
        // SQLite ends a transaction itself when a statement in it fails for a full disk or an
        // I/O error; sqlx then still counts it open (its `ROLLBACK` fails), and the connection
        // could never begin another. The pool's test before each acquire (a ping, behind any
        // rollback still queued) is followed by this check, which replaces such a connection.
        .before_acquire(|connection, _| {
            Box::pin(async move { Ok(!connection.is_in_transaction()) })
        })
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

/// Why the database file, or its folder, cannot be written, if so: asked after opening
/// failed, to say so rather than SQLite's `unable to open database file`. Opening the file
/// for writing changes nothing in it; the folder is probed with a file made and removed.
fn read_only(path: &Path) -> Option<std::io::Error> {
    let denied = |error: &std::io::Error| {
        matches!(
            error.kind(),
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
        )
    };
    if path.exists()
        && let Err(error) = std::fs::OpenOptions::new().write(true).open(path)
        && denied(&error)
    {
        return Some(error);
    }
    let folder = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())?;
    let probe = folder.join(format!(".eventhost-probe-{}", Uuid::new_v4().simple()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(error) if denied(&error) => Some(error),
        Err(_) => None,
    }
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

    let actual: Option<i64> = sqlx::query_scalar(STREAM_VERSION_QUERY)
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
        let mut tx = self.begin_write().await?;
        let appended = append_in(&mut tx, stream, expected, &prepared).await?;
        if !appended.duplicate {
            tx.commit().await?;
            self.signal_append();
        }
        Ok(appended)
    }

    async fn append_all(&self, appends: &[PendingAppend]) -> Result<Vec<Appended>, StoreError> {
        let prepared = prepare_all(appends, self.limits)?;
        let mut tx = self.begin_write().await?;
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
        let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION_QUERY)
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
        let rows = sqlx::query(STREAM_QUERY)
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .bind(sql_int(from_version, "version")?)
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A read transaction, so one snapshot; a query per stream is cheap in process.
    async fn read_streams(
        &self,
        reads: &[StreamRead],
        max_bytes: usize,
    ) -> Result<Vec<StreamPage>, StoreError> {
        use futures::TryStreamExt;
        let mut tx = self.pool.begin().await?;
        let mut pages = Vec::with_capacity(reads.len());
        let mut held = 0usize;
        for read in reads {
            let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION_QUERY)
                .bind(&read.stream.aggregate_type)
                .bind(&read.stream.aggregate_id)
                .fetch_optional(&mut *tx)
                .await?;
            let mut page = StreamPage {
                version: version.map_or(0, from_sql_int),
                events: Vec::new(),
            };
            if held < max_bytes && read.limit > 0 {
                let query = sqlx::query(STREAM_QUERY)
                    .bind(&read.stream.aggregate_type)
                    .bind(&read.stream.aggregate_id)
                    .bind(sql_int(read.from_version, "version")?)
                    .bind(sql_limit(read.limit));
                let mut rows = query.fetch(&mut *tx);
                while held < max_bytes
                    && let Some(row) = rows.try_next().await?
                {
                    let event = event_from_row(&row)?;
                    held = held.saturating_add(event.text_bytes());
                    page.events.push(event);
                }
            }
            pages.push(page);
        }
        tx.commit().await?;
        Ok(pages)
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
        let by_name = ByName::of(filter)?;
        let sql = match &by_name {
            None => batch_query!("").to_owned(),
            Some(by_name) => by_name.batch_sql(),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_int(after.position(), "position")?)
            .bind(sql_limit(limit.events));
        if let Some(by_name) = by_name {
            query = by_name.bind(query);
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

/// Whether an event has the name `?1` in column `$column`.
macro_rules! has_name_query {
    ($column:literal) => {
        concat!(
            "SELECT EXISTS (SELECT 1 FROM events WHERE ",
            $column,
            " = ?1)"
        )
    };
}

/// The distinct names of column `$column`, in order, at most `?1`: a skip scan of the
/// column's index, one probe per name (`min` of the names above the last).
macro_rules! names_query {
    ($column:literal) => {
        concat!(
            "WITH RECURSIVE names (name) AS (
                 SELECT min(",
            $column,
            ") FROM events
                 UNION ALL
                 SELECT (SELECT min(",
            $column,
            ") FROM events WHERE ",
            $column,
            " > names.name)
                 FROM names WHERE names.name IS NOT NULL
             )
             SELECT name FROM names WHERE name IS NOT NULL LIMIT ?1"
        )
    };
}

impl SqliteStore {
    pub(crate) async fn has_name(&self, kind: NameKind, name: &str) -> Result<bool, StoreError> {
        let sql = match kind {
            NameKind::AggregateType => has_name_query!("aggregate_type"),
            NameKind::EventType => has_name_query!("event_type"),
        };
        Ok(sqlx::query_scalar(sql)
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(crate) async fn stored_names(
        &self,
        kind: NameKind,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sql = match kind {
            NameKind::AggregateType => names_query!("aggregate_type"),
            NameKind::EventType => names_query!("event_type"),
        };
        Ok(sqlx::query_scalar(sql)
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await?)
    }

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
