//! One subscription's loop: read the next batch after the checkpoint, run the plugin, commit
//! the effects with the new checkpoint; on failure retry, then split to isolate the poison
//! event and park it, so the subscription goes on.
//!
//! No database transaction is open while the plugin runs: the batch is read, handled, and
//! then committed in one short transaction that checks the checkpoint has not moved.
//!
//! Catching up, the read of the next batch runs while the plugin handles the current one and
//! its effects commit: a full batch starts a [`Prefetch`] of the events after it, taken at
//! the next step only if the batch committed whole and the checkpoint is where the prefetch
//! began. A read is a gap-free prefix of what follows its checkpoint whenever it is made, so
//! an early read is never wrong, at most shorter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, debug_span, info, warn};
use uuid::Uuid;

use super::outage;
use super::progress::Progress;
use super::state_cache::{self, StateCache};
use super::wakeup::Wakeups;
use super::{DispatchConfig, Dispatchable};
use crate::shutdown::Shutdown;
use eventhost_domain::Event;
use eventhost_runtime::{Effects, HandleError, Reads};
use eventhost_store::{
    BatchCommit, BatchEntry, BatchLimit, Checkpoint, EventStore, Filter, Park, ParkedEvent,
    PendingAppend, Store, StoreError, SubscriptionStore,
};

/// How long a batch in flight may go on once shutdown is requested; then it is abandoned
/// (its effects were never committed, so nothing is lost) and the subscription stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The longest error message the daemon stores and logs for a failed batch; a longer one
/// (a plugin's error text is the plugin's to choose) is cut, and says so.
const MAX_ERROR_BYTES: usize = 4096;

/// Why a batch did not commit, when retrying or isolating may help.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    /// A failure whose message the store can keep: NUL characters replaced, cut to
    /// [`MAX_ERROR_BYTES`].
    fn new(message: String, retryable: bool) -> Self {
        let mut message = message.replace('\0', "\u{fffd}");
        if message.len() > MAX_ERROR_BYTES {
            let mut end = MAX_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("... (cut)");
        }
        Self { message, retryable }
    }
}

pub(crate) struct Worker {
    pub(crate) store: Store,
    /// The plugin's current version; swapped by hot reload. Read once per batch.
    pub(crate) slot: Arc<ArcSwap<Dispatchable>>,
    /// The version handling the batch in flight (retries and splits included).
    pub(crate) current: Arc<Dispatchable>,
    /// The plugin's own name for the subscription.
    pub(crate) subscription: String,
    /// The durable name, `<plugin>.<subscription>`.
    pub(crate) name: String,
    /// Fixed for the worker's life: a version that changes it gets a fresh worker.
    pub(crate) filter: Filter,
    pub(crate) config: DispatchConfig,
    /// The plugin's reads, its own state through `cache`.
    pub(crate) reads: Arc<dyn Reads>,
    /// The subscription's committed state as far as this worker knows it.
    pub(crate) cache: Arc<Mutex<StateCache>>,
    pub(crate) wakeups: Wakeups,
    pub(crate) shutdown: Shutdown,
    pub(crate) checkpoint: Checkpoint,
    /// The subscription's revision as this worker last knew it: its commits name it, and
    /// fail if anything else changed the subscription since (see `store::subscriptions`).
    pub(crate) revision: u64,
    /// The read of the batch after the last full one, in flight.
    pub(crate) prefetch: Option<Prefetch>,
    /// When replay requests were last looked for.
    pub(crate) replay_checked: Option<Instant>,
    /// Store errors since the last step that went through.
    pub(crate) store_failures: u32,
    /// The daemon whose lease every commit needs (PostgreSQL; see `leases`).
    pub(crate) owner: Option<Uuid>,
    /// A commit found the lease gone: this tenure is over.
    pub(crate) lease_lost: bool,
}

/// Where a worker starts, and where it stopped: its checkpoint and the subscription's
/// revision then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) revision: u64,
}

/// A `read_batch` running in its own task; aborted when dropped unused.
pub(crate) struct Prefetch {
    after: Checkpoint,
    limit: BatchLimit,
    task: AbortOnDropHandle<Result<Vec<BatchEntry>, StoreError>>,
}

