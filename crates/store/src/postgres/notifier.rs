//! The store's notifications, sent after commits without holding the committer up.
//!
//! A commit that others should hear of asks for a notification and goes on: one task per
//! store sends them, one at a time, and every request that arrives while a notification is on
//! its way is answered by the next one. So an append costs one round trip, as the SQL
//! function does, and under load one `NOTIFY` covers many commits. Each notification is a
//! tiny transaction of its own with `synchronous_commit = off`: PostgreSQL serialises
//! committing notifiers under one lock, and holding it only for a commit that does not wait
//! for a disk flush keeps appenders from queueing behind each other's fsyncs.
//!
//! A notification is only a hint and listeners also poll, so one lost to an error costs
//! latency, never an event. [`Notifier::flush`] waits until everything asked for so far is
//! sent: a process that exits right after a commit calls it first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::NOTIFY_CHANNEL;

/// Asks the store's notification task to notify. Cloned with the store; the task ends
/// once the last clone is dropped and what was asked for is sent.
#[derive(Debug, Clone)]
pub(super) struct Notifier {
    /// Requests so far: the task covers all of them with each notification it starts.
    requested: Arc<AtomicU64>,
    /// Wakes the task; holds at most one wake-up, so requests meanwhile fold into it.
    wake: mpsc::Sender<()>,
    /// The requests covered by the notifications sent so far.
    sent: watch::Receiver<u64>,
}

impl Notifier {
    /// Starts the task that notifies on `pool`'s server. Needs a Tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        let requested = Arc::new(AtomicU64::new(0));
        let (wake, wakes) = mpsc::channel(1);
        let (sent_sender, sent) = watch::channel(0);
        tokio::spawn(run(pool, requested.clone(), wakes, sent_sender));
        Self {
            requested,
            wake,
            sent,
        }
    }

    /// Asks for a notification after a commit, and returns at once.
    pub(super) fn request(&self) -> u64 {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // Full: a wake-up is pending, and the notification it starts covers this request.
        let _ = self.wake.try_send(());
        ticket
    }

    /// Asks for a notification and waits until it is sent.
    pub(super) async fn notify(&self) {
        let ticket = self.request();
        self.sent_up_to(ticket).await;
    }

    /// Waits until every notification asked for so far is sent.
    pub(super) async fn flush(&self) {
        self.sent_up_to(self.requested.load(Ordering::SeqCst)).await;
    }

    async fn sent_up_to(&self, ticket: u64) {
        let mut sent = self.sent.clone();
        // An error: the task is gone with its runtime, and nothing more will be sent.
        let _ = sent.wait_for(|sent| *sent >= ticket).await;
    }
}

async fn run(
    pool: PgPool,
    requested: Arc<AtomicU64>,
    mut wakes: mpsc::Receiver<()>,
    sent: watch::Sender<u64>,
) {
    while wakes.recv().await.is_some() {
        let covered = requested.load(Ordering::SeqCst);
        let notified =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&pool)
                .await;
        if let Err(error) = notified {
            debug!(%error, "cannot notify; listeners find the change at their next poll");
        }
        sent.send_replace(covered);
    }
}
