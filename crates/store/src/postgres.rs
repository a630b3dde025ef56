//! The PostgreSQL store: the production store and the reference for every guarantee.
//!
//! Appends go through `eventhost.append_quiet()` (migrations/postgres), the same code that
//! applications call inside their own transactions, so both ways in behave alike. Reads in
//! subscription order follow the `(order_tx, position)` rule explained in that migration.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgDatabaseError, PgExecutor, PgListener, PgPool, PgPoolOptions,
    PgRow,
};
use sqlx::types::Json;
use sqlx::{Connection, Row};

use super::{
    Appended, AppendedEvent, BatchEntry, BatchLimit, Checkpoint, EventStore, Filter, NameKind,
    PendingAppend, PreparedEvent, Pulse, Signal, StoreError, StoreLimits, Writer, collect_until,
    entry_bytes, from_sql_int, prepare_all, sql_int, sql_limit,
};
use eventhost_domain::{
    Event, ExpectedVersion, Metadata, Payload, Position, StreamId, StreamPage, StreamRead, Version,
};

/// How long [`PgStore::probe`] waits for a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `application_name` of the store's connections, unless the URL sets one.
pub const APPLICATION_NAME: &str = "eventhost";

/// The channel `eventhost.append()` notifies on commit; the daemon listens on it.
pub const NOTIFY_CHANNEL: &str = "eventhost";

/// What [`Notifications::recv`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Another process notified.
    Notification,
    /// The listening connection was lost: notifications sent from now until
    /// [`Received::Listening`] are lost. The next call connects again.
    Disconnected,
    /// Listening again on a new connection, after [`Received::Disconnected`] or an error.
    Listening,
}

/// The store's notifications, on a connection of their own. A notification is only a hint
/// that something may have changed: anyone who may connect can send one, so a receiver
/// looks for itself what changed ([`Store::pulse`](crate::Store::pulse)). The ones this
/// store sent itself are skipped: this process heard of its appends already
/// ([`PgStore::appends`]). (Each carries the store's random mark; a role that copies it
/// into notifications of its own only delays this process's wake-ups to its next poll.)
pub struct Notifications {
    pool: PgPool,
    /// `None` once the connection was lost, until the next call makes a new one.
    listener: Option<PgListener>,
    own: String,
}

impl Notifications {
    async fn listen(pool: &PgPool) -> Result<PgListener, StoreError> {
        let listen = async {
            let mut listener = PgListener::connect_with(pool).await?;
            // A lost connection is reported, and made again by the next call, which then
            // says when it listens again: notifications in between are lost, and the caller
            // must look for itself.
            listener.eager_reconnect(false);
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        listen
            .await
            .map_err(|error| StoreError::from(error).during("listening for notifications"))
    }

    /// Waits for the next notification another process sent, or for the listening
    /// connection to be lost, or (after that or an error) made again. An error means no
    /// connection could be made, or the server ended the session; the next call connects
    /// again.
    pub async fn recv(&mut self) -> Result<Received, StoreError> {
        let Some(listener) = &mut self.listener else {
            self.listener = Some(Self::listen(&self.pool).await?);
            return Ok(Received::Listening);
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.payload() != self.own => {
                    return Ok(Received::Notification);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.listener = None;
                    return Ok(Received::Disconnected);
                }
                Err(error) => {
                    self.listener = None;
                    return Err(StoreError::from(error).during("listening for notifications"));
                }
            }
        }
    }

    /// Discards the notifications already received.
    pub fn drain(&mut self) {
        if let Some(listener) = &mut self.listener {
            while listener.next_buffered().is_some() {}
        }
    }
}

/// A pool of connections to one PostgreSQL database holding the `eventhost` schema.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    limits: StoreLimits,
    /// Bumped after every commit of this process that enqueues messages for sinks, and
    /// after every retry an operator asks for through it: a delivery worker in this process
    /// sends them at once (others find them at their next poll).
    enqueued: Signal,
    /// Bumped after every commit of this process that others are notified of (appends,
    /// operator requests): a dispatcher in this process looks at once, without waiting for
    /// the notification's round trip (its listener skips this store's own).
    appended: Signal,
    notifier: Notifier,
}

