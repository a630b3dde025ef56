//! Graceful shutdown as one small type passed down to every long-running task.
//!
//! The daemon holds the [`ShutdownTrigger`]; tasks hold a [`Shutdown`] and check it between
//! units of work, so a batch in flight finishes (or is abandoned whole) before a task ends.

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
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means the trigger is gone: nobody can request shutdown any more, and a
        // dropped trigger is itself the end of the daemon.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}
