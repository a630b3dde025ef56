//! Subscriptions at work: for every subscription of every loaded plugin, a task that reads
//! batches after its durable checkpoint, runs the plugin, and commits the effects; and the
//! plugins folder that says which plugins are loaded ([`plugins`]).
//!
//! Guarantees (see `docs/architecture.md`): a batch's effects and its new checkpoint commit
//! in one transaction, guarded by the previous checkpoint, so effects land exactly once
//! whatever instant the daemon dies at; order is kept within a subscription; subscriptions
//! run concurrently; a failing plugin parks its poison event and goes on; one process never
//! runs two workers on one subscription.
//!
//! Depends on the store and the runtime, never on the command line.

pub mod filter_check;
mod handler;
mod held_back;
mod leases;
mod outage;
pub mod plugins;
mod progress;
mod reads;
pub mod relay;
pub mod shutdown;
mod state_cache;
mod wakeup;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use eventhost_runtime::{PluginInfo, Reads, StartFrom, SubscriptionSpec};
use eventhost_store::{
    Checkpoint, DefinedSubscription, EventStore, Filter, Store, StoreError, SubscriptionDefinition,
    SubscriptionRecord, SubscriptionStore,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use handler::Handler;
pub use leases::LEASE_TTL;
pub use reads::StoreReads;

use crate::shutdown::{Shutdown, ShutdownTrigger};
use held_back::HeldBack;
use leases::Leases;
use state_cache::{CachedReads, StateCache};
use worker::{Resume, Worker};

/// How subscriptions are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// How often the dispatcher polls the store (one query for all subscriptions) for
    /// changes no notification told it of.
    pub poll_interval: Duration,
    /// Tries of a failing batch (and of its last, single, event) before the event is parked.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often a subscription reports its progress while it catches up.
    pub progress_interval: Duration,
    /// Subscriptions the dispatcher runs at once, over all plugins; a plugin that would
    /// pass it is refused.
    pub max_subscriptions: usize,
    /// Bytes of events (names, payloads, metadata) one batch holds: a batch ends after the
    /// event that reaches it, whatever its batch size.
    pub batch_bytes: usize,
    /// Bytes of committed state each subscription keeps in memory between its batches (0:
    /// none; see `state_cache`).
    pub state_cache_bytes: usize,
    /// How long events may be held back by an open transaction (PostgreSQL) before the
    /// daemon names it in its log (see `held_back`).
    pub held_back_warning: Duration,
    /// How long a subscription lease lasts unless renewed (PostgreSQL, see `leases`): how
    /// long a killed daemon's subscriptions wait for another daemon on another machine.
    pub lease_ttl: Duration,
}

/// The default of [`DispatchConfig::batch_bytes`]: 16 MiB.
pub const BATCH_BYTES: usize = 16 << 20;

/// The default of [`DispatchConfig::held_back_warning`].
pub const HELD_BACK_WARNING: Duration = Duration::from_secs(5);

/// The default of [`DispatchConfig::state_cache_bytes`]: 16 MiB.
pub const STATE_CACHE_BYTES: usize = 16 << 20;

/// The default of [`DispatchConfig::max_subscriptions`].
pub const MAX_SUBSCRIPTIONS: usize = 1000;

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
            max_subscriptions: MAX_SUBSCRIPTIONS,
            batch_bytes: BATCH_BYTES,
            state_cache_bytes: STATE_CACHE_BYTES,
            held_back_warning: HELD_BACK_WARNING,
            lease_ttl: LEASE_TTL,
        }
    }
}

/// Why a plugin could not be installed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{plugin} asks for {wanted} subscriptions and other plugins run {running}: over the \
         daemon's cap of {cap} subscriptions"
    )]
    TooManySubscriptions {
        plugin: String,
        wanted: usize,
        running: usize,
        cap: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
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
        Some(eventhost_runtime::capped_batch_size(spec.batch_size, self.max_batch_size) as usize)
    }
}

/// Warns that a changed filter sent `record` back to its start: how many events it will
/// handle again, its state cleared.
async fn warn_restarted(store: &Store, record: &SubscriptionRecord) {
    let name = &record.name;
    match store.count_after(record.checkpoint, &record.filter).await {
        Ok(events) => warn!(
            subscription = %name,
            "filter changed: the subscription starts again from its beginning with its state \
             cleared; {events} stored events match the new filter and will be handled again"
        ),
        Err(error) => warn!(
            subscription = %name,
            "filter changed: the subscription starts again from its beginning with its state \
             cleared ({error} while counting its events)"
        ),
    }
}