/// The columns of an event row, in the order `event_from_row` reads them.
macro_rules! event_columns {
    () => {
        "order_tx::text AS order_tx, position, id, aggregate_type, aggregate_id, version, \
         event_type, payload, metadata, recorded_at"
    };
}

/// The subscription read of all events. `$1`/`$2` are the checkpoint; rows are readable once
/// every transaction that could still add an earlier row has finished.
const BATCH_QUERY: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM eventhost.events
     WHERE (order_tx, position) > ($1::text::xid8, $2)
       AND order_tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY events.order_tx, events.position LIMIT $3" // Qualified: a bare `order_tx` would name the text alias above and sort as text.
);

/// The subscription read of the events whose `$column` is one of the names `$4`, with the
/// conditions `$also`, `$3` of them at most, readable as in [`BATCH_QUERY`]: each name's next
/// rows on the index that leads with `$column`, merged in subscription order. For each name,
/// the row comparison over the index's columns and the `<=` bound (rather than an `=`) keep
/// the planner from taking `$column` for a constant, so the only path that yields the inner
/// order is that index: the plan cannot fall back to walking the whole log and filtering,
/// whatever the statistics or the plan cache say. No other index may begin with `$column`
/// (one that did was taken, with an incremental sort: `0011_stream_key_order.sql`). A name
/// no event has costs one index probe.
macro_rules! filtered_batch_query {
    ($column:literal, $also:literal) => {
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM (SELECT DISTINCT unnest($4::text[]) AS name) AS wanted
             CROSS JOIN LATERAL (
                 SELECT * FROM eventhost.events
                 WHERE (",
            $column,
            ", order_tx, position) > (wanted.name, $1::text::xid8, $2)
                   AND ",
            $column,
            " <= wanted.name
                   AND order_tx < pg_snapshot_xmin(pg_current_snapshot()) ",
            $also,
            " ORDER BY ",
            $column,
            ", order_tx, position LIMIT $3
             ) AS events",
            // Qualified: a bare `order_tx` would name the text alias and sort as text.
            " ORDER BY events.order_tx, events.position LIMIT $3"
        )
    };
}

/// How many events whose `$column` is one of `$3`, with the conditions `$also`, come after
/// the checkpoint `$1`/`$2`, committed or not yet readable.
macro_rules! filtered_count_query {
    ($column:literal, $also:literal) => {
        concat!(
            "SELECT count(*) FROM eventhost.events
             WHERE ",
            $column,
            " = ANY($3) AND (order_tx, position) > ($1::text::xid8, $2) ",
            $also
        )
    };
}

// Declared after the column macros, which it uses.
mod deliveries;
mod leases;
mod notifier;
#[cfg(test)]
mod plan_tests;
mod sink_lock;
mod subscriptions;

use notifier::Notifier;
pub use sink_lock::SinkLock;

