//! The harness driver: appends fixture events, then runs every subscription of the plugin in
//! batches until nothing is left to deliver, as the daemon would.
//!
//! Each subscription has a checkpoint (a position). A round takes, for each subscription, the
//! next events after its checkpoint that pass its filters, up to its batch size, and calls
//! `handle`; a successful batch's emitted events and state are applied to the store (emitted
//! events are delivered to matching subscriptions in later rounds). A failed batch is retried
//! one event at a time, like the daemon isolating a poison event: good events commit, failing
//! ones are recorded in [`HarnessRun::errors`] and skipped (the daemon would park them).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use eventhost_domain::input::EventLine;
use eventhost_domain::{AppendError, Event, ExpectedVersion, Message, NewEvent, StreamId};
use eventhost_runtime::{
    Effects, FailedBatch, HandleError, LogLine, Plugin, Reads, SubscriptionSpec, capped_batch_size,
};

use crate::memory::MemoryStore;

/// The most batches one [`Harness::run`] handles before declaring a feedback loop.
pub const MAX_BATCHES: usize = 100_000;

/// Drives one plugin over an in-memory store.
pub struct Harness {
    plugin: Plugin,
    store: MemoryStore,
    checkpoints: BTreeMap<String, u64>,
    run: HarnessRun,
    /// The sidecar's cap on every subscription's batch size.
    max_batch_size: Option<u32>,
}

/// Everything the plugin did so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HarnessRun {
    /// Events the plugin emitted, as stored, in position order.
    pub emitted: Vec<Event>,
    /// Messages for sinks the committed batches asked for, in commit order (never sent).
    pub messages: Vec<Message>,
    /// What each subscription logged, in order.
    pub logs: Vec<SubscriptionLog>,
    /// Events the plugin could not handle.
    pub errors: Vec<HandlerFailure>,
    /// How many `handle` calls were made.
    pub batches: usize,
}

/// A log line and the subscription that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionLog {
    pub subscription: String,
    #[serde(flatten)]
    pub line: LogLine,
}

/// An event a subscription failed on (after retrying it alone), or a batch whose effects
/// could not be committed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerFailure {
    pub subscription: String,
    pub event_ids: Vec<Uuid>,
    pub error: String,
    pub retryable: bool,
}

/// The harness could not drive the plugin.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("fixture event {index} (stream {stream}) was refused: {source}")]
    Fixture {
        index: usize,
        stream: StreamId,
        source: Box<AppendError>,
    },
    #[error(
        "the plugin did not settle after {MAX_BATCHES} batches: do its subscriptions feed each other for ever?"
    )]
    NotQuiescent,
}

impl Harness {
    /// A harness over an empty store. Subscriptions that start from `now` start here, so
    /// they still see every event appended through the harness.
    pub fn new(plugin: Plugin) -> Self {
        let checkpoints = plugin
            .info()
            .subscriptions
            .iter()
            .map(|subscription| (subscription.name.clone(), 0))
            .collect();
        Self {
            plugin,
            store: MemoryStore::new(),
            checkpoints,
            run: HarnessRun::default(),
            max_batch_size: None,
        }
    }

    /// Grants the plugin the sinks named in `sinks` (and no other), as an operator's sidecar
    /// `sinks` does; before the first run.
    pub fn grant(&mut self, sinks: impl IntoIterator<Item = String>) {
        self.plugin.grant(sinks);
    }