impl Prefetch {
    fn start(store: &Store, filter: &Filter, after: Checkpoint, limit: BatchLimit) -> Self {
        let store = store.clone();
        let filter = filter.clone();
        let task = tokio::spawn(async move { store.read_batch(after, &filter, limit).await });
        Self {
            after,
            limit,
            task: AbortOnDropHandle::new(task),
        }
    }
}

enum Step {
    /// Handled a full batch: there may be more to read at once.
    Worked,
    /// Read everything readable: the next read waits for a wake-up (one that came meanwhile
    /// is still pending).
    CaughtUp,
}

/// What became of one try of a batch.
#[derive(Debug)]
enum Attempt {
    Committed,
    Failed(Failure),
    /// Shutdown came and the plugin did not finish within [`SHUTDOWN_GRACE`].
    Abandoned,
}

/// What became of a batch (or part of one) given to [`Worker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Every event's effects (or its parking) committed.
    Committed,
    /// Shutdown came first: the events from the first uncommitted one on are left for the
    /// next run, and the checkpoint stays before them.
    Abandoned,
}

impl Worker {
    /// Runs until shutdown; returns where it stopped.
    pub(crate) async fn run(mut self) -> Resume {
        self.work().await;
        self.resume()
    }

    /// Where the worker stands.
    pub(crate) fn resume(&self) -> Resume {
        Resume {
            checkpoint: self.checkpoint,
            revision: self.revision,
        }
    }

    /// Starts again at `resume` (a new lease's): nothing kept from before holds.
    pub(crate) fn restart_at(&mut self, resume: Resume) {
        self.checkpoint = resume.checkpoint;
        self.revision = resume.revision;
        self.prefetch = None;
        self.replay_checked = None;
        self.lease_lost = false;
        state_cache::lock(&self.cache).clear();
    }

    /// Works until shutdown, or until a commit finds the lease gone.
    pub(crate) async fn work(&mut self) {
        let mut progress = Progress::new(self.config.progress_interval);
        while !self.shutdown.is_requested() && !self.lease_lost {
            match self.step(&mut progress).await {
                Ok(step) => {
                    self.store_failures = 0;
                    self.wakeups.outages.reached(false);
                    if let Step::CaughtUp = step {
                        self.idle().await;
                    }
                }
                Err(error) => self.recover(error).await,
            }
            if !self.wakeups.outages.is_down() {
                progress.maybe_report(&self.store, &self.name).await;
            }
        }
        debug!(subscription = %self.name, "stopped");
    }

    async fn step(&mut self, progress: &mut Progress) -> Result<Step, StoreError> {
        self.current = self.slot.load_full();
        let Some(batch_size) = self.current.batch_size(&self.subscription) else {
            // The new version dropped this subscription; the dispatcher is stopping us.
            return Ok(Step::CaughtUp);
        };
        if self.replay_due() {
            self.replay_parked().await?;
            if self.shutdown.is_requested() {
                return Ok(Step::CaughtUp);
            }
        }
        let limit = BatchLimit {
            events: batch_size,
            bytes: self.config.batch_bytes,
        };
        let mut batch = self.read_batch(limit).await?;
        if batch.is_empty() {
            return Ok(if self.adopt_moved_checkpoint().await? {
                Step::Worked
            } else {
                Step::CaughtUp
            });
        }
        // Cut short by the limit, it may not be all that is readable.
        let full = limit.reached(&batch);
        // An event the store cannot read whole never reaches the plugin: the events before
        // it are handled, then it is parked with the reason, and the subscription goes on.
        let defect = batch.iter().position(|entry| entry.defect.is_some());
        if let Some(index) = defect {
            if index == 0 {
                self.park_unreadable(&batch[0]).await?;
                return Ok(Step::Worked);
            }
            batch.truncate(index);
        }
        if let Some(last) = batch.last().filter(|_| full && defect.is_none()) {
            self.prefetch = Some(Prefetch::start(
                &self.store,
                &self.filter,
                last.checkpoint,
                limit,
            ));
        }
        if state_cache::lock(&self.cache).wants_load() {
            StateCache::load(&self.cache, &*self.reads, &self.name).await;
        }
        if self.process(&batch, true).await? == Handled::Committed {
            progress.handled(batch.len());
        }
        Ok(if full || defect.is_some() {
            Step::Worked
        } else {
            Step::CaughtUp
        })
    }