/// Warns of each name of the subscriptions' filters that no stored event has (a typo
/// receives nothing, silently otherwise). Runs beside the install: a failed look-up only
/// says so at debug level.
async fn check_names(store: Store, records: Vec<SubscriptionRecord>) {
    let mut check = filter_check::NameCheck::new(&store);
    for record in records {
        let name = &record.name;
        match check.unmatched(&record.filter).await {
            Ok(misses) => {
                for miss in misses {
                    warn!(
                        subscription = %name,
                        "{miss}: the subscription receives nothing of that name until one is \
                         appended (a typo in its filter?)"
                    );
                }
            }
            Err(error) => debug!(subscription = %name, %error, "cannot check the filter's names"),
        }
    }
}

/// The subscription's filter in canonical form: reordering the lists in `describe` is not
/// a change.
pub fn filter_of(spec: &SubscriptionSpec) -> Filter {
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
    /// Ends with where the worker stopped.
    task: JoinHandle<Resume>,
}

impl Running {
    /// Stops the worker after its batch in flight, waits for it, and returns where it
    /// stopped (`None` if its task ended abnormally).
    async fn stop(self) -> Option<Resume> {
        self.trigger.trigger();
        match self.task.await {
            Ok(resume) => Some(resume),
            Err(error) => {
                warn!(%error, "a subscription task ended abnormally");
                None
            }
        }
    }
}

/// A worker stopped because a new version changes its subscription, kept so that it can
/// be started again if the new version cannot be installed.
struct Stopped {
    subscription: String,
    filter: Filter,
    resume: Option<Resume>,
}

/// A plugin's current version and its subscriptions' tasks.
struct Installed {
    slot: Arc<ArcSwap<Dispatchable>>,
    workers: HashMap<String, Running>,
}

/// Runs the subscriptions of the plugins installed in it; plugins can be installed,
/// replaced and removed while it runs. One process never runs two workers on one
/// subscription: a plugin's workers are only started by the install that stored their
/// definitions, and only where none runs.
///
/// Installing is all or nothing. Every subscription of the new version is defined in one
/// store transaction; only when it commits does the new version replace the old one (a
/// batch in flight finishes on the version it started with) and do new workers start. A
/// subscription whose filter changed starts fresh in that same transaction (checkpoint back
/// to its start, state cleared): its worker is stopped first, and started again on the old
/// version if the transaction fails. A subscription the new version no longer has stops;
/// its checkpoint and state stay.
pub struct Dispatcher {
    store: Store,
    config: DispatchConfig,
    reads: Arc<dyn Reads>,
    wakeups: wakeup::Wakeups,
    listener: ShutdownTrigger,
    plugins: HashMap<String, Installed>,
    /// On PostgreSQL: which subscriptions this daemon runs, shared with other daemons.
    leases: Option<Leases>,
}

impl Dispatcher {
    /// Connects the wake-up listener; no plugin is installed yet.
    pub async fn start(store: Store, config: DispatchConfig) -> Result<Self, StoreError> {
        let (listener, listening) = ShutdownTrigger::new();
        let held_back = HeldBack::new(config.held_back_warning);
        let wakeups = wakeup::listen(&store, config.poll_interval, held_back, listening).await?;
        let leases = match &store {
            Store::Postgres(store) => Some(Leases::start(store.clone(), config.lease_ttl)),
            Store::Sqlite(_) => None,
        };
        Ok(Self {
            leases,
            reads: Arc::new(StoreReads(store.clone())),
            store,
            config,
            wakeups,
            listener,
            plugins: HashMap::new(),
        })
    }

    /// Installs a plugin, or replaces the installed plugin of the same name. On an error
    /// nothing changed: the previous version (if any) still runs every subscription it ran.
    pub async fn install(&mut self, dispatchable: Dispatchable) -> Result<(), InstallError> {
        let info = dispatchable.handler.info().clone();
        self.check_room(&info)?;
        let definitions = self.definitions(&info).await?;
        let mut installed = self.plugins.remove(&info.name);
        let stopped = match installed.as_mut() {
            Some(installed) => stop_changed(&info.name, installed, &definitions).await,
            None => Vec::new(),
        };
        let defined = match self
            .store
            .define_subscriptions(&info.name, &definitions)
            .await
        {
            Ok(defined) => defined,
            Err(error) => {
                if let Some(mut installed) = installed {
                    self.restart(&info.name, &mut installed, stopped);
                    self.plugins.insert(info.name.clone(), installed);
                }
                return Err(error.into());
            }
        };
        let mut installed = match installed {
            Some(installed) => {
                installed.slot.store(Arc::new(dispatchable));
                installed
            }
            None => Installed {
                slot: Arc::new(ArcSwap::from_pointee(dispatchable)),
                workers: HashMap::new(),
            },
        };
        if let Some(leases) = &self.leases {
            leases.plugin_installed(&info);
        }
        for defined in defined.iter().filter(|defined| defined.restarted) {
            warn_restarted(&self.store, &defined.record).await;
        }
        self.start_defined(&info, &mut installed, defined);
        self.stop_dropped(&info, &mut installed).await;
        self.plugins.insert(info.name.clone(), installed);
        Ok(())
    }

