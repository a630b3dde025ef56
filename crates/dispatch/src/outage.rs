//! Store outages, told once and ridden out: when the store cannot be reached or used
//! (PostgreSQL restarting, stopped, its connections terminated, the network down; SQLite's
//! disk full, its file read-only, deleted or replaced), the first failure to notice says so,
//! the others stay quiet; every subscription retries with a short,
//! growing, jittered backoff, and the first call that gets through again says how long the
//! outage lasted and wakes every subscription at once, to look for the events whose
//! notifications were lost meanwhile.
//!
//! Nothing is lost to an outage: a batch whose commit failed is read again from the stored
//! checkpoint, and a commit whose outcome is unknown either moved the checkpoint (and is not
//! applied again) or did not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use eventhost_domain::retry::jittered_backoff;
use eventhost_store::StoreError;

/// The first pause after a store error; each further one doubles it, up to the caller's cap.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(10);

/// Whether the store is reachable, as the dispatcher's last calls found it. Cloned into
/// every subscription's worker and the wake-up task.
#[derive(Clone)]
pub(crate) struct Outages {
    inner: Arc<Inner>,
    /// Changes when an outage ends.
    over: watch::Receiver<u64>,
}

struct Inner {
    /// Whether an outage is under way: the fast path of [`Outages::reached`].
    down: AtomicBool,
    /// When the outage began, and whether writes failed while reads may not (then only a
    /// write ends it).
    since: Mutex<Option<(Instant, bool)>>,
    over: watch::Sender<u64>,
}

impl Outages {
    pub(crate) fn new() -> Self {
        let (over, over_receiver) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                down: AtomicBool::new(false),
                since: Mutex::new(None),
                over,
            }),
            over: over_receiver,
        }
    }

    /// Takes note of a failed call; whether `error` says the store is unreachable. The first
    /// such failure of an outage is logged, with its cause.
    pub(crate) fn failed(&self, error: &StoreError) -> bool {
        if !error.is_unavailable() {
            return false;
        }
        let mut since = self.since();
        if since.is_none() {
            *since = Some((Instant::now(), error.is_unwritable()));
            self.inner.down.store(true, Ordering::SeqCst);
            warn!(%error, "the store is unavailable; subscriptions wait and retry until it is back");
        }
        true
    }

    /// Takes note of a call that got through (a write, if `wrote`); whether it ended an
    /// outage (then it was logged and everyone waiting in [`Outages::wait`] is woken). An
    /// outage that began with a write refused (a full disk) is ended by a write alone.
    pub(crate) fn reached(&self, wrote: bool) -> bool {
        if !self.inner.down.load(Ordering::SeqCst) {
            return false;
        }
        let mut since = self.since();
        let Some((began, writes)) = *since else {
            return false;
        };
        if writes && !wrote {
            return false;
        }
        *since = None;
        self.inner.down.store(false, Ordering::SeqCst);
        let lasted = began.elapsed();
        info!(
            outage_seconds = format_args!("{:.1}", lasted.as_secs_f64()),
            "the store is available again"
        );
        self.inner
            .over
            .send_modify(|count| *count = count.wrapping_add(1));
        true
    }

    fn since(&self) -> MutexGuard<'_, Option<(Instant, bool)>> {
        self.inner
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes whenever an outage ends.
    pub(crate) fn ends(&self) -> watch::Receiver<u64> {
        self.over.clone()
    }

    /// Whether an outage is under way.
    pub(crate) fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::SeqCst)
    }

    /// Sleeps for `delay`, or until an outage ends, whichever comes first.
    pub(crate) async fn wait(&mut self, delay: Duration) {
        self.over.mark_unchanged();
        if !self.is_down() {
            tokio::time::sleep(delay).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.over.changed() => {}
        }
    }
}

/// The pause before retry `failures` (1-based) after store errors: from [`FIRST_RETRY`],
/// doubling up to `cap`, jittered so that subscriptions failing together do not retry
/// together.
pub(crate) fn retry_delay(failures: u32, cap: Duration) -> Duration {
    jittered_backoff(FIRST_RETRY, failures, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> StoreError {
        StoreError::from(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[tokio::test]
    async fn an_outage_is_noticed_once_and_its_end_wakes_the_waiting() {
        let outages = Outages::new();
        assert!(!outages.reached(true), "no outage to end");
        let refused = StoreError::Invalid("bad input".into());
        assert!(!outages.failed(&refused), "not an outage");
        assert!(!outages.is_down());

        assert!(outages.failed(&unreachable()));
        assert!(outages.failed(&unreachable()));
        assert!(outages.is_down());

        let mut waiting = outages.clone();
        let started = Instant::now();
        let waiter = tokio::spawn(async move {
            waiting.wait(Duration::from_secs(30)).await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            outages.reached(false),
            "the first call through ends the outage"
        );
        assert!(!outages.reached(true), "and only the first");
        let waited = waiter.await.expect("the waiter");
        assert!(
            waited < Duration::from_secs(5),
            "woken at the end: {waited:?}"
        );
        assert!(!outages.is_down());
    }

    #[test]
    fn an_outage_of_writes_is_ended_by_a_write_alone() {
        let outages = Outages::new();
        let gone = StoreError::FileGone {
            path: "events.db".into(),
        };
        assert!(outages.failed(&gone));
        assert!(!outages.reached(false), "a read does not end it");
        assert!(outages.is_down());
        assert!(outages.reached(true), "a write does");
    }
}
