//! Subscriptions at work: for every subscription of every loaded plugin, a task that reads
//! batches after its durable checkpoint, runs the plugin, and commits the effects.
//!
//! Guarantees (see DESIGN section 5): a batch's effects and its new checkpoint commit in one
//! transaction, guarded by the previous checkpoint, so effects land exactly once whatever
//! instant the daemon dies at; order is kept within a subscription; subscriptions run
//! concurrently; a failing plugin parks its poison event and goes on.

mod handler;
mod progress;
mod reads;
mod wakeup;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::info;

pub use handler::Handler;
pub use reads::StoreReads;

use crate::runtime::StartFrom;
use crate::shutdown::Shutdown;
use crate::store::{Checkpoint, EventStore, Filter, Store, StoreError, SubscriptionStore};
use worker::Worker;

/// How subscriptions are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// The longest an idle subscription waits before looking for events it was not woken for.
    pub poll_interval: Duration,
    /// Tries of a failing batch (and of its last, single, event) before the event is parked.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often a subscription reports its progress while it catches up.
    pub progress_interval: Duration,
}

impl DispatchConfig {
    /// Defaults for `store`: PostgreSQL wakes subscriptions by NOTIFY, so its poll is only
    /// a fallback; SQLite appends from other processes are found by the poll alone.
    pub fn for_store(store: &Store) -> Self {
        let poll_interval = match store {
            Store::Postgres(_) => Duration::from_secs(1),
            Store::Sqlite(_) => Duration::from_millis(250),
        };
        Self {
            poll_interval,
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            progress_interval: Duration::from_secs(10),
        }
    }
}

/// A handler ready to run, with the operator's batch-size cap from its sidecar.
#[derive(Clone)]
pub struct Dispatchable {
    pub handler: Arc<dyn Handler>,
    pub max_batch_size: Option<u32>,
}

/// Runs every subscription of `plugins` until `shutdown`; returns when all have stopped.
pub async fn run(
    store: Store,
    plugins: Vec<Dispatchable>,
    config: DispatchConfig,
    shutdown: Shutdown,
) -> Result<(), StoreError> {
    let wakeups = wakeup::listen(&store, shutdown.clone()).await?;
    let reads: Arc<dyn crate::runtime::Reads> = Arc::new(StoreReads(store.clone()));
    let mut tasks = JoinSet::new();
    for dispatchable in plugins {
        let info = dispatchable.handler.info().clone();
        for spec in info.subscriptions {
            let name = format!("{}.{}", info.name, spec.name);
            let filter = Filter {
                aggregate_types: spec.aggregate_types.clone(),
                event_types: spec.event_types.clone(),
            };
            let start = match spec.start_from {
                StartFrom::Beginning => Checkpoint::ORIGIN,
                StartFrom::Now => store.head().await?,
            };
            let record = store
                .ensure_subscription(&name, &info.name, &filter, start)
                .await?;
            let batch_size = dispatchable
                .max_batch_size
                .map_or(spec.batch_size, |cap| spec.batch_size.min(cap.max(1)));
            info!(subscription = %name, checkpoint = %record.checkpoint, batch_size, "subscription started");
            let worker = Worker {
                store: store.clone(),
                handler: Arc::clone(&dispatchable.handler),
                spec,
                name,
                filter,
                batch_size: batch_size as usize,
                config,
                reads: Arc::clone(&reads),
                wakeups: wakeups.clone(),
                shutdown: shutdown.clone(),
                checkpoint: record.checkpoint,
            };
            tasks.spawn(worker.run());
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
