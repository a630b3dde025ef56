//! A sink's delivery worker: sends the sink's pending messages, in enqueue order per ordering
//! key and concurrently across keys, and records every attempt.
//!
//! Each round reads the oldest pending messages ([`PAGE`]) and splits them into lanes: one per
//! ordering key (in order), one per message without a key. A lane whose first message is not
//! due yet waits, so a later message of its key never overtakes it; a lane stops at a message
//! that must be retried. A round starts when a commit of this process enqueues messages, when
//! a lane's next message falls due, or every poll interval (messages of other processes, an
//! operator's retry). Failures are recorded as they happen; successes at the end of the round,
//! in one statement (one write per round, not per message, is what lets a sink take
//! thousands of messages a second). A message sent but not yet recorded when the daemon dies
//! is sent again: delivery is at least once, under the same idempotency key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::breaker::Breaker;
use super::config::{DeliveryPolicy, Sink};
use super::send::{Failure, Sender};
use eventhost_store::{AttemptOutcome, Delivery, DeliveryStore, SinkLock, Store, StoreError};

/// The most pending messages one round reads. A round ends when its slowest lane does, and
/// its reads and writes are fixed costs: the larger the round, the less they weigh.
pub const PAGE: usize = 5000;

/// The most bytes of messages (bodies and headers) one round holds: a round ends after the
/// message that reaches it, however many fewer than [`PAGE`] that makes.
pub const PAGE_BYTES: usize = 16 << 20;

pub(crate) struct SinkWorker {
    name: String,
    policy: DeliveryPolicy,
    sender: Sender,
    breaker: Breaker,
    store: Store,
    poll: Duration,
    stop: CancellationToken,
    /// On PostgreSQL: the sink's lock, without which this daemon sends nothing (another
    /// daemon on the database sends the sink's messages meanwhile).
    lock: Option<SinkLock>,
}

/// Whether this worker may send: whether it holds its sink, where that needs a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Sending,
    Waiting,
    Unknown,
}

/// What a round leaves for the next one.
enum Round {
    /// More pending messages than one round reads: look again at once.
    Again,
    /// Wait for a commit, a poll, or the given moment when a waiting message falls due.
    Wait(Option<Instant>),
}

/// What a lane does after an attempt.
enum Next {
    Continue,
    Stop,
}

impl SinkWorker {
    pub(crate) fn new(
        sink: &Sink,
        store: Store,
        poll: Duration,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        Ok(Self {
            name: sink.name.clone(),
            policy: sink.delivery.clone(),
            sender: Sender::new(sink)?,
            breaker: Breaker::new(
                sink.delivery.breaker_failures,
                sink.delivery.breaker_cooldown,
            ),
            lock: match &store {
                Store::Postgres(postgres) => Some(SinkLock::new(postgres.clone(), &sink.name)),
                Store::Sqlite(_) => None,
            },
            store,
            poll,
            stop,
        })
    }

    /// Takes or checks the sink's lock; says so when that changes.
    async fn turn(&mut self, previous: Turn) -> Turn {
        let Some(lock) = &mut self.lock else {
            return Turn::Sending;
        };
        let turn = match lock.hold().await {
            Ok(true) => Turn::Sending,
            Ok(false) => Turn::Waiting,
            Err(error) => {
                if previous != Turn::Unknown {
                    warn!(sink = %self.name, %error, "cannot take or check the sink's lock; sending nothing until it is held again");
                }
                Turn::Unknown
            }
        };
        match (previous, turn) {
            (Turn::Sending, Turn::Sending) | (Turn::Waiting, Turn::Waiting) => {}
            (_, Turn::Sending) => info!(sink = %self.name, "this daemon delivers the sink"),
            (_, Turn::Waiting) => {
                info!(sink = %self.name, "another daemon delivers this sink: waiting for it to stop")
            }
            (_, Turn::Unknown) => {}
        }
        turn
    }

