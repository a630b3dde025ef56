//! The whole daemon as one library call: [`run`] connects the store, starts the runtime,
//! watches and loads the plugins folder, dispatches every subscription and delivers the
//! messages their batches commit to the operator's sinks, until its shutdown future
//! resolves. The `eventhost run` command, the tests and the benchmarks all
//! start the daemon through it, so there is one wiring to read and to change.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventhost_deliveries::{ConfigError as SinkError, Deliveries};
use eventhost_dispatch::plugins::{PluginsError, Registry, Watcher};
use eventhost_dispatch::relay::Relays;
use eventhost_dispatch::shutdown::{Shutdown, ShutdownTrigger};
use eventhost_dispatch::{
    BATCH_BYTES, DispatchConfig, Dispatchable, Dispatcher, HELD_BACK_WARNING, LEASE_TTL,
    MAX_SUBSCRIPTIONS, STATE_CACHE_BYTES,
};
use eventhost_runtime::{
    DEFAULT_CACHE_DIR, FileRules, GuestPool, Runtime, RuntimeConfig, RuntimeError,
};
use eventhost_store::{self as store, DaemonLock, Store, StoreError};
use tracing::{info, warn};

use crate::config::Config;
use crate::http::{HttpError, HttpServer, HttpSettings};

/// What the daemon runs on and how.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `postgres://...` or `sqlite://PATH`.
    pub database_url: String,
    /// The folder of plugin files (`*.wasm`, each with an optional `NAME.toml` sidecar).
    pub plugins: PathBuf,
    /// Where compiled plugins are cached (only the daemon should write there).
    pub cache_dir: PathBuf,
    /// The fallback poll of idle subscriptions; `None` takes the store's default.
    pub poll_interval: Option<Duration>,
    /// Tries of a failing batch before its poison event is parked.
    pub max_attempts: u32,
    /// Time between progress reports of a subscription that is catching up.
    pub progress_interval: Duration,
    /// What is read from the plugins folder: regular files up to a size, links or not.
    pub files: FileRules,
    /// The threads plugins run on, and how many of their calls run at once.
    pub guests: GuestPool,
    /// Subscriptions run at once, over all plugins.
    pub max_subscriptions: usize,
    /// Bytes of events one batch holds.
    pub batch_bytes: usize,
    /// Bytes of committed state each subscription keeps in memory between batches.
    pub state_cache_bytes: usize,
    /// How long events may be held back by an open transaction before the log names it.
    pub held_back_warning: Duration,
    /// How long a subscription lease lasts unless renewed (PostgreSQL).
    pub lease_ttl: Duration,
    /// The configuration file's sinks and delivery settings.
    pub config: Config,
    /// Where to serve the HTTP API, if anywhere.
    pub http: Option<HttpSettings>,
}

impl DaemonConfig {
    /// The defaults of `eventhost run` for a store and a plugins folder.
    pub fn new(database_url: impl Into<String>, plugins: impl Into<PathBuf>) -> Self {
        Self {
            database_url: database_url.into(),
            plugins: plugins.into(),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            poll_interval: None,
            max_attempts: 5,
            progress_interval: Duration::from_secs(10),
            files: FileRules::default(),
            guests: GuestPool::default(),
            max_subscriptions: MAX_SUBSCRIPTIONS,
            batch_bytes: BATCH_BYTES,
            state_cache_bytes: STATE_CACHE_BYTES,
            held_back_warning: HELD_BACK_WARNING,
            lease_ttl: LEASE_TTL,
            config: Config::default(),
            http: None,
        }
    }

    fn dispatch_config(&self, store: &Store) -> DispatchConfig {
        let mut config = DispatchConfig::for_store(store);
        config.max_attempts = self.max_attempts;
        config.progress_interval = self.progress_interval;
        config.max_subscriptions = self.max_subscriptions;
        config.batch_bytes = self.batch_bytes;
        config.state_cache_bytes = self.state_cache_bytes;
        config.held_back_warning = self.held_back_warning;
        config.lease_ttl = self.lease_ttl;
        if let Some(poll) = self.poll_interval {
            config.poll_interval = poll.max(Duration::from_millis(1));
        }
        config
    }
}

