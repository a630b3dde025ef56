//! What the command line and the HTTP API both do, written once so the two never disagree:
//! each call takes the store and returns records that the CLI prints as lines and the API
//! sends as JSON.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use eventhost_domain::input::EventLine;
use eventhost_domain::{Appended, ExpectedVersion, NewEvent, Position, StreamId, Version};
use eventhost_store::{
    DaemonRecord, DeliverySelection, DeliveryStore, EventStore, ParkedEvent, ParkedSelection,
    PendingAppend, Store, StoreError, SubscriptionRecord, SubscriptionStore, Writer,
};

/// How long an open transaction must have been holding events back before the faces show
/// the subscriptions waiting on it as `held back`.
pub const HELD_BACK_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Where one appended event landed, as both faces report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppendedRecord {
    pub id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: Version,
    pub position: Position,
    /// True when the event's append was a retry: every id of it was already stored, and
    /// nothing was written.
    pub duplicate: bool,
}

/// Appends every line, each to its own stream with its own expected version, in one
/// transaction: all of them or none. A refused line is named by its index in
/// [`StoreError::InAppend`].
pub async fn append_lines(
    store: &Store,
    lines: &[EventLine],
) -> Result<Vec<AppendedRecord>, StoreError> {
    let appends: Vec<PendingAppend> = lines
        .iter()
        .map(|line| PendingAppend {
            stream: line.stream(),
            expected: line.expected_version,
            events: vec![line.new_event()],
        })
        .collect();
    let appended = store.append_all(&appends).await?;
    Ok(appends
        .iter()
        .zip(&appended)
        .flat_map(|(append, appended)| records(&append.stream, appended))
        .collect())
}

/// Appends `events` to one stream atomically if it is at `expected`.
pub async fn append_stream(
    store: &Store,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<AppendedRecord>, StoreError> {
    let appended = store.append(stream, expected, events).await?;
    Ok(records(stream, &appended).collect())
}

/// Where each event of one stream's append landed.
fn records<'a>(
    stream: &'a StreamId,
    appended: &'a Appended,
) -> impl Iterator<Item = AppendedRecord> + 'a {
    appended.events.iter().map(move |event| AppendedRecord {
        id: event.id,
        aggregate_type: stream.aggregate_type.clone(),
        aggregate_id: stream.aggregate_id.clone(),
        version: event.version,
        position: event.position,
        duplicate: appended.duplicate,
    })
}

/// A subscription as operators see it: its record, where it is and how far behind.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub record: SubscriptionRecord,
    /// The position of the last event it handled (0: none yet).
    pub position: Position,
    /// Events it still has to handle.
    pub lag: u64,
    /// Its events that failed and wait in `parked list` for an operator.
    pub parked: u64,
    /// How long ago the oldest of them was appended, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// On PostgreSQL, the open transaction its next events wait for (status `held back`):
    /// they committed after it began, so no subscription may read them until it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<Writer>,
}

/// The daemons running on the database, oldest first, each with what it runs: on
/// PostgreSQL the live members; none on SQLite, which runs one daemon and no membership.
pub async fn daemons(store: &Store) -> Result<Vec<DaemonRecord>, StoreError> {
    match store {
        Store::Postgres(store) => store.daemons().await,
        Store::Sqlite(_) => Ok(Vec::new()),
    }
}

/// Every subscription, by name, with its lag.
pub async fn subscriptions(store: &Store) -> Result<Vec<SubscriptionView>, StoreError> {
    let holder = holder(store).await?;
    let parked = parked_counts(store).await?;
    let mut views = Vec::new();
    for record in store.subscriptions().await? {
        let parked = parked.get(&record.name).copied().unwrap_or(0);
        views.push(view(store, record, holder.as_ref(), parked).await?);
    }
    Ok(views)
}

/// The open transaction that has held events back for [`HELD_BACK_AFTER`] or longer, if
/// any: the oldest writer of the cluster while committed events wait for it.
pub async fn holder(store: &Store) -> Result<Option<Writer>, StoreError> {
    if store.held_back(1).await? == 0 {
        return Ok(None);
    }
    Ok(store
        .oldest_writer()
        .await?
        .filter(|writer| writer.age >= HELD_BACK_AFTER))
}

/// How many events each subscription has parked (none listed: none parked).
async fn parked_counts(store: &Store) -> Result<HashMap<String, u64>, StoreError> {
    Ok(store
        .parked_summary()
        .await?
        .into_iter()
        .map(|summary| (summary.subscription, summary.parked))
        .collect())
}

