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

use std::collections::HashMap;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use handler::Handler;
pub use reads::StoreReads;

use crate::runtime::{Reads, StartFrom, SubscriptionSpec};
use crate::shutdown::{Shutdown, ShutdownTrigger};
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

impl Dispatchable {
    /// The batch size of the handler's subscription `name`, capped by the sidecar; `None`
    /// when the handler has no such subscription.
    pub fn batch_size(&self, name: &str) -> Option<usize> {
        let spec = self.handler.info().subscription(name)?;
        Some(crate::plugins::capped_batch_size(spec.batch_size, self.max_batch_size) as usize)
    }
}

/// The subscription's filter in canonical form: reordering the lists in `describe` is not
/// a change.
fn filter_of(spec: &SubscriptionSpec) -> Filter {
    Filter {
        aggregate_types: spec.aggregate_types.clone(),
        event_types: spec.event_types.clone(),
    }
    .canonical()
}

/// A subscription's task.
struct Running {
    filter: Filter,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops the worker after its batch in flight and waits for it.
    async fn stop(self) {
        self.trigger.trigger();
        if let Err(error) = self.task.await {
            warn!(%error, "a subscription task ended abnormally");
        }
    }
}

/// A plugin's current version and its subscriptions' tasks.
struct Installed {
    slot: Arc<ArcSwap<Dispatchable>>,
    workers: HashMap<String, Running>,
}

/// Runs the subscriptions of the plugins installed in it; plugins can be installed,
/// replaced and removed while it runs.
///
/// Replacing a plugin swaps the version its workers take at their next batch (a batch in
/// flight finishes on the version it started with). A subscription whose filter changed
/// starts fresh: its worker stops after its batch, its checkpoint goes back to where the
/// subscription starts and its state is cleared, and a new worker takes over. A
/// subscription the new version no longer has stops; its checkpoint and state stay.
pub struct Dispatcher {
    store: Store,
    config: DispatchConfig,
    reads: Arc<dyn Reads>,
    wakeups: wakeup::Wakeups,
    listener: ShutdownTrigger,
    plugins: HashMap<String, Installed>,
}

impl Dispatcher {
    /// Connects the wake-up listener; no plugin is installed yet.
    pub async fn start(store: Store, config: DispatchConfig) -> Result<Self, StoreError> {
        let (listener, listening) = ShutdownTrigger::new();
        let wakeups = wakeup::listen(&store, listening).await?;
        Ok(Self {
            reads: Arc::new(StoreReads(store.clone())),
            store,
            config,
            wakeups,
            listener,
            plugins: HashMap::new(),
        })
    }