impl PgStore {
    /// Connects, creates the schema if needed and runs pending migrations.
    pub async fn connect(url: &str, limits: StoreLimits) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| StoreError::Connect {
                target: "PostgreSQL (the URL does not parse)".into(),
                source,
            })?
            // The migrations' `IF NOT EXISTS` notices would reach the log on every start.
            .options([("client_min_messages", "warning")]);
        // Named in `pg_stat_activity`, unless the URL names it otherwise.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name(APPLICATION_NAME),
        };
        let target = format!(
            "PostgreSQL at {}:{} (database {:?})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        // One direct connection first: a pool would report any failure as a time-out,
        // hiding the cause (refused, unknown database, authentication...).
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|source| StoreError::Connect {
                target: target.clone(),
                source,
            })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target, source })?;
        probe.close().await?;
        let store = Self {
            notifier: Notifier::start(pool.clone()),
            pool,
            limits,
            enqueued: Signal::new(),
            appended: Signal::new(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations in `migrations/postgres`, recorded in `eventhost._sqlx_migrations`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("../../migrations/postgres");
        migrator.create_schema("eventhost");
        migrator.dangerous_set_table_name("eventhost._sqlx_migrations");
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The underlying pool, for the dispatcher's LISTEN connection.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Changes after each commit in this process that enqueues messages, and each retry.
    pub fn enqueues(&self) -> tokio::sync::watch::Receiver<u64> {
        self.enqueued.subscribe()
    }

    pub(super) fn signal_enqueued(&self) {
        self.enqueued.raise();
    }

    /// After a commit that appended events: wakes this process's dispatcher at once, and
    /// other listeners soon (the committer does not wait: see `notifier`).
    pub(super) fn notify_soon(&self) {
        self.appended.raise();
        self.notifier.request();
    }

    /// Changes after each commit in this process that appends events or carries an
    /// operator's request.
    pub fn appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Wakes listeners after a commit, and waits until the notification is sent: for an
    /// operator's request, so that the command's return means the daemons were told.
    pub(super) async fn notify(&self) {
        self.appended.raise();
        self.notifier.notify().await;
    }

    /// Sends the notifications still pending and closes the pool's connections: what a
    /// process does before it exits.
    pub async fn close(&self) {
        self.notifier.flush().await;
        self.pool.close().await;
    }

    /// Starts listening for the store's notifications.
    pub async fn notifications(&self) -> Result<Notifications, StoreError> {
        Ok(Notifications {
            pool: self.pool.clone(),
            listener: Some(Notifications::listen(&self.pool).await?),
            own: self.notifier.mark().to_owned(),
        })
    }

    /// Connects once, outside the pool, within [`PROBE_TIMEOUT`]: whether the server takes
    /// connections now, with the driver's cause when it does not (the pool would only time
    /// out, after its acquire timeout).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let options = self.pool.connect_options();
        let connect = async {
            let connection = PgConnection::connect_with(&options).await?;
            connection.close().await
        };
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(outcome) => outcome,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {PROBE_TIMEOUT:?}"),
            ))),
        };
        outcome.map_err(|error| StoreError::from(error).during("connecting to PostgreSQL"))
    }

    /// Raises the control counter the daemons poll, in `tx`: an operator's request they
    /// must notice. The caller notifies once `tx` commits.
    pub(super) async fn raise_control(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE eventhost.control SET version = version + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Runs `eventhost.append_quiet()` on `executor` (the pool, or a batch's transaction). The
/// payload cap is this store's, already checked by `prepare` on compact JSON.
pub(super) async fn append_rows<'e>(
    executor: impl PgExecutor<'e>,
    stream: &StreamId,
    expected: ExpectedVersion,
    prepared: &[PreparedEvent],
) -> Result<Appended, sqlx::Error> {
    let expected_sql = match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(version) => Some(i64::try_from(version).unwrap_or(i64::MAX)),
    };
    let rows = sqlx::query(
        "SELECT event_position, event_version, event_id, duplicate
         FROM eventhost.append_quiet($1, $2, $3, $4::text::jsonb, NULL)",
    )
    .bind(&stream.aggregate_type)
    .bind(&stream.aggregate_id)
    .bind(expected_sql)
    .bind(events_json(prepared))
    .fetch_all(executor)
    .await?;
    let mut appended = Appended {
        events: Vec::with_capacity(rows.len()),
        duplicate: false,
    };
    for row in rows {
        appended.duplicate |= row.try_get::<bool, _>("duplicate")?;
        appended.events.push(AppendedEvent {
            id: row.try_get("event_id")?,
            version: from_sql_int(row.try_get("event_version")?),
            position: from_sql_int(row.try_get("event_position")?),
        });
    }
    appended.events.sort_by_key(|event| event.version);
    Ok(appended)
}

/// Runs several appends in `connection`'s transaction, in order, with the outcome of
/// [`append_rows`] one by one; `failed` turns an append's error into the caller's (naming the
/// append at `index`). Appends to distinct streams whose event ids are all new (a policy's
/// batch emitting to hundreds of streams) take three statements whatever their number; any
/// other mix (a stream or an id twice, an id already stored: a retry) goes append by append,
/// where `eventhost.append_quiet()`'s rules for duplicates apply.
pub(super) async fn append_each(
    connection: &mut PgConnection,
    appends: &[PendingAppend],
    prepared: &[Vec<PreparedEvent>],
    failed: impl Fn(usize, StoreError) -> StoreError,
) -> Result<Vec<Appended>, StoreError> {
    if appends.len() > 1
        && all_distinct(appends, prepared)
        && !any_stored(connection, prepared).await?
    {
        return append_together(connection, appends, prepared, failed).await;
    }
    let mut done = Vec::with_capacity(appends.len());
    for (index, (append, prepared)) in appends.iter().zip(prepared).enumerate() {
        let appended = append_rows(&mut *connection, &append.stream, append.expected, prepared)
            .await
            .map_err(|error| failed(index, append_error(error, &append.stream, append.expected)))?;
        done.push(appended);
    }
    Ok(done)
}

