//! Durable subscriptions: checkpoints, per-subscription state and parked events.
//!
//! The one write that matters is [`SubscriptionStore::commit_batch`]: a batch's emitted
//! events, its state changes, its messages for sinks, an optional parked event and the new
//! checkpoint land in one transaction, and only if nothing changed the subscription since
//! the batch began: each subscription has a revision that every commit and every operator
//! request that changes it (reset, clearing state, skipping a parked event) raises, and a
//! commit names the revision it started from. Two daemons, or a daemon and an operator's
//! request, can therefore never both act on the same view of a subscription, and whatever a
//! daemon keeps of it between batches (its state, cached) cannot outlive a change.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Checkpoint, Filter, StoreError};
use eventhost_domain::{Event, ExpectedVersion, Message, NewEvent, Position, StreamId};

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionRecord {
    /// `<plugin>.<subscription>`.
    pub name: String,
    pub plugin: String,
    #[serde(skip)]
    pub filter: Filter,
    /// `<transaction>:<position>` (the transaction 0 on SQLite).
    #[serde(serialize_with = "display")]
    #[schema(value_type = String)]
    pub checkpoint: Checkpoint,
    /// Raised by every change: each batch's commit, each operator request that changes it.
    #[serde(skip)]
    #[schema(ignore)]
    pub revision: u64,
    /// `running`, `failing` (retrying a batch) or `stopped` (its plugin is gone).
    pub status: String,
    pub last_error: Option<String>,
    /// The daemon that runs it (PostgreSQL): the holder of its unexpired lease, if any.
    #[schema(value_type = Option<String>)]
    pub owner: Option<Uuid>,
    /// The daemon's latest progress report (events/s, lag, estimated time left).
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

fn display<S: serde::Serializer>(value: &Checkpoint, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Events a batch appends when it commits.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// An event that keeps failing, set aside so its subscription can go on.
#[derive(Debug, Clone, PartialEq)]
pub struct Park {
    pub event_id: Uuid,
    pub position: Position,
    pub error: String,
    pub attempts: u32,
}

/// Everything one handled batch changes, committed atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommit {
    pub subscription: String,
    /// The subscription's revision when the batch began: the commit fails if anything
    /// changed the subscription since, and raises it by one.
    pub revision: u64,
    /// The checkpoint the batch was read after.
    pub from: Checkpoint,
    /// The checkpoint after the batch's last event.
    pub to: Checkpoint,
    pub appends: Vec<PendingAppend>,
    /// Final values of the keys the batch touched (`None`: deleted).
    pub state: Vec<(String, Option<String>)>,
    /// Messages to deliver, each enqueued once (a message whose sink already has its id is
    /// the same message, and is not enqueued again).
    pub messages: Vec<Message>,
    pub park: Option<Park>,
    /// The parked event this commit resolves (a replay): it is deleted with the commit.
    pub replayed: Option<i64>,
    /// The daemon whose lease the commit needs (PostgreSQL, several daemons): it fails with
    /// [`StoreError::LeaseLost`] unless that daemon holds the subscription's unexpired lease.
    pub lease: Option<Uuid>,
}

impl BatchCommit {
    /// A commit that only moves the checkpoint, made at `revision`.
    pub fn advance(subscription: &str, revision: u64, from: Checkpoint, to: Checkpoint) -> Self {
        Self {
            subscription: subscription.to_owned(),
            revision,
            from,
            to,
            appends: Vec::new(),
            state: Vec::new(),
            messages: Vec::new(),
            park: None,
            replayed: None,
            lease: None,
        }
    }
}

impl BatchCommit {
    /// Refuses, before any database work, what the database cannot keep: a NUL character in
    /// a state key or value or in a parked event's error. Such a commit is the batch's
    /// fault (`StoreError::Invalid`), never a store failure to retry.
    pub(crate) fn check_content(&self) -> Result<(), StoreError> {
        let nul_in_state = self.state.iter().any(|(key, value)| {
            key.contains('\0') || value.as_ref().is_some_and(|value| value.contains('\0'))
        });
        if nul_in_state {
            return Err(StoreError::Invalid(
                "a state key or value holds a NUL character, which the store cannot keep".into(),
            ));
        }
        if self
            .park
            .as_ref()
            .is_some_and(|park| park.error.contains('\0'))
        {
            return Err(StoreError::Invalid(
                "a parked event's error holds a NUL character".into(),
            ));
        }
        Ok(())
    }
}

/// The values `found` (key, value) for `keys`, one per key in order (`None`: not found).
pub(crate) fn in_order(keys: &[String], found: Vec<(String, String)>) -> Vec<Option<String>> {
    let found: std::collections::HashMap<String, String> = found.into_iter().collect();
    keys.iter().map(|key| found.get(key).cloned()).collect()
}

/// A parked event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParkedEvent {
    pub id: i64,
    pub subscription: String,
    pub event_id: Uuid,
    pub position: Position,
    pub error: String,
    pub attempts: u32,
    pub parked_at: DateTime<Utc>,
    pub replay_requested: bool,
}

/// One subscription's parked events, summed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedSummary {
    pub subscription: String,
    pub parked: u64,
    /// When the oldest of them was parked.
    pub oldest: DateTime<Utc>,
}

