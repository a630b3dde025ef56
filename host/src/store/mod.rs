//! The event store: one trait, two implementations (PostgreSQL, embedded SQLite).
//!
//! Guarantees every implementation keeps (checked by `tests/store_conformance.rs` against
//! both): appends are atomic and version-checked; re-appending stored ids is idempotent;
//! `read_batch` never skips an event, never returns one twice, and returns each stream's
//! events in version order, whatever order concurrent writers commit in.

mod checkpoint;
mod error;
mod plugins;
mod postgres;
mod sqlite;
mod subscriptions;

use std::future::Future;

use uuid::Uuid;

pub use checkpoint::Checkpoint;
pub use error::StoreError;
pub use plugins::{PluginRecord, PluginRecords};
pub use postgres::{CONTROL_NOTIFICATION, NOTIFY_CHANNEL, PgStore};
pub use sqlite::SqliteStore;
pub use subscriptions::{
    BatchCommit, Park, ParkedEvent, ParkedSelection, PendingAppend, SubscriptionRecord,
    SubscriptionStore,
};

use crate::event::{Event, ExpectedVersion, NewEvent, Position, StreamId, Version};

/// Limits the store enforces on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// The largest payload, in bytes of compact JSON text.
    pub max_payload_bytes: usize,
    /// The most events one append may carry.
    pub max_events_per_append: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The appended (or, for a duplicate, the already stored) events, in version order.
    pub events: Vec<AppendedEvent>,
    /// True when every id was already stored in this stream: nothing was written.
    pub duplicate: bool,
}

impl Appended {
    /// The stream's version after the last of these events.
    pub fn last_version(&self) -> Version {
        self.events.last().map_or(0, |event| event.version)
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEvent {
    pub id: Uuid,
    pub version: Version,
    pub position: Position,
}

/// Which events a subscription receives. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub aggregate_types: Vec<String>,
    pub event_types: Vec<String>,
}

impl Filter {
    /// The same filter with each list sorted and without repeats: two filters that match the
    /// same events compare equal in this form.
    pub fn canonical(mut self) -> Self {
        for list in [&mut self.aggregate_types, &mut self.event_types] {
            list.sort();
            list.dedup();
        }
        self
    }

    pub fn matches(&self, event: &Event) -> bool {
        (self.aggregate_types.is_empty() || self.aggregate_types.contains(&event.aggregate_type))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// An event read for a subscription, with the checkpoint that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    pub checkpoint: Checkpoint,
    pub event: Event,
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

    /// Committed events after `after`, in position order, of one aggregate type or of all
    /// (`None`). A listing, not a subscription: use `read_batch` to follow the store live.
    fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// The next events after `after` that match `filter`, at most `limit`, in the gap-free
    /// subscription order.
    fn read_batch(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: usize,
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

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call.await,
            Store::Sqlite($store) => $call.await,
        }
    };
}

impl EventStore for Store {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Appended, StoreError> {
        delegate!(self, store => store.append(stream, expected, events))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        delegate!(self, store => store.stream_version(stream))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        delegate!(self, store => store.read_stream(stream, from_version, limit))
    }

    async fn read_positions(
        &self,
        aggregate_type: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        delegate!(self, store => store.read_positions(aggregate_type, after, limit))
    }