    /// Parks an event whose stored row cannot be read, without giving it to the plugin.
    async fn park_unreadable(&mut self, entry: &BatchEntry) -> Result<(), StoreError> {
        let defect = entry.defect.as_deref().unwrap_or("unknown");
        let failure = Failure::new(format!("the stored event cannot be read: {defect}"), false);
        self.park(entry, failure, 0).await
    }

    /// The next batch after the checkpoint: the prefetched one when it was read from here
    /// with this size (a reset, a split that stopped short or a new version's batch size
    /// makes it stale), otherwise a fresh read.
    async fn read_batch(&mut self, limit: BatchLimit) -> Result<Vec<BatchEntry>, StoreError> {
        if let Some(mut prefetch) = self.prefetch.take()
            && prefetch.after == self.checkpoint
            && prefetch.limit == limit
        {
            match (&mut prefetch.task).await {
                Ok(read) => return read,
                Err(error) => {
                    debug!(subscription = %self.name, %error, "the prefetch did not finish; reading again");
                }
            }
        }
        self.store
            .read_batch(self.checkpoint, &self.filter, limit)
            .await
    }

    /// Waits for the next wake-up: the dispatcher's one look at the store sends it when
    /// events became readable or an operator's request came (see `wakeup.rs`).
    async fn idle(&mut self) {
        tokio::select! {
            changed = self.wakeups.any.changed() => {
                if changed.is_err() {
                    // No more wake-ups (the dispatcher is stopping): poll on our own, still
                    // minding shutdown.
                    self.pause(self.config.poll_interval).await;
                }
            }
            _ = self.shutdown.requested() => {}
        }
    }

    /// Whether to look for replay requests now: at the first step, after a control
    /// notification, and otherwise once a poll interval (SQLite's requests, or a lost
    /// notification). Not at every batch: the look-up is a round trip on the way from an
    /// append's commit to its handler.
    fn replay_due(&mut self) -> bool {
        let signalled = self.wakeups.control.has_changed().unwrap_or(false);
        let stale = self
            .replay_checked
            .is_none_or(|checked| checked.elapsed() >= self.config.poll_interval);
        if !(signalled || stale) {
            return false;
        }
        self.wakeups.control.mark_unchanged();
        self.replay_checked = Some(Instant::now());
        true
    }

