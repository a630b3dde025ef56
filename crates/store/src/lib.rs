//! The event store: one trait, two implementations (PostgreSQL, embedded SQLite).
//!
//! Guarantees every implementation keeps (checked by `host/tests/store_conformance.rs` and
//! `host/tests/append_rules.rs` against both): appends are atomic, follow the rules of
//! `eventhost_domain::append` and are version-checked; re-appending stored ids is idempotent;
//! `read_batch` never skips an event, never returns one twice, and returns each stream's
//! events in version order, whatever order concurrent writers commit in.

mod deliveries;
mod error;
mod leases;
mod plugins;
mod postgres;
mod sqlite;
mod subscriptions;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use deliveries::{
    AttemptOutcome, Delivery, DeliveryQuery, DeliverySelection, DeliveryStatus, DeliveryStore,
};
pub use error::StoreError;
pub use leases::{DaemonRecord, Lease, Member, Peer, Plugins, Renewal, host_name};
pub use plugins::{PluginRecord, PluginRecords};
pub use postgres::{APPLICATION_NAME, NOTIFY_CHANNEL, Notifications, PgStore, Received, SinkLock};
pub use sqlite::{DaemonLock, SqliteStore};
pub use subscriptions::{
    BatchCommit, DefinedSubscription, Park, ParkedEvent, ParkedSelection, ParkedSummary,
    PendingAppend, SubscriptionDefinition, SubscriptionRecord, SubscriptionStore,
};

pub use eventhost_domain::{
    AppendError, Appended, AppendedEvent, Checkpoint, Filter, PreparedEvent, StoreLimits,
};
use eventhost_domain::{
    Event, ExpectedVersion, NewEvent, Position, StreamId, StreamPage, StreamRead, Version,
};

/// An event read for a subscription, with the checkpoint that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    pub checkpoint: Checkpoint,
    pub event: Event,
    /// Why the stored row cannot be read whole (a metadata value that is not a string, a
    /// payload that is not JSON), if so. Its `event` then holds the row's id, stream,
    /// version, type and time, with an empty payload and metadata: the dispatcher parks it
    /// with this reason instead of giving it to a plugin.
    pub defect: Option<String>,
}

/// How much one `read_batch` may return: at most `events` events, and no event after the
/// one that brings their text (names, payload, metadata) to `bytes`, so the daemon holds a
/// bounded amount for a batch however large its events are. A plain number bounds the events
/// only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    pub events: usize,
    pub bytes: usize,
}

impl From<usize> for BatchLimit {
    fn from(events: usize) -> Self {
        Self {
            events,
            bytes: usize::MAX,
        }
    }
}

impl BatchLimit {
    /// Whether `entries`, read under this limit, may have been cut short by it: if not, they
    /// were everything readable.
    pub fn reached(&self, entries: &[BatchEntry]) -> bool {
        entries.len() >= self.events
            || entries
                .iter()
                .map(|entry| entry.event.text_bytes())
                .fold(0usize, usize::saturating_add)
                >= self.bytes
    }
}

/// Decodes rows from `rows` until the decoded items' `size` adds up to `bytes`; the rows
/// after are never decoded (the query's `LIMIT` already bounds their number).
async fn collect_until<R, T>(
    rows: impl futures::Stream<Item = Result<R, sqlx::Error>>,
    bytes: usize,
    decode: impl Fn(&R) -> Result<T, StoreError>,
    size: impl Fn(&T) -> usize,
) -> Result<Vec<T>, StoreError> {
    use futures::TryStreamExt;
    let mut rows = std::pin::pin!(rows);
    let mut items = Vec::new();
    let mut held = 0usize;
    while let Some(row) = rows.try_next().await? {
        let item = decode(&row)?;
        held = held.saturating_add(size(&item));
        items.push(item);
        if held >= bytes {
            break;
        }
    }
    Ok(items)
}

/// A counter raised after a kind of commit, which tasks of this process wait on (a watch
/// channel: a receiver never misses that it changed). Clones share it.
#[derive(Debug, Clone)]
struct Signal(std::sync::Arc<tokio::sync::watch::Sender<u64>>);

