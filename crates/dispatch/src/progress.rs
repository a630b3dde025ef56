//! Catch-up progress: events/s, lag and estimated time left, reported at a steady interval
//! to the log and to the subscription's row (shown by `subscriptions list`).

use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{info, warn};

use eventhost_store::{Store, SubscriptionStore};

pub(crate) struct Progress {
    interval: Duration,
    since: Instant,
    handled: u64,
    reported_idle: bool,
}

impl Progress {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            since: Instant::now(),
            handled: 0,
            reported_idle: false,
        }
    }

    pub(crate) fn handled(&mut self, events: usize) {
        self.handled += events as u64;
    }

    /// Reports once per interval while the subscription works or lags, and once more when
    /// it has gone idle.
    pub(crate) async fn maybe_report(&mut self, store: &Store, subscription: &str) {
        let elapsed = self.since.elapsed();
        if elapsed < self.interval {
            return;
        }
        let lag = match store.lag(subscription).await {
            Ok(lag) => lag,
            Err(error) => {
                warn!(subscription, %error, "cannot measure the lag");
                return;
            }
        };
        let idle = self.handled == 0 && lag == 0;
        if !(idle && self.reported_idle) {
            let rate = self.handled as f64 / elapsed.as_secs_f64();
            let eta_seconds = (rate > 0.0).then(|| (lag as f64 / rate).ceil() as u64);
            let progress = json!({
                "events_per_second": rate.round(),
                "lag": lag,
                "eta_seconds": eta_seconds,
                "measured_at": chrono::Utc::now(),
            });
            info!(
                subscription,
                events_per_second = rate.round(),
                lag,
                eta_seconds,
                "progress"
            );
            if let Err(error) = store
                .record_status(subscription, "running", None, Some(&progress))
                .await
            {
                warn!(subscription, %error, "cannot record progress");
            }
        }
        self.reported_idle = idle;
        self.since = Instant::now();
        self.handled = 0;
    }
}