    async fn read_batch(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<BatchEntry>, StoreError> {
        delegate!(self, store => store.read_batch(after, filter, limit))
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        delegate!(self, store => store.head())
    }
}

/// An event ready to be written: validated, with its id fixed and its JSON encoded once.
#[derive(Debug, Clone)]
struct PreparedEvent {
    id: Uuid,
    event_type: String,
    payload: String,
    metadata: String,
}

/// Checks an append against `limits` before any database work, so bad input writes nothing.
fn prepare(
    stream: &StreamId,
    events: &[NewEvent],
    limits: StoreLimits,
) -> Result<Vec<PreparedEvent>, StoreError> {
    if stream.aggregate_type.is_empty() || stream.aggregate_id.is_empty() {
        return Err(StoreError::Invalid(
            "aggregate_type and aggregate_id must not be empty".into(),
        ));
    }
    if events.is_empty() {
        return Err(StoreError::Invalid(
            "an append needs at least one event".into(),
        ));
    }
    if events.len() > limits.max_events_per_append {
        return Err(StoreError::Invalid(format!(
            "an append may carry at most {} events, got {}",
            limits.max_events_per_append,
            events.len()
        )));
    }
    events
        .iter()
        .enumerate()
        .map(|(index, event)| prepare_event(index, event, limits))
        .collect()
}

fn prepare_event(
    index: usize,
    event: &NewEvent,
    limits: StoreLimits,
) -> Result<PreparedEvent, StoreError> {
    if event.event_type.is_empty() {
        return Err(StoreError::Invalid(format!(
            "event {index}: event_type must not be empty"
        )));
    }
    let payload = event.payload.to_string();
    if payload.len() > limits.max_payload_bytes {
        return Err(StoreError::PayloadTooLarge {
            index,
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    let metadata = serde_json::to_string(&event.metadata)
        .map_err(|error| StoreError::Invalid(format!("event {index}: metadata: {error}")))?;
    Ok(PreparedEvent {
        id: event.id.unwrap_or_else(Uuid::now_v7),
        event_type: event.event_type.clone(),
        payload,
        metadata,
    })
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
    async fn ensure_subscription(
        &self,
        name: &str,
        plugin: &str,
        filter: &Filter,
        start: Checkpoint,
    ) -> Result<SubscriptionRecord, StoreError> {
        delegate!(self, store => store.ensure_subscription(name, plugin, filter, start))
    }

    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        delegate!(self, store => store.subscription(name))
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        delegate!(self, store => store.subscriptions())
    }

    async fn commit_batch(&self, commit: &BatchCommit) -> Result<(), StoreError> {
        delegate!(self, store => store.commit_batch(commit))
    }

    async fn record_status(
        &self,
        name: &str,
        status: &str,
        last_error: Option<&str>,
        progress: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        delegate!(self, store => store.record_status(name, status, last_error, progress))
    }

    async fn lag(&self, name: &str) -> Result<u64, StoreError> {
        delegate!(self, store => store.lag(name))
    }

    async fn reset(
        &self,
        name: &str,
        position: Position,
        clear_state: bool,
    ) -> Result<SubscriptionRecord, StoreError> {
        delegate!(self, store => store.reset(name, position, clear_state))
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>, StoreError> {
        delegate!(self, store => store.parked(subscription))
    }

    async fn request_replay(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, store => store.request_replay(selection))
    }

    async fn skip_parked(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        delegate!(self, store => store.skip_parked(selection))
    }

    async fn replay_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<(ParkedEvent, Event)>, StoreError> {
        delegate!(self, store => store.replay_requests(subscription))
    }

    async fn state_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        delegate!(self, store => store.state_get(namespace, key))
    }

    async fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, store => store.state_scan(namespace, prefix, start_after, limit))
    }
}

impl PluginRecords for Store {
    async fn record_plugin(&self, record: &PluginRecord) -> Result<(), StoreError> {
        delegate!(self, store => store.record_plugin(record))
    }

    async fn plugin_records(&self) -> Result<Vec<PluginRecord>, StoreError> {
        delegate!(self, store => store.plugin_records())
    }
}

#[cfg(test)]
mod tests {
    use super::Filter;

    fn filter(aggregate_types: &[&str], event_types: &[&str]) -> Filter {
        let owned = |list: &[&str]| list.iter().map(|item| (*item).to_owned()).collect();
        Filter {
            aggregate_types: owned(aggregate_types),
            event_types: owned(event_types),
        }
    }

    #[test]
    fn filters_matching_the_same_events_are_equal_in_canonical_form() {
        assert_eq!(
            filter(&["order", "cart", "order"], &["b", "a"]).canonical(),
            filter(&["cart", "order"], &["a", "b"]).canonical()
        );
        assert_ne!(
            filter(&["order"], &[]).canonical(),
            filter(&["order", "cart"], &[]).canonical()
        );
    }
}