impl Signal {
    fn new() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(0)))
    }

    fn raise(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// A column of names a subscription's filter matches events on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    AggregateType,
    EventType,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::AggregateType => "aggregate type",
            NameKind::EventType => "event type",
        })
    }
}

/// What an entry of a batch weighs against its byte bound: its event's text.
fn entry_bytes(entry: &BatchEntry) -> usize {
    entry.event.text_bytes()
}

/// The operations every store offers.
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Makes every append of `appends` in one transaction, in order: all of them or none.
    /// Each is checked first, so bad input writes nothing; an append that is refused is named
    /// by its index in [`StoreError::InAppend`].
    fn append_all(
        &self,
        appends: &[PendingAppend],
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send;

    /// The stream's current version (0 if it does not exist).
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;

    /// A stream's events with version >= `from_version`, in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Several streams read as of one moment: for each read, in order, the stream's version
    /// and its events from the read's `from_version`, at most its `limit`. One round trip
    /// where a `read_stream` and a `stream_version` per stream take two each.
    ///
    /// Events stop, over all the pages, once they hold `max_bytes` of text
    /// ([`Event::text_bytes`]): a page may then end before its `limit` though its stream goes
    /// on, which its version tells.
    fn read_streams(
        &self,
        reads: &[StreamRead],
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<StreamPage>, StoreError>> + Send;

    /// Committed events after `after`, in position order, of one aggregate type or of all
    /// (`None`). A listing, not a subscription: use `read_batch` to follow the store live.
    fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// The next events after `after` that match `filter`, within `limit`, in the gap-free
    /// subscription order.
    fn read_batch(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: impl Into<BatchLimit> + Send,
    ) -> impl Future<Output = Result<Vec<BatchEntry>, StoreError>> + Send;

    /// The checkpoint after every event `read_batch` can return now: where a subscription
    /// that starts "from now" begins.
    fn head(&self) -> impl Future<Output = Result<Checkpoint, StoreError>> + Send;
}

/// A connected store of either kind.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Calls the same method on either store, naming the operation in a database error.
macro_rules! delegate {
    ($self:ident, $operation:literal, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call.await,
            Store::Sqlite($store) => $call.await,
        }
        .map_err(|error: StoreError| error.during($operation))
    };
}

/// An open transaction that has written: on PostgreSQL, it holds back every event committed
/// after it began until it ends.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Writer {
    /// `session`, or `prepared transaction` (no session: `COMMIT PREPARED` or `ROLLBACK
    /// PREPARED` by its gid, shown as `application`, ends it).
    pub kind: String,
    pub pid: Option<i32>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// `active`, `idle in transaction`...
    pub state: Option<String>,
    /// How long its transaction has been open.
    #[serde(serialize_with = "seconds")]
    #[schema(value_type = f64)]
    pub age: std::time::Duration,
    /// The start of its current or last query, when this role may see it.
    pub query: Option<String>,
}

fn seconds<S: serde::Serializer>(
    value: &std::time::Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

/// The longest [`Store::close`] waits.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What one poll of the store sees: when it changes, idle subscriptions may have something
/// to do. One query, whatever the number of subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    /// The checkpoint after every event readable now.
    pub head: Checkpoint,
    /// Raised by every operator request a running daemon must notice (a reset, a replay).
    pub control: u64,
}

impl Store {
    /// The head of the log and the operators' control counter.
    pub async fn pulse(&self) -> Result<Pulse, StoreError> {
        delegate!(self, "polling the store", store => store.pulse())
    }

    /// Sends what is still pending (PostgreSQL's notifications go out after their commits)
    /// and closes the connections, every clone's with them: what a process does before it
    /// exits. Gives up after [`CLOSE_TIMEOUT`]: the server may be gone, or a connection
    /// held by work that was abandoned.
    pub async fn close(&self) {
        let close = async {
            match self {
                Store::Postgres(store) => store.close().await,
                Store::Sqlite(store) => store.close().await,
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }

    /// Changes after each commit of this process that appends events (an append, a batch
    /// that emits).
    pub fn appends(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Store::Postgres(store) => store.appends(),
            Store::Sqlite(store) => store.appends(),
        }
    }

    /// Changes after each commit of this process that enqueues messages, and each retry.
    pub fn enqueues(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Store::Postgres(store) => store.enqueues(),
            Store::Sqlite(store) => store.enqueues(),
        }
    }