    /// Installs a plugin, or replaces the installed plugin of the same name.
    pub async fn install(&mut self, dispatchable: Dispatchable) -> Result<(), StoreError> {
        let info = dispatchable.handler.info().clone();
        let Some(installed) = self.plugins.get_mut(&info.name) else {
            let slot = Arc::new(ArcSwap::from_pointee(dispatchable));
            let mut workers = HashMap::new();
            for spec in &info.subscriptions {
                let running = self.spawn(&info.name, spec, &slot, false).await?;
                workers.insert(spec.name.clone(), running);
            }
            self.plugins
                .insert(info.name.clone(), Installed { slot, workers });
            return Ok(());
        };
        let changed: Vec<String> = installed
            .workers
            .iter()
            .filter(|(name, running)| {
                info.subscription(name)
                    .is_none_or(|spec| filter_of(spec) != running.filter)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &changed {
            if let Some(running) = installed.workers.remove(name) {
                running.stop().await;
                info!(plugin = %info.name, subscription = %name, "subscription stopped (dropped or changed by the new version)");
            }
        }
        installed.slot.store(Arc::new(dispatchable));
        let slot = Arc::clone(&installed.slot);
        let missing: Vec<SubscriptionSpec> = info
            .subscriptions
            .iter()
            .filter(|spec| !installed.workers.contains_key(&spec.name))
            .cloned()
            .collect();
        for spec in missing {
            let fresh = changed.contains(&spec.name);
            let running = self.spawn(&info.name, &spec, &slot, fresh).await?;
            if let Some(installed) = self.plugins.get_mut(&info.name) {
                installed.workers.insert(spec.name.clone(), running);
            }
        }
        Ok(())
    }

    /// Stops a plugin's subscriptions after their batches in flight; checkpoints and state
    /// stay, so installing it again resumes where it stopped.
    pub async fn remove(&mut self, plugin: &str) {
        if let Some(installed) = self.plugins.remove(plugin) {
            self.stop_workers(plugin, installed).await;
            info!(plugin, "plugin removed");
        }
    }

    /// Stops a plugin's subscriptions one after the other and records them as stopped, so
    /// `subscriptions list` does not show a stopped daemon's subscriptions as running.
    async fn stop_workers(&self, plugin: &str, installed: Installed) {
        for (name, running) in installed.workers {
            running.stop().await;
            let durable = format!("{plugin}.{name}");
            if let Err(error) = self
                .store
                .record_status(&durable, "stopped", None, None)
                .await
            {
                warn!(subscription = %durable, %error, "cannot record the stop");
            }
        }
    }

    /// The names of the installed plugins.
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Stops every subscription after its batch in flight and waits for them.
    pub async fn stop(mut self) {
        let plugins: Vec<String> = self.plugins.keys().cloned().collect();
        for plugin in plugins {
            if let Some(installed) = self.plugins.remove(&plugin) {
                self.stop_workers(&plugin, installed).await;
            }
        }
        self.listener.trigger();
    }

    /// Creates or resumes the durable subscription and starts its worker. `fresh`: the
    /// subscription's definition changed, so it restarts from its start with empty state.
    async fn spawn(
        &self,
        plugin: &str,
        spec: &SubscriptionSpec,
        slot: &Arc<ArcSwap<Dispatchable>>,
        fresh: bool,
    ) -> Result<Running, StoreError> {
        let name = format!("{plugin}.{}", spec.name);
        let filter = filter_of(spec);
        let start = match spec.start_from {
            StartFrom::Beginning => Checkpoint::ORIGIN,
            StartFrom::Now => self.store.head().await?,
        };
        // The definition may have changed while the plugin was not running (file removed,
        // daemon stopped): compare with the stored one, not only with a running worker.
        let stored = self.store.subscription(&name).await?;
        let changed = stored.is_some_and(|record| record.filter.canonical() != filter);
        let mut record = self
            .store
            .ensure_subscription(&name, plugin, &filter, start)
            .await?;
        if fresh || changed {
            record = self.store.reset(&name, start.position(), true).await?;
            info!(subscription = %name, "filter changed: the subscription starts fresh, its state cleared");
        }
        info!(subscription = %name, checkpoint = %record.checkpoint, "subscription started");
        let (trigger, shutdown) = ShutdownTrigger::new();
        let worker = Worker {
            store: self.store.clone(),
            slot: Arc::clone(slot),
            current: slot.load_full(),
            subscription: spec.name.clone(),
            name,
            filter: filter.clone(),
            config: self.config,
            reads: Arc::clone(&self.reads),
            wakeups: self.wakeups.clone(),
            shutdown,
            checkpoint: record.checkpoint,
            prefetch: None,
            replay_checked: None,
        };
        Ok(Running {
            filter,
            trigger,
            task: tokio::spawn(worker.run()),
        })
    }
}

/// Runs every subscription of `plugins` until `shutdown`; returns when all have stopped.
pub async fn run(
    store: Store,
    plugins: Vec<Dispatchable>,
    config: DispatchConfig,
    mut shutdown: Shutdown,
) -> Result<(), StoreError> {
    let mut dispatcher = Dispatcher::start(store, config).await?;
    for dispatchable in plugins {
        dispatcher.install(dispatchable).await?;
    }
    shutdown.requested().await;
    dispatcher.stop().await;
    Ok(())
}