async fn view(
    store: &Store,
    mut record: SubscriptionRecord,
    holder: Option<&Writer>,
    parked: u64,
) -> Result<SubscriptionView, StoreError> {
    // At the record's checkpoint: a reset's answer is what it set, whatever the daemon did
    // since.
    let lag = store.count_after(record.checkpoint, &record.filter).await?;
    let next = store
        .read_batch(record.checkpoint, &record.filter, 1)
        .await?;
    let lag_seconds = next
        .first()
        .map_or(0.0, |entry| age_seconds(entry.event.recorded_at));
    // Events to handle, none of them readable: they wait for the holder.
    let held_back_by = holder.filter(|_| lag > 0 && next.is_empty()).cloned();
    if held_back_by.is_some() {
        record.status = "held back".to_owned();
    }
    Ok(SubscriptionView {
        position: record.checkpoint.position(),
        lag,
        parked,
        lag_seconds,
        held_back_by,
        record,
    })
}

/// How long ago `since` was, in seconds (0 for a time in the future: clocks differ).
pub fn age_seconds(since: chrono::DateTime<chrono::Utc>) -> f64 {
    let age = chrono::Utc::now() - since;
    age.num_milliseconds().max(0) as f64 / 1000.0
}

/// Moves a subscription's checkpoint to just after `to` (0: the beginning), optionally
/// deleting its state; a running daemon drops the batch in flight and resumes from there.
pub async fn reset(
    store: &Store,
    name: &str,
    to: Position,
    clear_state: bool,
) -> Result<SubscriptionView, StoreError> {
    let record = store.reset(name, to, clear_state).await?;
    let parked = parked_counts(store).await?.get(name).copied().unwrap_or(0);
    view(store, record, holder(store).await?.as_ref(), parked).await
}

/// Marks parked events for replay: one (which must exist) or every one of a subscription
/// or of all; returns how many. The running daemon handles them between batches.
pub async fn replay_parked(
    store: &Store,
    selection: ParkedSelection<'_>,
) -> Result<u64, StoreError> {
    let marked = store.request_replay(selection).await?;
    match selection {
        ParkedSelection::One(id) if marked == 0 => Err(parked_not_found(id)),
        _ => Ok(marked),
    }
}

/// Parked events, oldest first: every subscription's, or one's (which must exist).
pub async fn parked(
    store: &Store,
    subscription: Option<&str>,
) -> Result<Vec<ParkedEvent>, StoreError> {
    if let Some(name) = subscription
        && store.subscription(name).await?.is_none()
    {
        return Err(subscription_not_found(name));
    }
    store.parked(subscription).await
}

/// Drops a parked event for good, without handling it.
pub async fn skip_parked(store: &Store, id: i64) -> Result<(), StoreError> {
    match store.skip_parked(ParkedSelection::One(id)).await? {
        0 => Err(parked_not_found(id)),
        _ => Ok(()),
    }
}

fn subscription_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("subscription {name:?}"))
}

fn parked_not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("parked event {id}"))
}

/// Makes dead or skipped messages pending again: one (which must be dead or skipped) or
/// every one of a sink or of all; returns how many.
pub async fn retry_deliveries(
    store: &Store,
    selection: DeliverySelection<'_>,
) -> Result<u64, StoreError> {
    let retried = store.retry_deliveries(selection).await?;
    match selection {
        DeliverySelection::One(id) if retried == 0 => Err(StoreError::NotFound(format!(
            "dead or skipped message {id}"
        ))),
        _ => Ok(retried),
    }
}

/// Gives up on a pending or dead message.
pub async fn skip_delivery(store: &Store, id: i64) -> Result<(), StoreError> {
    match store.skip_deliveries(DeliverySelection::One(id)).await? {
        0 => Err(StoreError::NotFound(format!(
            "pending or dead message {id}"
        ))),
        _ => Ok(()),
    }
}

/// One entry of a subscription's state: values that are JSON documents as such, others as
/// strings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StateEntry {
    pub key: String,
    pub value: serde_json::Value,
}

/// A page of a subscription's state (which must exist): keys starting with `prefix`, after
/// `after`, in key order.
pub async fn state_page(
    store: &Store,
    subscription: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StateEntry>, StoreError> {
    if store.subscription(subscription).await?.is_none() {
        return Err(subscription_not_found(subscription));
    }
    let page = store.state_scan(subscription, prefix, after, limit).await?;
    Ok(page
        .into_iter()
        .map(|(key, value)| StateEntry {
            value: serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value)),
            key,
        })
        .collect())
}