    /// Whether any stored event has `name` as its aggregate type or event type (`kind`): one
    /// probe of the index leading with that column.
    pub async fn has_name(&self, kind: NameKind, name: &str) -> Result<bool, StoreError> {
        delegate!(self, "looking up a stored name", store => store.has_name(kind, name))
    }

    /// The distinct aggregate types or event types (`kind`) of stored events, in byte
    /// order, at most `limit`: one index probe per name, however many events have it.
    pub async fn stored_names(
        &self,
        kind: NameKind,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        delegate!(self, "listing stored names", store => store.stored_names(kind, limit))
    }

    /// Each subscription's parked events: how many, and since when the oldest waits.
    pub async fn parked_summary(&self) -> Result<Vec<ParkedSummary>, StoreError> {
        delegate!(self, "summing up parked events", store => store.parked_summary())
    }

    /// On PostgreSQL, the oldest transaction of the cluster that has written and not ended
    /// (`None`: none is): what holds back what subscriptions may read. SQLite holds nothing
    /// back.
    pub async fn oldest_writer(&self) -> Result<Option<Writer>, StoreError> {
        match self {
            Store::Postgres(store) => store
                .oldest_writer()
                .await
                .map_err(|error| error.during("looking for open transactions")),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// On PostgreSQL, how many committed events are not readable yet because an older
    /// transaction is still open (counted up to `cap`); 0 on SQLite.
    pub async fn held_back(&self, cap: u64) -> Result<u64, StoreError> {
        match self {
            Store::Postgres(store) => store
                .held_back(cap)
                .await
                .map_err(|error| error.during("counting events held back")),
            Store::Sqlite(_) => Ok(0),
        }
    }

    /// Whether the server takes connections now, asked outside the pool (see
    /// [`PgStore::probe`]); always on SQLite.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.probe().await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// How many stored events of `filter` come after `after` (the lag of a subscription at
    /// that checkpoint).
    pub async fn count_after(&self, after: Checkpoint, filter: &Filter) -> Result<u64, StoreError> {
        match self {
            Store::Postgres(store) => postgres::count_after(store.pool(), after, filter).await,
            Store::Sqlite(store) => {
                sqlite::count_after(store.pool(), after.position(), filter).await
            }
        }
        .map_err(|error| error.during("counting events"))
    }

    /// The limits this store enforces on appended input.
    pub fn limits(&self) -> StoreLimits {
        match self {
            Store::Postgres(store) => store.limits(),
            Store::Sqlite(store) => store.limits(),
        }
    }
}

/// Connects to `database_url` (`postgres://...` or `sqlite://...`) and runs the migrations.
pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
    connect_with(database_url, StoreLimits::default()).await
}

/// [`connect`] with explicit limits.
pub async fn connect_with(database_url: &str, limits: StoreLimits) -> Result<Store, StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Store::Postgres(
            PgStore::connect(database_url, limits).await?,
        ))
    } else if database_url.starts_with("sqlite:") {
        Ok(Store::Sqlite(
            SqliteStore::connect(database_url, limits).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

impl EventStore for Store {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Appended, StoreError> {
        delegate!(self, "appending events", store => store.append(stream, expected, events))
    }

    async fn append_all(&self, appends: &[PendingAppend]) -> Result<Vec<Appended>, StoreError> {
        delegate!(self, "appending events", store => store.append_all(appends))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        delegate!(self, "reading a stream's version", store => store.stream_version(stream))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        delegate!(self, "reading a stream", store => store.read_stream(stream, from_version, limit))
    }

    async fn read_streams(
        &self,
        reads: &[StreamRead],
        max_bytes: usize,
    ) -> Result<Vec<StreamPage>, StoreError> {
        delegate!(self, "reading streams", store => store.read_streams(reads, max_bytes))
    }

    async fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        delegate!(self, "reading events", store => store.read_positions(aggregate_type, after, limit))
    }

    async fn read_batch(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: impl Into<BatchLimit> + Send,
    ) -> Result<Vec<BatchEntry>, StoreError> {
        let limit = limit.into();
        delegate!(self, "reading a subscription's batch", store => store.read_batch(after, filter, limit))
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        delegate!(self, "reading the store's head", store => store.head())
    }
}

/// Converts a caller's `usize` limit to SQL, capping absurd values instead of overflowing.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Converts a `u64` version or position to SQL's signed 64-bit integer.
fn sql_int(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} is out of range")))
}

/// Converts a stored signed integer back to the domain's `u64`.
fn from_sql_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SubscriptionStore for Store {
    async fn define_subscriptions(
        &self,
        plugin: &str,
        definitions: &[SubscriptionDefinition],
    ) -> Result<Vec<DefinedSubscription>, StoreError> {
        delegate!(self, "defining subscriptions", store => store.define_subscriptions(plugin, definitions))
    }

    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        delegate!(self, "reading subscriptions", store => store.subscription(name))
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        delegate!(self, "reading subscriptions", store => store.subscriptions())
    }

    async fn commit_batch(&self, commit: &BatchCommit) -> Result<(), StoreError> {
        delegate!(self, "committing a batch", store => store.commit_batch(commit))
    }

    async fn record_status(
        &self,
        name: &str,
        status: &str,
        last_error: Option<&str>,
        progress: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        delegate!(self, "recording a subscription's status", store => store.record_status(name, status, last_error, progress))
    }

    async fn lag(&self, name: &str) -> Result<u64, StoreError> {
        delegate!(self, "measuring a subscription's lag", store => store.lag(name))
    }

    async fn reset(
        &self,
        name: &str,
        position: Position,
        clear_state: bool,
    ) -> Result<SubscriptionRecord, StoreError> {
        delegate!(self, "resetting a subscription", store => store.reset(name, position, clear_state))
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>, StoreError> {
        delegate!(self, "listing parked events", store => store.parked(subscription))
    }

    async fn request_replay(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, "requesting a replay", store => store.request_replay(selection))
    }

    async fn skip_parked(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, "skipping parked events", store => store.skip_parked(selection))
    }

    async fn replay_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<(ParkedEvent, Event)>, StoreError> {
        delegate!(self, "reading replay requests", store => store.replay_requests(subscription))
    }

    async fn state_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        delegate!(self, "reading state", store => store.state_get(namespace, key))
    }

    async fn state_get_many(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        delegate!(self, "reading state", store => store.state_get_many(namespace, keys))
    }

    async fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, "reading state", store => store.state_scan(namespace, prefix, start_after, limit))
    }
}