/// Whether no stream and no event id appears twice among `appends`.
fn all_distinct(appends: &[PendingAppend], prepared: &[Vec<PreparedEvent>]) -> bool {
    let mut streams = HashSet::with_capacity(appends.len());
    let mut ids = HashSet::new();
    appends.iter().all(|append| streams.insert(&append.stream))
        && prepared.iter().flatten().all(|event| ids.insert(event.id))
}

/// Whether any of the events' ids is already stored. Sent as an unnamed statement, which
/// PostgreSQL plans with the ids at hand each time: a cached generic plan could scan the
/// whole table (see migrations/postgres/0012_append_id_lookup.sql).
async fn any_stored(
    connection: &mut PgConnection,
    prepared: &[Vec<PreparedEvent>],
) -> Result<bool, StoreError> {
    let ids: Vec<uuid::Uuid> = prepared.iter().flatten().map(|event| event.id).collect();
    let stored =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM eventhost.events WHERE id = ANY($1))")
            .bind(ids)
            .persistent(false)
            .fetch_one(connection)
            .await?;
    Ok(stored)
}

/// Appends to distinct streams, none of whose event ids is stored, as
/// `eventhost.append_quiet()` would one by one: each stream's row is locked (or created) and
/// raised by its events in one statement, in a fixed order so that two such commits cannot
/// deadlock; each expected version is checked against the version before; then every event
/// is inserted in one statement, in the appends' order, with its stream's `order_tx`.
async fn append_together(
    connection: &mut PgConnection,
    appends: &[PendingAppend],
    prepared: &[Vec<PreparedEvent>],
    failed: impl Fn(usize, StoreError) -> StoreError,
) -> Result<Vec<Appended>, StoreError> {
    let counts = prepared
        .iter()
        .map(|events| sql_int(events.len() as u64, "events"))
        .collect::<Result<Vec<i64>, StoreError>>()?;
    let rows = sqlx::query(
        "INSERT INTO eventhost.streams AS s (aggregate_type, aggregate_id, version, order_tx)
         SELECT t, i, n, pg_current_xact_id()
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS a(t, i, n)
         ORDER BY t, i
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
             SET version  = s.version + excluded.version,
                 order_tx = greatest(s.order_tx, excluded.order_tx)
         RETURNING s.aggregate_type, s.aggregate_id, s.version, s.order_tx::text",
    )
    .bind(
        appends
            .iter()
            .map(|a| a.stream.aggregate_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        appends
            .iter()
            .map(|a| a.stream.aggregate_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(&counts)
    .fetch_all(&mut *connection)
    .await?;
    let mut raised = HashMap::with_capacity(rows.len());
    for row in rows {
        let stream = StreamId::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        let version: i64 = row.try_get(2)?;
        let order_tx: String = row.try_get(3)?;
        raised.insert(stream, (from_sql_int(version), order_tx));
    }

    let total: usize = prepared.iter().map(Vec::len).sum();
    let mut columns = EventColumns::with_capacity(total);
    let mut versions = Vec::with_capacity(appends.len());
    for (index, (append, events)) in appends.iter().zip(prepared).enumerate() {
        let Some((after, order_tx)) = raised.get(&append.stream) else {
            return Err(StoreError::Corrupt(format!(
                "the streams' update did not return stream {}",
                append.stream
            )));
        };
        let before = after.checked_sub(events.len() as u64).ok_or_else(|| {
            StoreError::Corrupt(format!("stream {} is at version {after}", append.stream))
        })?;
        eventhost_domain::append::check_version(&append.stream, append.expected, before)
            .map_err(|conflict| failed(index, conflict.into()))?;
        versions.push(before);
        for (offset, event) in events.iter().enumerate() {
            columns.push(order_tx, &append.stream, before + 1 + offset as u64, event)?;
        }
    }
    let positions: HashMap<uuid::Uuid, i64> = sqlx::query_as(
        "INSERT INTO eventhost.events
             (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload, metadata)
         SELECT x::xid8, id, t, i, v, et, p::jsonb, m::jsonb
         FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::text[], $8::text[]) WITH ORDINALITY AS e(x, id, t, i, v, et, p, m, ord)
         ORDER BY ord
         RETURNING id, position",
    )
    .bind(columns.order_tx)
    .bind(columns.id)
    .bind(columns.aggregate_type)
    .bind(columns.aggregate_id)
    .bind(columns.version)
    .bind(columns.event_type)
    .bind(columns.payload)
    .bind(columns.metadata)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .collect();
    prepared
        .iter()
        .zip(versions)
        .map(|(events, before)| {
            let events = events
                .iter()
                .enumerate()
                .map(|(offset, event)| {
                    let position = positions.get(&event.id).ok_or_else(|| {
                        StoreError::Corrupt(format!("the insert did not return event {}", event.id))
                    })?;
                    Ok(AppendedEvent {
                        id: event.id,
                        version: before + 1 + offset as u64,
                        position: from_sql_int(*position),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Appended {
                events,
                duplicate: false,
            })
        })
        .collect()
}

/// The events of several appends, column by column, as `append_together` inserts them.
struct EventColumns<'a> {
    order_tx: Vec<&'a str>,
    id: Vec<uuid::Uuid>,
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    version: Vec<i64>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    metadata: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    fn with_capacity(events: usize) -> Self {
        Self {
            order_tx: Vec::with_capacity(events),
            id: Vec::with_capacity(events),
            aggregate_type: Vec::with_capacity(events),
            aggregate_id: Vec::with_capacity(events),
            version: Vec::with_capacity(events),
            event_type: Vec::with_capacity(events),
            payload: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
        }
    }

    fn push(
        &mut self,
        order_tx: &'a str,
        stream: &'a StreamId,
        version: Version,
        event: &'a PreparedEvent,
    ) -> Result<(), StoreError> {
        self.order_tx.push(order_tx);
        self.id.push(event.id);
        self.aggregate_type.push(&stream.aggregate_type);
        self.aggregate_id.push(&stream.aggregate_id);
        self.version.push(sql_int(version, "version")?);
        self.event_type.push(&event.event_type);
        self.payload.push(&event.payload);
        self.metadata.push(&event.metadata);
        Ok(())
    }
}

/// Encodes prepared events as the JSON array `eventhost.append_quiet()` takes, reusing each
/// payload's already-encoded text.
fn events_json(prepared: &[PreparedEvent]) -> String {
    let mut json = String::from("[");
    for (index, event) in prepared.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push_str("{\"id\":\"");
        json.push_str(&event.id.to_string());
        json.push_str("\",\"event_type\":");
        json.push_str(&serde_json::Value::String(event.event_type.clone()).to_string());
        json.push_str(",\"payload\":");
        json.push_str(&event.payload);
        json.push_str(",\"metadata\":");
        json.push_str(&event.metadata);
        json.push('}');
    }
    json.push(']');
    json
}

/// Turns the errors `eventhost.append_quiet()` raises on purpose into typed ones.
pub(super) fn append_error(
    error: sqlx::Error,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> StoreError {
    let Some(database_error) = error.as_database_error() else {
        return StoreError::from(error);
    };
    let Some(pg) = database_error.try_downcast_ref::<PgDatabaseError>() else {
        return StoreError::from(error);
    };
    let detail = pg.detail().unwrap_or_default();
    match pg.code() {
        "EH409" => StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual: detail_number(detail, "actual").unwrap_or(0),
        },
        "23505" if pg.constraint().is_none() => StoreError::PartialDuplicate {
            found: detail_number(detail, "found").unwrap_or(0) as usize,
            total: detail_number(detail, "total").unwrap_or(0) as usize,
        },
        "22023" | "54000" => StoreError::Invalid(pg.message().to_owned()),
        _ => StoreError::from(error),
    }
}

/// Reads `key=<number>` out of an error detail such as `expected=3 actual=5`.
fn detail_number(detail: &str, key: &str) -> Option<u64> {
    detail
        .split_whitespace()
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// A unique violation on the event id: two appends raced with the same new ids.
fn is_id_race(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.constraint())
        .is_some_and(|constraint| constraint == "events_id_key")
}

/// Which columns a subscription's filter reads: each shape has a statement of its own, on
/// its own index.
enum FilterShape {
    All,
    AggregateTypes,
    EventTypes,
    /// Read by event type, the narrower of the two as a rule, and checked for aggregate type.
    Both,
}

fn filter_shape(filter: &Filter) -> FilterShape {
    match (
        filter.aggregate_types.is_empty(),
        filter.event_types.is_empty(),
    ) {
        (true, true) => FilterShape::All,
        (false, true) => FilterShape::AggregateTypes,
        (true, false) => FilterShape::EventTypes,
        (false, false) => FilterShape::Both,
    }
}

/// Binds a filter's names after a statement's other parameters: first the names read by,
/// then (both kinds) the aggregate types checked.
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &Filter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match filter_shape(filter) {
        FilterShape::All => query,
        FilterShape::AggregateTypes => query.bind(&filter.aggregate_types),
        FilterShape::EventTypes => query.bind(&filter.event_types),
        FilterShape::Both => query
            .bind(&filter.event_types)
            .bind(&filter.aggregate_types),
    }
}

/// How many events of `filter` come after `after`, committed or not yet readable. A
/// one-off statement, planned for the values at hand: how many rows the checkpoint leaves
/// decides between the filtered column's index (a subscription near the head) and a scan (one
/// far behind), which a plan made for any checkpoint cannot know.
pub(super) async fn count_after(
    pool: &PgPool,
    after: Checkpoint,
    filter: &Filter,
) -> Result<u64, StoreError> {
    let sql = match filter_shape(filter) {
        FilterShape::All => {
            "SELECT count(*) FROM eventhost.events
             WHERE (order_tx, position) > ($1::text::xid8, $2)"
        }
        FilterShape::AggregateTypes => filtered_count_query!("aggregate_type", ""),
        FilterShape::EventTypes => filtered_count_query!("event_type", ""),
        FilterShape::Both => filtered_count_query!("event_type", "AND aggregate_type = ANY($4)"),
    };
    let count: i64 = bind_filter(
        sqlx::query(sql)
            .bind(after.tx().to_string())
            .bind(sql_int(after.position(), "position")?)
            .persistent(false),
        filter,
    )
    .try_map(|row: PgRow| row.try_get(0))
    .fetch_one(pool)
    .await?;
    Ok(from_sql_int(count))
}

pub(super) fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        position: from_sql_int(row.try_get("position")?),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        version: from_sql_int(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        payload: row.try_get::<Json<Payload>, _>("payload")?.0,
        metadata: row.try_get::<Json<Metadata>, _>("metadata")?.0,
        recorded_at: row.try_get("recorded_at")?,
    })
}