    /// Sleeps, unless shutdown comes first.
    async fn pause(&mut self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.requested() => {}
        }
    }

    /// Takes the stored checkpoint and revision when an operator's request (or another
    /// daemon) changed the subscription while it had nothing to read: otherwise an idle
    /// subscription would only notice at its next commit. Checked after every empty read,
    /// one primary-key lookup.
    async fn adopt_moved_checkpoint(&mut self) -> Result<bool, StoreError> {
        let Some(record) = self.store.subscription(&self.name).await? else {
            return Ok(false);
        };
        if record.revision == self.revision && record.checkpoint == self.checkpoint {
            return Ok(false);
        }
        info!(
            subscription = %self.name, from = %self.checkpoint, to = %record.checkpoint,
            "subscription changed (an operator's request or another daemon); resuming from what is stored"
        );
        self.checkpoint = record.checkpoint;
        self.revision = record.revision;
        state_cache::lock(&self.cache).clear();
        Ok(true)
    }

    /// After a store error: say so (an outage once for all subscriptions, see `outage`),
    /// wait (from milliseconds, doubling, jittered; an outage's end cuts the wait short),
    /// and carry on from the stored checkpoint (which an operator's reset, another daemon,
    /// or a commit whose outcome was unknown may have moved).
    async fn recover(&mut self, error: StoreError) {
        // Whatever failed, the subscription may have changed unseen (or a commit whose
        // outcome is unknown may have landed): forget its state.
        state_cache::lock(&self.cache).clear();
        if let StoreError::LeaseLost { .. } = error {
            info!(subscription = %self.name, "lease lost while a batch was in flight (it expired, or another daemon took it): its effects were dropped, stopping the subscription here");
            self.lease_lost = true;
            return;
        }
        if let StoreError::CheckpointMoved { .. } = error {
            info!(subscription = %self.name, "subscription changed while a batch was in flight (an operator's request or another daemon); its effects were dropped, resuming from what is stored");
        } else {
            self.store_failures = self.store_failures.saturating_add(1);
            let delay = outage::retry_delay(self.store_failures, self.config.backoff_max);
            if self.wakeups.outages.failed(&error) {
                debug!(subscription = %self.name, %error, "the store is unreachable; retrying");
            } else {
                warn!(subscription = %self.name, %error, "store error; retrying");
                let _ = self
                    .store
                    .record_status(&self.name, "failing", Some(&error.to_string()), None)
                    .await;
            }
            let mut outages = self.wakeups.outages.clone();
            tokio::select! {
                () = outages.wait(delay) => {}
                _ = self.shutdown.requested() => return,
            }
        }
        match self.store.subscription(&self.name).await {
            Ok(Some(record)) => {
                self.checkpoint = record.checkpoint;
                self.revision = record.revision;
            }
            Ok(None) => warn!(subscription = %self.name, "subscription row is gone"),
            Err(error) => {
                if !self.wakeups.outages.failed(&error) {
                    warn!(subscription = %self.name, %error, "cannot reload the checkpoint");
                }
            }
        }
    }

    /// Handles `entries` and commits; on failure retries (the whole batch up to the attempt
    /// budget; halves once), then splits, down to one event, which it parks. A shutdown
    /// during a retry's pause abandons the rest: nothing after an uncommitted event may
    /// commit, or its checkpoint would pass over that event.
    async fn process(
        &mut self,
        entries: &[BatchEntry],
        whole: bool,
    ) -> Result<Handled, StoreError> {
        let attempts = if whole || entries.len() == 1 {
            self.config.max_attempts
        } else {
            1
        };
        let mut failure = None;
        let mut made = 0;
        for attempt in 1..=attempts {
            made = attempt;
            match self.attempt(entries).await? {
                Attempt::Committed => return Ok(Handled::Committed),
                Attempt::Abandoned => return Ok(Handled::Abandoned),
                Attempt::Failed(failed) => {
                    warn!(
                        subscription = %self.name, attempt, size = entries.len(),
                        first_position = entries[0].event.position, error = %failed.message,
                        "batch failed"
                    );
                    let retry = failed.retryable && attempt < attempts;
                    failure = Some(failed);
                    if !retry {
                        break;
                    }
                    self.record_failure(failure.as_ref()).await;
                    self.pause(self.backoff(attempt)).await;
                    if self.shutdown.is_requested() {
                        return Ok(Handled::Abandoned);
                    }
                }
            }
        }
        let failure = failure.unwrap_or_else(|| Failure::new("no attempt was made".into(), false));
        if let [entry] = entries {
            self.park(entry, failure, made).await?;
            return Ok(Handled::Committed);
        }
        let (left, right) = entries.split_at(entries.len() / 2);
        match Box::pin(self.process(left, false)).await? {
            Handled::Committed => Box::pin(self.process(right, false)).await,
            Handled::Abandoned => Ok(Handled::Abandoned),
        }
    }

    /// One try: run the plugin on `entries`, commit on success. `Err` is a store failure
    /// the caller cannot fix by retrying the batch.
    async fn attempt(&mut self, entries: &[BatchEntry]) -> Result<Attempt, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(Attempt::Committed);
        };
        let span = debug_span!(
            "batch",
            plugin = %self.current.handler.info().name,
            subscription = %self.name,
            size = entries.len(),
            first_position = entries[0].event.position,
            duration_us = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let outcome = self
            .handle_and_commit(entries, last.checkpoint)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let label = match &outcome {
            Ok(Attempt::Committed) => "committed",
            Ok(Attempt::Failed(_)) => "failed",
            Ok(Attempt::Abandoned) => "abandoned",
            Err(_) => "store_error",
        };
        span.record("duration_us", elapsed.as_micros() as u64);
        span.record("outcome", label);
        let subscription = self.name.clone();
        metrics::counter!("eventhost_batches_total", "subscription" => subscription.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("eventhost_batch_duration_seconds", "subscription" => subscription.clone())
            .record(elapsed);
        if label == "committed" {
            metrics::counter!("eventhost_events_handled_total", "subscription" => subscription)
                .increment(entries.len() as u64);
        }
        span.in_scope(|| debug!("batch done"));
        outcome
    }

    async fn handle_and_commit(
        &mut self,
        entries: &[BatchEntry],
        to: Checkpoint,
    ) -> Result<Attempt, StoreError> {
        let events: Vec<Event> = entries.iter().map(|entry| entry.event.clone()).collect();
        let effects = match self.run_plugin(&events).await {
            Some(Ok(effects)) => effects,
            Some(Err(error)) => {
                let failure = Failure::new(error.to_string(), error.is_retryable());
                return Ok(Attempt::Failed(failure));
            }
            None => return Ok(Attempt::Abandoned),
        };
        let mut commit = commit_for(&self.name, self.revision, self.checkpoint, to, effects);
        match self.commit(&mut commit).await {
            Ok(()) => {
                self.wakeups.outages.reached(true);
                count_emitted(&commit);
                state_cache::lock(&self.cache).apply(&commit.state);
                self.checkpoint = commit.to;
                self.revision += 1;
                Ok(Attempt::Committed)
            }
            Err(error) => commit_failure(error).map(Attempt::Failed),
        }
    }

    /// Runs the plugin on `events`; `None` if shutdown came and the plugin did not finish
    /// within [`SHUTDOWN_GRACE`] (the call is then cancelled at its guest's next yield).
    async fn run_plugin(&self, events: &[Event]) -> Option<Result<Effects, HandleError>> {
        let call = self
            .current
            .handler
            .handle(&self.subscription, events, Arc::clone(&self.reads));
        let mut shutdown = self.shutdown.clone();
        let grace_over = async move {
            shutdown.requested().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            outcome = call => Some(outcome),
            () = grace_over => {
                warn!(subscription = %self.name, "abandoning the batch in flight: shutdown, and the plugin did not finish in time");
                None
            }
        }
    }

    async fn park(
        &mut self,
        entry: &BatchEntry,
        failure: Failure,
        attempts: u32,
    ) -> Result<(), StoreError> {
        warn!(
            subscription = %self.name, event_id = %entry.event.id, position = entry.event.position,
            error = %failure.message, "parking the event"
        );
        let mut commit =
            BatchCommit::advance(&self.name, self.revision, self.checkpoint, entry.checkpoint);
        commit.park = Some(Park {
            event_id: entry.event.id,
            position: entry.event.position,
            error: failure.message,
            attempts,
        });
        self.commit(&mut commit).await?;
        self.wakeups.outages.reached(true);
        self.revision += 1;
        metrics::counter!("eventhost_events_parked_total", "subscription" => self.name.clone())
            .increment(1);
        self.checkpoint = commit.to;
        Ok(())
    }

    /// Runs the events an operator asked to replay; each success resolves its parked entry
    /// with the effects, in one commit; a failure stays parked with the new error.
    async fn replay_parked(&mut self) -> Result<(), StoreError> {
        for (parked, event) in self.store.replay_requests(&self.name).await? {
            let Some(outcome) = self.run_plugin(std::slice::from_ref(&event)).await else {
                // Shutdown: the request stays, to be replayed by the next run.
                return Ok(());
            };
            let failure = match outcome {
                Ok(effects) => {
                    let (revision, checkpoint) = (self.revision, self.checkpoint);
                    let mut commit =
                        commit_for(&self.name, revision, checkpoint, checkpoint, effects);
                    commit.replayed = Some(parked.id);
                    match self.commit(&mut commit).await {
                        Ok(()) => {
                            count_emitted(&commit);
                            state_cache::lock(&self.cache).apply(&commit.state);
                            self.revision += 1;
                            info!(subscription = %self.name, event_id = %event.id, "replayed a parked event");
                            continue;
                        }
                        Err(error) => commit_failure(error)?,
                    }
                }
                Err(error) => Failure::new(error.to_string(), false),
            };
            self.repark(&parked, failure).await?;
        }
        Ok(())
    }

    async fn repark(&mut self, parked: &ParkedEvent, failure: Failure) -> Result<(), StoreError> {
        warn!(subscription = %self.name, event_id = %parked.event_id, error = %failure.message, "replay failed; the event stays parked");
        let mut commit =
            BatchCommit::advance(&self.name, self.revision, self.checkpoint, self.checkpoint);
        commit.park = Some(Park {
            event_id: parked.event_id,
            position: parked.position,
            error: failure.message,
            attempts: parked.attempts.saturating_add(1),
        });
        self.commit(&mut commit).await?;
        self.revision += 1;
        Ok(())
    }

    /// Commits under this daemon's lease of the subscription, if it runs under one.
    async fn commit(&self, commit: &mut BatchCommit) -> Result<(), StoreError> {
        commit.lease = self.owner;
        self.store.commit_batch(commit).await
    }

    async fn record_failure(&self, failure: Option<&Failure>) {
        let message = failure.map(|failure| failure.message.as_str());
        if let Err(error) = self
            .store
            .record_status(&self.name, "failing", message, None)
            .await
        {
            warn!(subscription = %self.name, %error, "cannot record the failure");
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff(&self.config, attempt)
    }
}

/// Records `subscription` as stopped, so `subscriptions list` does not show it running when
/// no daemon runs it.
pub(crate) async fn record_stopped(store: &Store, subscription: &str) {
    if let Err(error) = store
        .record_status(subscription, "stopped", None, None)
        .await
    {
        warn!(%subscription, %error, "cannot record the stop");
    }
}

/// The pause after failed attempt `attempt` (1-based): the base, doubling, up to the maximum.
fn backoff(config: &DispatchConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    config
        .backoff_base
        .saturating_mul(factor)
        .min(config.backoff_max)
}

/// A commit error that is the batch's fault (its emitted events) becomes a batch failure;
/// anything else is the store's.
fn commit_failure(error: StoreError) -> Result<Failure, StoreError> {
    match error {
        StoreError::Conflict { .. } => Ok(Failure::new(error.to_string(), true)),
        StoreError::PartialDuplicate { .. }
        | StoreError::PayloadTooLarge { .. }
        | StoreError::Invalid(_) => Ok(Failure::new(error.to_string(), false)),
        other => Err(other),
    }
}

/// Counts the events a committed batch appended, as `eventhost_events_appended_total`.
fn count_emitted(commit: &BatchCommit) {
    let events: usize = commit
        .appends
        .iter()
        .map(|append| append.events.len())
        .sum();
    if events > 0 {
        metrics::counter!("eventhost_events_appended_total", "source" => "plugin")
            .increment(events as u64);
    }
}

fn commit_for(
    name: &str,
    revision: u64,
    from: Checkpoint,
    to: Checkpoint,
    effects: Effects,
) -> BatchCommit {
    let mut commit = BatchCommit::advance(name, revision, from, to);
    commit.appends = effects
        .emitted
        .into_iter()
        .map(|emit| PendingAppend {
            stream: emit.stream,
            expected: emit.expected,
            events: emit.events,
        })
        .collect();
    commit.state = effects.state.into_iter().collect();
    commit.messages = effects.messages;
    commit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_maximum() {
        let config = DispatchConfig {
            poll_interval: Duration::from_secs(1),
            max_attempts: 100,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            progress_interval: Duration::from_secs(10),
            max_subscriptions: 1000,
            batch_bytes: 16 << 20,
            state_cache_bytes: 0,
            held_back_warning: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
        };
        let pauses: Vec<u128> = (1..=8)
            .map(|attempt| backoff(&config, attempt).as_millis())
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(&config, 100), Duration::from_secs(5), "no overflow");
    }
}