/// Why the daemon could not start (once started, it only stops when asked).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the plugin runtime")]
    Runtime(#[from] RuntimeError),
    #[error("cannot open the plugins folder {path}")]
    PluginsFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugins(#[from] PluginsError),
    #[error("cannot start the delivery workers: {0}")]
    Deliveries(#[from] SinkError),
    #[error("cannot start the relays: {0}")]
    Relays(String),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Runs the daemon until `shutdown` resolves, then stops taking batches and lets those in
/// flight finish, unless `abandon` resolves first: their effects were never committed, so
/// abandoning them loses nothing. A shutdown during start-up stops the loading of the
/// plugins folder (a file being compiled or described is left unloaded) and then the
/// plugins already running.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
    abandon: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (trigger, stopping) = ShutdownTrigger::new();
    let work = async {
        let daemon = Daemon::start(config, stopping.clone()).await?;
        let mut stopping = stopping.clone();
        daemon
            .run(async move { stopping.requested().await }, abandon)
            .await;
        Ok(())
    };
    tokio::pin!(work);
    tokio::select! {
        outcome = &mut work => return outcome,
        () = shutdown => trigger.trigger(),
    }
    work.await
}

/// A started daemon: its plugins folder loaded and watched, every subscription running.
pub struct Daemon {
    folder: PathBuf,
    watcher: Watcher,
    dispatcher: Dispatcher,
    registry: Registry,
    deliveries: Deliveries,
    http: Option<HttpServer>,
    store: Store,
    /// SQLite: the database is this daemon's while it runs.
    _lock: Option<DaemonLock>,
}

impl Daemon {
    /// Connects the store (migrating it), starts the runtime, and loads every plugin of the
    /// folder; a plugin file that cannot be loaded is reported and skipped. Loading (now and
    /// as files change) stops at `shutdown`.
    pub async fn start(config: DaemonConfig, shutdown: Shutdown) -> Result<Self, DaemonError> {
        let store = store::connect(&config.database_url).await?;
        let lock = match &store {
            Store::Sqlite(sqlite) => sqlite.lock_for_daemon()?,
            Store::Postgres(_) => None,
        };
        let mut runtime_config = RuntimeConfig::daemon(&config.cache_dir);
        runtime_config.store_limits = store.limits();
        runtime_config.guests = Some(config.guests.clone());
        let runtime = Runtime::new(runtime_config)?;
        // One spelling of every path: the watcher reports absolute ones.
        let folder = std::fs::canonicalize(&config.plugins).map_err(|source| {
            DaemonError::PluginsFolder {
                path: config.plugins.clone(),
                source,
            }
        })?;
        // Watch first, so a file that lands during the initial load is not missed.
        let watcher = Watcher::new(&folder)?;
        let mut dispatcher =
            Dispatcher::start(store.clone(), config.dispatch_config(&store)).await?;
        // Listen before loading plugins: an address in use stops start-up before any plugin
        // is compiled.
        let http = match &config.http {
            Some(settings) => {
                Some(HttpServer::start(settings, store.clone(), dispatcher.changes()).await?)
            }
            None => None,
        };
        if !config.config.relays.is_empty() {
            let relays = Relays::new(&config.config.relays).map_err(DaemonError::Relays)?;
            dispatcher
                .install(Dispatchable {
                    handler: Arc::new(relays),
                    max_batch_size: None,
                })
                .await
                .map_err(|error| DaemonError::Relays(error.to_string()))?;
        }
        let deliveries =
            Deliveries::start(&store, &config.config.sinks, &config.config.deliveries)?;
        let sinks = config.config.sink_names();
        let mut registry = Registry::new(runtime, store.clone(), config.files, sinks, shutdown);
        registry.load_folder(&folder, &mut dispatcher).await?;
        if dispatcher.plugins().next().is_none() {
            warn!(folder = %folder.display(), "no plugin loaded yet: drop .wasm files into the folder");
        }
        if let Some(http) = &http {
            http.plugins_loaded();
        }
        Ok(Self {
            folder,
            watcher,
            dispatcher,
            registry,
            deliveries,
            http,
            store,
            _lock: lock,
        })
    }

    /// The names of the plugins running.
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.dispatcher.plugins()
    }

    /// Applies changes to the plugins folder until `shutdown` resolves; then stops as
    /// [`run`] says.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        abandon: impl Future<Output = ()>,
    ) {
        info!(plugins = %self.folder.display(), "eventhost is running; Ctrl-C to stop");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                changes = self.watcher.changes() => {
                    let Some(paths) = changes else { break };
                    for path in paths {
                        self.registry.apply(&path, &mut self.dispatcher).await;
                    }
                }
            }
        }
        info!("stopping: finishing the batches in flight (signal again to abandon them)");
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        tokio::select! {
            () = self.dispatcher.stop() => {}
            () = abandon => {
                warn!("abandoning the batches in flight: none of their effects were committed");
            }
        }
        self.registry.stop().await;
        self.deliveries.stop().await;
        self.store.close().await;
    }
}