fn entry_from_row(row: &PgRow) -> Result<BatchEntry, StoreError> {
    let (event, defect) = match event_from_row(row) {
        Ok(event) => (event, None),
        Err(error) => (event_without_content(row)?, Some(error.to_string())),
    };
    let tx = parse_tx(&row.try_get::<String, _>("order_tx")?)?;
    Ok(BatchEntry {
        checkpoint: Checkpoint::new(tx, event.position),
        event,
        defect,
    })
}

/// A row's event without its payload and metadata, for a row whose content cannot be read:
/// enough to park it.
fn event_without_content(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        position: from_sql_int(row.try_get("position")?),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        version: from_sql_int(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        payload: Payload::from_value(&serde_json::Value::Null),
        metadata: Metadata::new(),
        recorded_at: row.try_get("recorded_at")?,
    })
}

pub(super) fn parse_tx(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("order_tx {text:?} is not a transaction id")))
}

impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[eventhost_domain::NewEvent],
    ) -> Result<Appended, StoreError> {
        let prepared = eventhost_domain::append::prepare(stream, events, self.limits)?;
        let appended = match append_rows(&self.pool, stream, expected, &prepared).await {
            // The racing append has committed by now: the retry reports it as a duplicate.
            Err(error) if is_id_race(&error) => {
                append_rows(&self.pool, stream, expected, &prepared).await
            }
            other => other,
        }
        .map_err(|error| append_error(error, stream, expected))?;
        if !appended.duplicate {
            self.notify_soon();
        }
        Ok(appended)
    }

    async fn append_all(&self, appends: &[PendingAppend]) -> Result<Vec<Appended>, StoreError> {
        let prepared = prepare_all(appends, self.limits)?;
        let mut tx = self.pool.begin().await?;
        let done = append_each(&mut tx, appends, &prepared, |index, error| {
            error.in_append(index)
        })
        .await?;
        tx.commit().await?;
        if done.iter().any(|appended| !appended.duplicate) {
            self.notify_soon();
        }
        Ok(done)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM eventhost.streams WHERE aggregate_type = $1 AND aggregate_id = $2",
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
            " FROM eventhost.events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= $3
             ORDER BY version LIMIT $4"
        ))
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(sql_int(from_version, "version")?)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// One statement, so one snapshot: each read's stream row and its page of events, the
    /// page through the stream key's index. Rows past `max_bytes` still give their version.
    async fn read_streams(
        &self,
        reads: &[StreamRead],
        max_bytes: usize,
    ) -> Result<Vec<StreamPage>, StoreError> {
        use futures::TryStreamExt;
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut types = Vec::with_capacity(reads.len());
        let mut ids = Vec::with_capacity(reads.len());
        let mut froms = Vec::with_capacity(reads.len());
        let mut limits = Vec::with_capacity(reads.len());
        for read in reads {
            types.push(read.stream.aggregate_type.as_str());
            ids.push(read.stream.aggregate_id.as_str());
            froms.push(sql_int(read.from_version, "version")?);
            limits.push(sql_limit(read.limit));
        }
        let query = sqlx::query(concat!(
            "SELECT r.ord, coalesce(s.version, 0) AS stream_version, e.*
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                  WITH ORDINALITY AS r (t, i, from_version, page, ord)
             LEFT JOIN eventhost.streams s ON s.aggregate_type = r.t AND s.aggregate_id = r.i
             LEFT JOIN LATERAL (
                 SELECT ",
            event_columns!(),
            " FROM eventhost.events
                 WHERE aggregate_type = r.t AND aggregate_id = r.i AND version >= r.from_version
                 ORDER BY version LIMIT r.page
             ) e ON true
             ORDER BY r.ord, e.version"
        ))
        .bind(&types)
        .bind(&ids)
        .bind(&froms)
        .bind(&limits);
        let mut rows = std::pin::pin!(query.fetch(&self.pool));
        let mut pages = vec![StreamPage::default(); reads.len()];
        let mut held = 0usize;
        while let Some(row) = rows.try_next().await? {
            let ord: i64 = row.try_get("ord")?;
            let page = usize::try_from(ord - 1)
                .ok()
                .and_then(|index| pages.get_mut(index))
                .ok_or_else(|| StoreError::Invalid(format!("read {ord} was not asked for")))?;
            page.version = from_sql_int(row.try_get("stream_version")?);
            if held < max_bytes && row.try_get::<Option<uuid::Uuid>, _>("id")?.is_some() {
                let event = event_from_row(&row)?;
                held = held.saturating_add(event.text_bytes());
                page.events.push(event);
            }
        }
        Ok(pages)
    }

    async fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = match aggregate_type {
            None => concat!(
                "SELECT ",
                event_columns!(),
                " FROM eventhost.events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            Some(_) => concat!(
                "SELECT ",
                event_columns!(),
                " FROM eventhost.events WHERE position > $1 AND aggregate_type = $3
                 ORDER BY position LIMIT $2"
            ),
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
        let sql = match filter_shape(filter) {
            FilterShape::All => BATCH_QUERY,
            FilterShape::AggregateTypes => filtered_batch_query!("aggregate_type", ""),
            FilterShape::EventTypes => filtered_batch_query!("event_type", ""),
            FilterShape::Both => {
                filtered_batch_query!("event_type", "AND aggregate_type = ANY($5)")
            }
        };
        let query = bind_filter(
            sqlx::query(sql)
                .bind(after.tx().to_string())
                .bind(sql_int(after.position(), "position")?)
                .bind(sql_limit(limit.events)),
            filter,
        );
        collect_until(
            query.fetch(&self.pool),
            limit.bytes,
            entry_from_row,
            entry_bytes,
        )
        .await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        Ok(self.pulse().await?.head)
    }
}