/// A subscription as one version of its plugin defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionDefinition {
    /// `<plugin>.<subscription>`.
    pub name: String,
    pub filter: Filter,
    /// Where a new subscription, or one that starts fresh, begins.
    pub start: Checkpoint,
}

/// A subscription after [`SubscriptionStore::define_subscriptions`].
#[derive(Debug, Clone, PartialEq)]
pub struct DefinedSubscription {
    pub record: SubscriptionRecord,
    /// Its stored filter matched other events: it went back to its start, state cleared.
    pub restarted: bool,
}

/// What a definition does to the subscription stored under its name (`None`: none is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Definition {
    Create,
    Keep,
    Restart,
}

impl Definition {
    pub(crate) fn of(definition: &SubscriptionDefinition, stored: Option<Filter>) -> Self {
        match stored.map(Filter::canonical) {
            None => Self::Create,
            Some(filter) if filter == definition.filter.clone().canonical() => Self::Keep,
            Some(_) => Self::Restart,
        }
    }
}

/// Which parked events an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkedSelection<'a> {
    One(i64),
    AllOf(Option<&'a str>),
}

/// The subscription operations every store offers.
pub trait SubscriptionStore: Send + Sync {
    /// Creates or updates the subscriptions of `plugin`, all in one transaction: all of them
    /// or none. A new subscription begins at its `start`. An existing one records the plugin
    /// and the filter; if its stored filter matched other events (lists compared as sets), it
    /// starts fresh in the same transaction: its checkpoint goes back to `start` and its last
    /// error and state are cleared. Otherwise it keeps its checkpoint and state.
    fn define_subscriptions(
        &self,
        plugin: &str,
        definitions: &[SubscriptionDefinition],
    ) -> impl Future<Output = Result<Vec<DefinedSubscription>, StoreError>> + Send;

    /// [`define_subscriptions`](Self::define_subscriptions) for one subscription; returns it
    /// as stored.
    fn ensure_subscription(
        &self,
        name: &str,
        plugin: &str,
        filter: &Filter,
        start: Checkpoint,
    ) -> impl Future<Output = Result<SubscriptionRecord, StoreError>> + Send {
        let definition = SubscriptionDefinition {
            name: name.to_owned(),
            filter: filter.clone(),
            start,
        };
        async move {
            let mut defined = self
                .define_subscriptions(plugin, std::slice::from_ref(&definition))
                .await?;
            defined
                .pop()
                .map(|defined| defined.record)
                .ok_or_else(|| StoreError::NotFound(format!("subscription {:?}", definition.name)))
        }
    }

    fn subscription(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<SubscriptionRecord>, StoreError>> + Send;

    fn subscriptions(
        &self,
    ) -> impl Future<Output = Result<Vec<SubscriptionRecord>, StoreError>> + Send;

    /// Commits a batch; fails with [`StoreError::CheckpointMoved`] if the subscription's
    /// revision is no longer `commit.revision` (or its checkpoint not `commit.from`), and
    /// with a conflict if an append's expected version fails.
    fn commit_batch(
        &self,
        commit: &BatchCommit,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records the daemon's view of a subscription, for `subscriptions list`.
    fn record_status(
        &self,
        name: &str,
        status: &str,
        last_error: Option<&str>,
        progress: Option<&serde_json::Value>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many stored events match the subscription's filter after its checkpoint.
    fn lag(&self, name: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Moves the checkpoint so that every event after `position` (0: the beginning) comes
    /// again, in the subscription's order: just after `position`, or on PostgreSQL before
    /// the first later-positioned event an older transaction wrote. Optionally deletes the
    /// subscription's state, in one transaction that raises its revision (a batch in flight
    /// will not commit); returns the subscription as the reset left it. Parked events the subscription will now handle
    /// again (after the new checkpoint), or all of them with the state, are dropped: a
    /// replay would apply them twice.
    fn reset(
        &self,
        name: &str,
        position: Position,
        clear_state: bool,
    ) -> impl Future<Output = Result<SubscriptionRecord, StoreError>> + Send;

    fn parked(
        &self,
        subscription: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, StoreError>> + Send;

    /// Marks parked events for replay; returns how many were marked.
    fn request_replay(
        &self,
        selection: ParkedSelection<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes parked events without handling them, raising their subscriptions' revisions
    /// (a replay of one in flight will not re-park it); returns how many were deleted.
    fn skip_parked(
        &self,
        selection: ParkedSelection<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The parked events of `subscription` marked for replay, with the events themselves.
    fn replay_requests(
        &self,
        subscription: &str,
    ) -> impl Future<Output = Result<Vec<(ParkedEvent, Event)>, StoreError>> + Send;

    fn state_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// The values of `keys` in `namespace`, one per key in order, in one read.
    fn state_get_many(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<String>>, StoreError>> + Send;

    /// Entries whose key starts with `prefix`, in key order, after `start_after`.
    fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
}

/// Escapes `%`, `_` and `\` so a prefix can be used in `LIKE prefix || '%' ESCAPE '\'`.
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 1);
    for character in prefix.chars() {
        if matches!(character, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped.push('%');
    escaped
}