    /// Refuses a plugin whose subscriptions, beside those of the other plugins, would pass
    /// [`DispatchConfig::max_subscriptions`].
    fn check_room(&self, info: &PluginInfo) -> Result<(), InstallError> {
        let running = self
            .plugins
            .iter()
            .filter(|(name, _)| **name != info.name)
            .map(|(_, installed)| installed.workers.len())
            .sum::<usize>();
        let wanted = info.subscriptions.len();
        let cap = self.config.max_subscriptions;
        if running + wanted > cap {
            return Err(InstallError::TooManySubscriptions {
                plugin: info.name.clone(),
                wanted,
                running,
                cap,
            });
        }
        Ok(())
    }

    /// Starts a worker for each subscription just defined that has none running.
    fn start_defined(
        &self,
        info: &PluginInfo,
        installed: &mut Installed,
        defined: Vec<DefinedSubscription>,
    ) {
        let records = defined
            .iter()
            .map(|defined| defined.record.clone())
            .collect();
        tokio::spawn(check_names(self.store.clone(), records));
        for (spec, defined) in info.subscriptions.iter().zip(defined) {
            if !installed.workers.contains_key(&spec.name) {
                let running = self.start_worker(
                    &info.name,
                    &spec.name,
                    defined.record.filter,
                    Resume {
                        checkpoint: defined.record.checkpoint,
                        revision: defined.record.revision,
                    },
                    &installed.slot,
                );
                installed.workers.insert(spec.name.clone(), running);
            }
        }
    }

    /// Stops the workers of subscriptions `info` no longer has; their checkpoints and state
    /// stay.
    async fn stop_dropped(&self, info: &PluginInfo, installed: &mut Installed) {
        let dropped: Vec<String> = installed
            .workers
            .keys()
            .filter(|name| info.subscription(name).is_none())
            .cloned()
            .collect();
        for name in dropped {
            if let Some(running) = installed.workers.remove(&name) {
                running.stop().await;
                self.record_stopped(&format!("{}.{name}", info.name)).await;
                info!(plugin = %info.name, subscription = %name, "subscription stopped (dropped by the new version)");
            }
        }
    }

    /// The durable definition of each subscription of `info`, in its order. Reads the
    /// store's head for subscriptions that start from now; changes nothing.
    async fn definitions(
        &self,
        info: &PluginInfo,
    ) -> Result<Vec<SubscriptionDefinition>, StoreError> {
        let mut head = None;
        let mut definitions = Vec::with_capacity(info.subscriptions.len());
        for spec in &info.subscriptions {
            let start = match spec.start_from {
                StartFrom::Beginning => Checkpoint::ORIGIN,
                StartFrom::Now => match head {
                    Some(head) => head,
                    None => *head.insert(self.store.head().await?),
                },
            };
            definitions.push(SubscriptionDefinition {
                name: format!("{}.{}", info.name, spec.name),
                filter: filter_of(spec),
                start,
            });
        }
        Ok(definitions)
    }

    /// Starts again, on the installed version, the workers [`stop_changed`] stopped for an
    /// install that failed.
    fn restart(&self, plugin: &str, installed: &mut Installed, stopped: Vec<Stopped>) {
        for worker in stopped {
            let Some(resume) = worker.resume else {
                warn!(plugin, subscription = %worker.subscription, "cannot restart a subscription whose task ended abnormally");
                continue;
            };
            let running = self.start_worker(
                plugin,
                &worker.subscription,
                worker.filter,
                resume,
                &installed.slot,
            );
            installed.workers.insert(worker.subscription, running);
        }
    }

    /// Stops a plugin's subscriptions after their batches in flight; checkpoints and state
    /// stay, so installing it again resumes where it stopped.
    pub async fn remove(&mut self, plugin: &str) {
        if let Some(installed) = self.plugins.remove(plugin) {
            self.stop_workers(plugin, installed).await;
            if let Some(leases) = &self.leases {
                leases.plugin_removed(plugin);
            }
            info!(plugin, "plugin removed");
        }
    }