    /// Caps every subscription's batches, as an operator's sidecar `batch_size` does.
    pub fn with_max_batch_size(mut self, cap: Option<u32>) -> Self {
        self.max_batch_size = cap;
        self
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// What the plugin did so far.
    pub fn run_so_far(&self) -> &HarnessRun {
        &self.run
    }

    /// A subscription's committed state.
    pub fn state(&self, subscription: &str) -> BTreeMap<String, String> {
        self.store.state(&self.namespace(subscription))
    }

    /// Appends events as an application would (not delivered until [`run`](Self::run)).
    pub fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, AppendError> {
        self.store.append(stream, expected, events)
    }

    /// Appends fixture lines in order, each as its own append.
    pub fn append_fixture(&mut self, fixture: &[EventLine]) -> Result<(), DriveError> {
        for (index, line) in fixture.iter().enumerate() {
            self.append(
                &line.stream(),
                line.expected_version,
                vec![line.new_event()],
            )
            .map_err(|source| DriveError::Fixture {
                index: index + 1,
                stream: line.stream(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Resets a subscription as `eventhost subscriptions reset` does: its state is cleared and
    /// every stored event will be delivered to it again by the next [`run`](Self::run).
    pub fn reset(&mut self, subscription: &str) {
        self.store.clear_state(&self.namespace(subscription));
        self.checkpoints.insert(subscription.to_owned(), 0);
    }

    /// Delivers every pending event to every matching subscription until none is left.
    pub async fn run(&mut self) -> Result<&HarnessRun, DriveError> {
        let subscriptions = self.plugin.info().subscriptions.clone();
        loop {
            let mut progressed = false;
            for subscription in &subscriptions {
                if self.run.batches >= MAX_BATCHES {
                    return Err(DriveError::NotQuiescent);
                }
                progressed |= self.step(subscription).await;
            }
            if !progressed {
                return Ok(&self.run);
            }
        }
    }

    /// Runs the next batch of one subscription, if it has one.
    async fn step(&mut self, subscription: &SubscriptionSpec) -> bool {
        let checkpoint = self
            .checkpoints
            .get(&subscription.name)
            .copied()
            .unwrap_or(0);
        let batch = self.next_batch(subscription, checkpoint);
        let Some(last) = batch.last().map(|event| event.position) else {
            self.checkpoints
                .insert(subscription.name.clone(), self.store.head());
            return false;
        };
        if let Err(failed) = self.deliver(&subscription.name, &batch).await {
            self.isolate(&subscription.name, &batch, failed).await;
        }
        self.checkpoints.insert(subscription.name.clone(), last);
        true
    }

    fn next_batch(&self, subscription: &SubscriptionSpec, checkpoint: u64) -> Vec<Event> {
        self.store
            .events_after(checkpoint)
            .into_iter()
            .filter(|event| subscription.matches(event))
            .take(capped_batch_size(subscription.batch_size, self.max_batch_size) as usize)
            .collect()
    }

    /// Handles and commits one batch; on failure nothing is committed.
    async fn deliver(&mut self, subscription: &str, batch: &[Event]) -> Result<(), FailedBatch> {
        self.run.batches += 1;
        let reads: Arc<dyn Reads> = Arc::new(self.store.clone());
        let effects = self
            .plugin
            .handle_keeping_logs(subscription, batch, reads)
            .await;
        let effects = effects.inspect_err(|failed| self.record_logs(subscription, &failed.logs))?;
        self.record_logs(subscription, &effects.logs);
        self.commit(subscription, effects)
    }

    /// Commits a batch's effects, all or nothing as the daemon's commit: the emit groups,
    /// then the state. A group the store refuses (a partial duplicate, a version conflict)
    /// fails the batch, as it fails the daemon's commit.
    fn commit(&mut self, subscription: &str, effects: Effects) -> Result<(), FailedBatch> {
        let groups = effects
            .emitted
            .into_iter()
            .map(|emit| (emit.stream, emit.expected, emit.events))
            .collect();
        let stored = self
            .store
            .append_all(groups)
            .map_err(|refused| FailedBatch {
                error: HandleError::Host {
                    message: format!("commit failed: {refused}"),
                },
                logs: Vec::new(),
            })?;
        self.run.emitted.extend(stored);
        self.run.messages.extend(effects.messages);
        let namespace = self.namespace(subscription);
        self.store.apply_state(&namespace, &effects.state);
        Ok(())
    }

    /// Retries a failed batch one event at a time, recording the events that still fail.
    async fn isolate(&mut self, subscription: &str, batch: &[Event], failed: FailedBatch) {
        if batch.len() == 1 {
            self.record_failure(subscription, batch, &failed.error);
            return;
        }
        for event in batch {
            if let Err(failed) = self
                .deliver(subscription, std::slice::from_ref(event))
                .await
            {
                self.record_failure(subscription, std::slice::from_ref(event), &failed.error);
            }
        }
    }

    fn record_failure(&mut self, subscription: &str, events: &[Event], error: &HandleError) {
        self.run.errors.push(HandlerFailure {
            subscription: subscription.to_owned(),
            event_ids: events.iter().map(|event| event.id).collect(),
            error: error.to_string(),
            retryable: error.is_retryable(),
        });
    }

    fn record_logs(&mut self, subscription: &str, lines: &[LogLine]) {
        let logs = lines.iter().map(|line| SubscriptionLog {
            subscription: subscription.to_owned(),
            line: line.clone(),
        });
        self.run.logs.extend(logs);
    }

    fn namespace(&self, subscription: &str) -> String {
        format!("{}.{subscription}", self.plugin.info().name)
    }
}