    pub(crate) async fn run(mut self) {
        let mut enqueues = self.store.enqueues();
        let mut failing = false;
        let mut turn = Turn::Unknown;
        while !self.stop.is_cancelled() {
            turn = self.turn(turn).await;
            if turn != Turn::Sending {
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(self.poll) => {}
                }
                continue;
            }
            let wake = match self.round().await {
                Ok(Round::Again) => {
                    failing = false;
                    continue;
                }
                Ok(Round::Wait(next_due)) => {
                    failing = false;
                    next_due.map_or(self.poll, |due| {
                        due.saturating_duration_since(Instant::now())
                    })
                }
                Err(error) => {
                    if !failing {
                        warn!(sink = %self.name, %error, "cannot read the sink's pending messages; trying again");
                    }
                    failing = true;
                    self.poll
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => break,
                _ = enqueues.changed() => {}
                () = tokio::time::sleep(wake.min(self.poll)) => {}
            }
        }
    }

    /// Sends what is due; says whether to look again at once (a full page was read) or when
    /// the next waiting message falls due, if that is sooner than a poll.
    async fn round(&self) -> Result<Round, StoreError> {
        // A breaker whose rest is over lets the round's first attempt through as its test.
        let resting = self
            .breaker
            .open_until()
            .filter(|until| *until > Instant::now());
        if let Some(until) = resting {
            return Ok(Round::Wait(Some(until)));
        }
        let pending = self
            .store
            .pending_deliveries(&self.name, PAGE, PAGE_BYTES)
            .await?;
        let held: usize = pending.iter().map(|d| d.message.size() as usize).sum();
        let full_page = pending.len() == PAGE || held >= PAGE_BYTES;
        let now = Utc::now();
        let mut next_due: Option<DateTime<Utc>> = None;
        let mut ready = Vec::new();
        for lane in lanes(pending) {
            let due = lane[0].next_attempt_at;
            if due > now {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
            } else {
                ready.push(lane);
            }
        }
        let sent_any = !ready.is_empty();
        let delivered = Mutex::new(Vec::new());
        futures::stream::iter(ready)
            .for_each_concurrent(self.policy.concurrency, |lane| {
                self.send_lane(lane, &delivered)
            })
            .await;
        self.record_delivered(delivered).await;
        if full_page && sent_any && !self.stop.is_cancelled() {
            return Ok(Round::Again);
        }
        let next = next_due.map(|due| {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            Instant::now() + wait
        });
        Ok(Round::Wait(match self.breaker.open_until() {
            Some(until) => Some(next.map_or(until, |next| next.min(until))),
            None => next,
        }))
    }

    /// Sends a lane's messages in order until one fails; the ids of those delivered go to
    /// `delivered`, recorded when the round ends.
    async fn send_lane(&self, lane: Vec<Delivery>, delivered: &Mutex<Vec<i64>>) {
        let now = Utc::now();
        for delivery in lane {
            if self.stop.is_cancelled() || delivery.next_attempt_at > now || !self.breaker.allow() {
                return;
            }
            let sent = tokio::select! {
                () = self.stop.cancelled() => return,
                sent = self.sender.send(&delivery.message) => sent,
            };
            let failure = match sent {
                Ok(()) => {
                    self.breaker.succeeded();
                    let key = delivery.message.key.as_deref().unwrap_or("-");
                    let attempt = delivery.attempts + 1;
                    debug!(sink = %self.name, key, message = %delivery.message.id, attempt, "delivered");
                    delivered
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(delivery.id);
                    continue;
                }
                Err(failure) => failure,
            };
            match self.record_failure(&delivery, failure).await {
                Next::Continue => {}
                Next::Stop => return,
            }
        }
    }

    /// Records the round's successful attempts, in one statement.
    async fn record_delivered(&self, delivered: Mutex<Vec<i64>>) {
        let ids = delivered
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.store.record_delivered(&ids).await {
            warn!(sink = %self.name, messages = ids.len(), %error, "cannot record delivered messages; they will be sent again");
        }
    }

