//! The outbox: messages for the operator's sinks, enqueued by [`SubscriptionStore::commit_batch`]
//! in the batch's transaction, then sent by a delivery worker per sink, which records every
//! attempt here.
//!
//! A message is stored once per sink and idempotency key, so a batch committed once enqueues
//! each of its messages once. Its status moves `pending` -> `delivered`, or `pending` ->
//! `dead` after its sink's last attempt; an operator can send a dead (or skipped) message
//! again, or skip a pending or dead one.
//!
//! [`SubscriptionStore::commit_batch`]: crate::SubscriptionStore::commit_batch

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use eventhost_domain::Message;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting to be sent, or to be sent again.
    Pending,
    /// The sink accepted it.
    Delivered,
    /// Its sink refused it for good, or its attempts ran out; sent again only on request.
    Dead,
    /// An operator gave up on it.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "dead" => Ok(Self::Dead),
            "skipped" => Ok(Self::Skipped),
            other => Err(StoreError::Corrupt(format!("delivery status {other:?}"))),
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored message and how its delivery went.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The row's id: the order messages were enqueued in (what `deliveries retry` takes).
    pub id: i64,
    /// The message, under its own idempotency key `message.id`.
    pub message: Message,
    /// The subscription (or relay) whose batch asked for it.
    pub subscription: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When a pending message may be tried next.
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it was delivered, died or was skipped.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one attempt to send a message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; try again at `at`.
    Retry {
        error: String,
        at: DateTime<Utc>,
    },
    /// Failed for good.
    Dead {
        error: String,
    },
}

/// Which messages `deliveries list` shows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub sink: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub limit: usize,
}

/// Which messages an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverySelection<'a> {
    One(i64),
    /// Every message the action applies to, of one sink or of all.
    All {
        sink: Option<&'a str>,
    },
}

/// The outbox operations every store offers.
pub trait DeliveryStore: Send + Sync {
    /// The pending messages of `sink`, in enqueue order, due or not (the worker decides, per
    /// ordering key, which it may send now): at most `limit`, and none after the one whose
    /// body and headers bring the total to `bytes`, so a worker holds a bounded amount
    /// however large the messages.
    fn pending_deliveries(
        &self,
        sink: &str,
        limit: usize,
        bytes: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Records an attempt on a pending message (one an operator skipped meanwhile stays
    /// skipped); returns whether the message was still pending.
    fn record_attempt(
        &self,
        id: i64,
        outcome: &AttemptOutcome,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records successful attempts on the pending messages `ids`, in one statement; returns
    /// how many were still pending.
    fn record_delivered(&self, ids: &[i64])
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Makes dead or skipped messages pending again, due now, their attempts counted anew;
    /// returns how many.
    fn retry_deliveries(
        &self,
        selection: DeliverySelection<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Gives up on pending or dead messages; returns how many.
    fn skip_deliveries(
        &self,
        selection: DeliverySelection<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes messages delivered before `before`; returns how many.
    fn prune_deliveries(
        &self,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The headers as stored: a JSON array of `[name, value]` pairs.
pub(crate) fn headers_json(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers)
        .map_err(|error| StoreError::Invalid(format!("message headers: {error}")))
}

/// The stored headers back as pairs.
pub(crate) fn headers_from_json(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt("stored message headers".into()))
}