    /// Stops a plugin's subscriptions (all asked at once, so their batches in flight finish
    /// side by side) and records them as stopped, so `subscriptions list` does not show a
    /// stopped daemon's subscriptions as running.
    async fn stop_workers(&self, plugin: &str, installed: Installed) {
        for running in installed.workers.values() {
            running.trigger.trigger();
        }
        for (name, running) in installed.workers {
            running.stop().await;
            self.record_stopped(&format!("{plugin}.{name}")).await;
        }
    }

    /// Records a subscription as stopped, where no lease says who runs it (a leased worker
    /// records its own stop).
    async fn record_stopped(&self, subscription: &str) {
        if self.leases.is_none() {
            worker::record_stopped(&self.store, subscription).await;
        }
    }

    /// A receiver that changes whenever new events may be readable (or a checkpoint may
    /// have moved): what wakes the subscriptions, for other followers of the log.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups.any.clone()
    }

    /// The names of the installed plugins.
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Stops every subscription after its batch in flight and waits for them.
    pub async fn stop(mut self) {
        for running in self
            .plugins
            .values()
            .flat_map(|installed| installed.workers.values())
        {
            running.trigger.trigger();
        }
        let plugins: Vec<String> = self.plugins.keys().cloned().collect();
        for plugin in plugins {
            if let Some(installed) = self.plugins.remove(&plugin) {
                self.stop_workers(&plugin, installed).await;
            }
        }
        if let Some(leases) = self.leases.take() {
            leases.leave().await;
        }
        self.listener.trigger();
    }

    /// Starts the worker of `plugin`'s subscription `subscription` (its own name for it)
    /// at `resume`.
    fn start_worker(
        &self,
        plugin: &str,
        subscription: &str,
        filter: Filter,
        resume: Resume,
        slot: &Arc<ArcSwap<Dispatchable>>,
    ) -> Running {
        let name = format!("{plugin}.{subscription}");
        info!(subscription = %name, checkpoint = %resume.checkpoint, "subscription started");
        let (trigger, shutdown) = ShutdownTrigger::new();
        let cache = Arc::new(Mutex::new(StateCache::new(self.config.state_cache_bytes)));
        let reads = Arc::new(CachedReads {
            inner: Arc::clone(&self.reads),
            namespace: name.clone(),
            cache: Arc::clone(&cache),
        });
        let worker = Worker {
            store: self.store.clone(),
            slot: Arc::clone(slot),
            current: slot.load_full(),
            subscription: subscription.to_owned(),
            name: name.clone(),
            filter: filter.clone(),
            config: self.config,
            reads,
            cache,
            wakeups: self.wakeups.clone(),
            shutdown,
            checkpoint: resume.checkpoint,
            revision: resume.revision,
            prefetch: None,
            replay_checked: None,
            store_failures: 0,
            owner: self.leases.as_ref().map(Leases::owner),
            lease_lost: false,
        };
        let task = match &self.leases {
            Some(leases) => tokio::spawn(leases::run_leased(worker, leases.holding(&name))),
            None => tokio::spawn(worker.run()),
        };
        Running {
            filter,
            trigger,
            task,
        }
    }
}

/// Stops the workers of `installed` whose subscription `definitions` redefine with another
/// filter: none may commit under the old filter once the new one is stored.
async fn stop_changed(
    plugin: &str,
    installed: &mut Installed,
    definitions: &[SubscriptionDefinition],
) -> Vec<Stopped> {
    let changed: Vec<String> = installed
        .workers
        .iter()
        .filter(|(name, running)| {
            let durable = format!("{plugin}.{name}");
            definitions
                .iter()
                .any(|definition| definition.name == durable && definition.filter != running.filter)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let mut stopped = Vec::with_capacity(changed.len());
    for subscription in changed {
        if let Some(running) = installed.workers.remove(&subscription) {
            let filter = running.filter.clone();
            let resume = running.stop().await;
            stopped.push(Stopped {
                subscription,
                filter,
                resume,
            });
        }
    }
    stopped
}

/// Runs every subscription of `plugins` until `shutdown`; returns when all have stopped.
pub async fn run(
    store: Store,
    plugins: Vec<Dispatchable>,
    config: DispatchConfig,
    mut shutdown: Shutdown,
) -> Result<(), InstallError> {
    let mut dispatcher = Dispatcher::start(store, config).await?;
    for dispatchable in plugins {
        dispatcher.install(dispatchable).await?;
    }
    shutdown.requested().await;
    dispatcher.stop().await;
    Ok(())
}