    /// Records a failed attempt and logs it.
    async fn record_failure(&self, delivery: &Delivery, failure: Failure) -> Next {
        let attempt = delivery.attempts + 1;
        let message = &delivery.message;
        if failure.retryable {
            if self.breaker.failed() {
                warn!(sink = %self.name, cooldown_ms = self.policy.breaker_cooldown.as_millis() as u64, "the sink keeps failing: resting it");
            }
        } else {
            self.breaker.succeeded();
        }
        let (outcome, next) = self.failed(delivery, attempt, failure);
        match self.store.record_attempt(delivery.id, &outcome).await {
            Ok(_) => next,
            Err(error) => {
                warn!(sink = %self.name, message = %message.id, %error, "cannot record a delivery attempt; the message will be sent again");
                Next::Stop
            }
        }
    }

    fn failed(
        &self,
        delivery: &Delivery,
        attempt: u32,
        failure: Failure,
    ) -> (AttemptOutcome, Next) {
        let message = &delivery.message;
        let key = message.key.as_deref().unwrap_or("-");
        let age = (Utc::now() - delivery.created_at)
            .to_std()
            .unwrap_or_default();
        let gave_up = if !failure.retryable {
            Some(failure.reason.clone())
        } else if attempt >= self.policy.max_attempts {
            Some(format!(
                "gave up after {attempt} attempts: {}",
                failure.reason
            ))
        } else if age >= self.policy.max_age {
            Some(format!(
                "gave up after {} s: {}",
                age.as_secs(),
                failure.reason
            ))
        } else {
            None
        };
        if let Some(error) = gave_up {
            error!(sink = %self.name, key, message = %message.id, attempt, reason = %error, "dead: the message will not be sent again unless retried (eventhost deliveries retry)");
            // Later messages of the key go on: a dead one never blocks its key for ever.
            return (AttemptOutcome::Dead { error }, Next::Continue);
        }
        let pause = backoff(&self.policy, attempt).max(failure.after.unwrap_or_default());
        warn!(sink = %self.name, key, message = %message.id, attempt, reason = %failure.reason, retry_in_ms = pause.as_millis() as u64, "delivery failed; retrying");
        let at = Utc::now() + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::MAX);
        let outcome = AttemptOutcome::Retry {
            error: failure.reason,
            at,
        };
        (outcome, Next::Stop)
    }
}

/// The messages in lanes: one per ordering key, in enqueue order, and one per message
/// without a key; lanes in the order of their first message.
fn lanes(pending: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut lanes: Vec<Vec<Delivery>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for delivery in pending {
        match delivery.message.key.clone() {
            Some(key) => match by_key.get(&key) {
                Some(&lane) => lanes[lane].push(delivery),
                None => {
                    by_key.insert(key, lanes.len());
                    lanes.push(vec![delivery]);
                }
            },
            None => lanes.push(vec![delivery]),
        }
    }
    lanes
}

/// The pause after failed attempt `attempt` (1-based), jittered.
fn backoff(policy: &DeliveryPolicy, attempt: u32) -> Duration {
    eventhost_domain::retry::jittered_backoff(policy.backoff_base, attempt, policy.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventhost_domain::Message;
    use eventhost_store::DeliveryStatus;

    fn delivery(id: i64, key: Option<&str>) -> Delivery {
        Delivery {
            id,
            message: Message {
                id: format!("s:1:{id}"),
                sink: "hooks".to_owned(),
                key: key.map(str::to_owned),
                headers: Vec::new(),
                body: Vec::new(),
            },
            subscription: "p.s".to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_error: None,
            created_at: Utc::now(),
            finished_at: None,
        }
    }

    #[test]
    fn messages_of_one_key_share_a_lane_in_order_and_keyless_ones_go_alone() {
        let pending = vec![
            delivery(1, Some("a")),
            delivery(2, None),
            delivery(3, Some("b")),
            delivery(4, Some("a")),
            delivery(5, None),
        ];
        let ids: Vec<Vec<i64>> = lanes(pending)
            .iter()
            .map(|lane| lane.iter().map(|d| d.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 4], vec![2], vec![3], vec![5]]);
    }
}
