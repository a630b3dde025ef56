//! Deliveries: the messages that committed batches (and relays) stored in the outbox, sent to
//! the operator's sinks.
//!
//! [`Sinks`] are built from the daemon's configuration ([`config`]); [`Deliveries::start`]
//! runs one [`worker`] per sink, which sends (over [`http`] or [`nats`]) and records every
//! attempt in the store, and a pruner that deletes delivered messages once they are old. A
//! message is enqueued exactly once, with its batch, and delivered at least once, under an
//! idempotency key that receivers use to drop duplicates.

mod breaker;
pub mod config;
mod http;
mod nats;
mod send;
mod worker;

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{ConfigError, DeliveryPolicy, Secret, Sink, SinkConfig, Sinks, Target};
pub use http::install_crypto_provider;
pub use send::Failure;
pub use worker::{PAGE, PAGE_BYTES};

use eventhost_store::{DeliveryStore, Store};
use worker::SinkWorker;

/// How long a stopping worker's sends in flight may take before they are dropped (each is
/// sent again by the next run: the idempotency key stays the same).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How often delivered messages are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How the workers run, beside each sink's own policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// The longest a worker waits before it looks for pending messages again.
    pub poll: Duration,
    /// How long delivered messages are kept (for `deliveries list`) before they are pruned.
    pub keep_delivered: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            keep_delivered: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The running delivery workers.
pub struct Deliveries {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Deliveries {
    /// Starts a worker per sink, and the pruner; with no sinks, nothing runs.
    pub fn start(
        store: &Store,
        sinks: &Sinks,
        settings: &DeliverySettings,
    ) -> Result<Self, ConfigError> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for sink in sinks.iter() {
            let worker = SinkWorker::new(sink, store.clone(), settings.poll, stop.clone())
                .map_err(|message| ConfigError {
                    sink: sink.name.clone(),
                    message,
                })?;
            tasks.spawn(worker.run());
        }
        if !sinks.is_empty() {
            let names: Vec<&str> = sinks.names().collect();
            info!(sinks = %names.join(", "), "delivering messages");
            tasks.spawn(prune(store.clone(), settings.keep_delivered, stop.clone()));
        }
        Ok(Self { stop, tasks })
    }

    /// Stops every worker; a send in flight gets [`STOP_GRACE`] to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE, all_done).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

async fn prune(store: Store, keep: Duration, stop: CancellationToken) {
    loop {
        let before = Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        match store.prune_deliveries(before).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, "pruned delivered messages"),
            Err(error) => warn!(%error, "cannot prune delivered messages"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