impl DeliveryStore for Store {
    async fn pending_deliveries(
        &self,
        sink: &str,
        limit: usize,
        bytes: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        delegate!(self, "reading pending messages", store => store.pending_deliveries(sink, limit, bytes))
    }

    async fn record_attempt(&self, id: i64, outcome: &AttemptOutcome) -> Result<bool, StoreError> {
        delegate!(self, "recording a delivery attempt", store => store.record_attempt(id, outcome))
    }

    async fn record_delivered(&self, ids: &[i64]) -> Result<u64, StoreError> {
        delegate!(self, "recording deliveries", store => store.record_delivered(ids))
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        delegate!(self, "listing messages", store => store.deliveries(query))
    }

    async fn retry_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, "retrying messages", store => store.retry_deliveries(selection))
    }

    async fn skip_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, "skipping messages", store => store.skip_deliveries(selection))
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        delegate!(self, "pruning delivered messages", store => store.prune_deliveries(before))
    }
}

impl PluginRecords for Store {
    async fn record_plugin(&self, record: &PluginRecord) -> Result<(), StoreError> {
        delegate!(self, "recording a plugin", store => store.record_plugin(record))
    }

    async fn plugin_records(&self) -> Result<Vec<PluginRecord>, StoreError> {
        delegate!(self, "listing plugins", store => store.plugin_records())
    }
}

/// Checks every append of a transaction before it begins.
fn prepare_all(
    appends: &[PendingAppend],
    limits: StoreLimits,
) -> Result<Vec<Vec<PreparedEvent>>, StoreError> {
    appends
        .iter()
        .enumerate()
        .map(|(index, append)| {
            eventhost_domain::append::prepare(&append.stream, &append.events, limits)
                .map_err(|error| StoreError::from(error).in_append(index))
        })
        .collect()
}
