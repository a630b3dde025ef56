//! Graceful shutdown as one small type passed down to every long-running task.
//!
//! The daemon holds the [`ShutdownTrigger`]; tasks hold a [`Shutdown`] and check it between
//! units of work, so a batch in flight finishes (or is abandoned whole) before a task ends.
//! A dropped trigger is a shutdown too: nobody could ever stop the task otherwise.

use tokio::sync::watch;

/// Fires the shutdown for every [`Shutdown`] made from it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A task's view of the shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    pub fn new() -> (Self, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (Self(sender), Shutdown(receiver))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Whether shutdown was triggered, or its trigger dropped.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once shutdown is requested or its trigger dropped (at once if it already
    /// was).
    pub async fn requested(&mut self) {
        // An error means the trigger is gone, which is a shutdown: see `is_requested`.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_trigger_is_a_shutdown() {
        let (trigger, mut shutdown) = ShutdownTrigger::new();
        assert!(!shutdown.is_requested());
        drop(trigger);
        assert!(shutdown.is_requested());
        shutdown.requested().await;
    }

    #[tokio::test]
    async fn a_trigger_reaches_every_clone() {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let mut clone = shutdown.clone();
        trigger.trigger();
        clone.requested().await;
        assert!(shutdown.is_requested());
    }
}
