//! A call's time budget: the time its guest runs (on a guest thread, or in a host call it
//! made), not the time it waits for a thread while other calls take their turn. It is
//! charged at every epoch tick, where the guest also yields; so a guest runs at most one tick
//! past its budget, and busy neighbours cannot spend a healthy guest's budget by keeping it
//! waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one call may still run.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: Duration,
    used: Duration,
    origin: Instant,
    /// When the guest last got a thread back, in nanoseconds since `origin`; written by the
    /// yield that gave the thread away.
    resumed: Arc<AtomicU64>,
}

impl Budget {
    /// A budget of `limit`, counting from now: made when the call starts running.
    pub(crate) fn start(limit: Duration) -> Self {
        Self {
            limit,
            used: Duration::ZERO,
            origin: Instant::now(),
            resumed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Charges the time the guest ran since it last resumed (or was last charged); whether
    /// the budget is now spent.
    pub(crate) fn charge(&mut self) -> bool {
        let now = nanos_since(self.origin);
        let resumed = self.resumed.swap(now, Ordering::Relaxed);
        self.used += Duration::from_nanos(now.saturating_sub(resumed));
        self.used >= self.limit
    }

    /// Gives the thread to the other calls waiting for one; the wait is not charged.
    pub(crate) fn yield_turn(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (origin, resumed) = (self.origin, Arc::clone(&self.resumed));
        Box::pin(async move {
            tokio::task::yield_now().await;
            resumed.store(nanos_since(origin), Ordering::Relaxed);
        })
    }
}

fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_spent_waiting_for_a_turn_is_not_charged() {
        let mut budget = Budget::start(Duration::from_millis(40));
        std::thread::sleep(Duration::from_millis(25));
        assert!(!budget.charge(), "25 ms of a 40 ms budget run");
        let turn = budget.yield_turn();
        std::thread::sleep(Duration::from_millis(100));
        turn.await;
        assert!(
            !budget.charge(),
            "the 100 ms before the turn came back is free"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(budget.charge(), "25 + 20 ms run: spent");
    }
}
