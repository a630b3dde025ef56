//! The store's notifications, sent after commits without holding the committer up.
//!
//! A commit that others should hear of asks for a notification and goes on: one task per
//! store sends them, one at a time and at least [`NOTIFY_GAP`] apart, and every request that
//! arrives meanwhile is answered by the next one. So an append costs one round trip, as the
//! SQL function does, and under load one `NOTIFY` covers many commits: a notification is a
//! transaction on the server, and one per append would cost a third of the appends' own
//! throughput. The gap is the one a listening daemon keeps between the looks notifications
//! prompt (`dispatch::wakeup`): more frequent ones would wake nobody sooner. This process's
//! own dispatcher does not wait for them (`PgStore::appends`). Each notification is a
//! tiny transaction of its own with `synchronous_commit = off`: PostgreSQL serialises
//! committing notifiers under one lock, and holding it only for a commit that does not wait
//! for a disk flush keeps appenders from queueing behind each other's fsyncs.
//!
//! A notification is only a hint and listeners also poll, so one lost to an error costs
//! latency, never an event. [`Notifier::flush`] waits until everything asked for so far is
//! sent: a process that exits right after a commit calls it first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::NOTIFY_CHANNEL;

/// The least time between the starts of two notifications.
pub(super) const NOTIFY_GAP: Duration = Duration::from_millis(2);

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
    /// The payload of this store's notifications, random: its own listener skips them.
    mark: Arc<str>,
}

impl Notifier {
    /// Starts the task that notifies on `pool`'s server. Needs a Tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        let requested = Arc::new(AtomicU64::new(0));
        let (wake, wakes) = mpsc::channel(1);
        let (sent_sender, sent) = watch::channel(0);
        let mark: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        tokio::spawn(run(
            pool,
            requested.clone(),
            wakes,
            sent_sender,
            mark.clone(),
        ));
        Self {
            requested,
            wake,
            sent,
            mark,
        }
    }

    /// The payload of this store's notifications.
    pub(super) fn mark(&self) -> &str {
        &self.mark
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
    mark: Arc<str>,
) {
    while wakes.recv().await.is_some() {
        let started = tokio::time::Instant::now();
        let covered = requested.load(Ordering::SeqCst);
        let notified =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(&*mark)
                .execute(&pool)
                .await;
        if let Err(error) = notified {
            debug!(%error, "cannot notify; listeners find the change at their next poll");
        }
        sent.send_replace(covered);
        tokio::time::sleep_until(started + NOTIFY_GAP).await;
    }
}