/// Whether an event has the name `$1` in column `$column`.
macro_rules! has_name_query {
    ($column:literal) => {
        concat!(
            "SELECT EXISTS (SELECT 1 FROM eventhost.events WHERE ",
            $column,
            " = $1)"
        )
    };
}

/// The distinct names of column `$column`, in order, at most `$1`: a skip scan of the
/// column's index, one probe per name (`min` of the names above the last).
macro_rules! names_query {
    ($column:literal) => {
        concat!(
            "WITH RECURSIVE names (name) AS (
                 SELECT min(",
            $column,
            ") FROM eventhost.events
                 UNION ALL
                 SELECT (SELECT min(",
            $column,
            ") FROM eventhost.events WHERE ",
            $column,
            " > names.name)
                 FROM names WHERE names.name IS NOT NULL
             )
             SELECT name FROM names WHERE name IS NOT NULL LIMIT $1"
        )
    };
}

impl PgStore {
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

    /// The oldest transaction of the cluster that has written and not ended, if any: it
    /// holds back what subscriptions may read (see migrations/postgres), in any database of
    /// the cluster. A session's, or a prepared transaction's. Sessions of other roles show
    /// their query only when this role may see it (`pg_read_all_stats`).
    pub(crate) async fn oldest_writer(&self) -> Result<Option<Writer>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, pid, database, username, application, state, seconds, query
             FROM (
                 SELECT 'session' AS kind, pid, datname::text AS database,
                        usename::text AS username, application_name AS application, state,
                        extract(epoch FROM clock_timestamp() - xact_start)::float8 AS seconds,
                        left(query, 200) AS query, age(backend_xid) AS xid_age
                 FROM pg_stat_activity
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
                 UNION ALL
                 SELECT 'prepared transaction', NULL, database::text, owner::text, gid,
                        'prepared',
                        extract(epoch FROM clock_timestamp() - prepared)::float8, NULL,
                        age(transaction)
                 FROM pg_prepared_xacts
             ) AS writers
             ORDER BY xid_age DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Writer {
                kind: row.try_get("kind")?,
                pid: row.try_get("pid")?,
                database: row.try_get("database")?,
                user: row.try_get("username")?,
                application: row.try_get("application")?,
                state: row.try_get("state")?,
                age: Duration::from_secs_f64(
                    row.try_get::<Option<f64>, _>("seconds")?
                        .unwrap_or(0.0)
                        .max(0.0),
                ),
                query: row.try_get("query")?,
            })
        })
        .transpose()
    }

    /// How many committed events are not readable yet (up to `cap`): written by
    /// transactions that ended while an older one is still open.
    pub(crate) async fn held_back(&self, cap: u64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT 1 FROM eventhost.events
                 WHERE order_tx >= pg_snapshot_xmin(pg_current_snapshot()) LIMIT $1
             ) AS held",
        )
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        Ok(from_sql_int(count))
    }

    /// The readable head of the log and the control counter, in one query.
    pub(crate) async fn pulse(&self) -> Result<Pulse, StoreError> {
        let row = sqlx::query(
            "SELECT head.order_tx::text AS order_tx, head.position,
                    (SELECT version FROM eventhost.control WHERE id = 1) AS control
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL (
                 SELECT order_tx, position FROM eventhost.events
                 WHERE order_tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY order_tx DESC, position DESC LIMIT 1
             ) AS head ON true",
        )
        .fetch_one(&self.pool)
        .await?;
        let head = match row.try_get::<Option<String>, _>("order_tx")? {
            None => Checkpoint::ORIGIN,
            Some(order_tx) => {
                Checkpoint::new(parse_tx(&order_tx)?, from_sql_int(row.try_get("position")?))
            }
        };
        Ok(Pulse {
            head,
            control: from_sql_int(row.try_get("control")?),
        })
    }
}
