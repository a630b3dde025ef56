//! `eventhost run`: the daemon. Loads the plugins folder and dispatches every subscription,
//! applying plugin files as they are added, replaced or removed, until SIGINT or SIGTERM; a
//! second signal abandons batches in flight (their effects were never committed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::plugins::{Registry, Watcher};
use crate::runtime::{DEFAULT_CACHE_DIR, Runtime, RuntimeConfig};
use crate::store;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The folder of plugin files (`*.wasm`, each with an optional `NAME.toml` sidecar).
    #[arg(long, value_name = "DIR", default_value = "plugins")]
    plugins: PathBuf,

    /// Where compiled plugins are cached (only the daemon should write there).
    #[arg(long, value_name = "DIR", env = "EVENTHOST_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,

    /// Fallback poll of idle subscriptions, in ms [default: 1000 on PostgreSQL, 250 on SQLite].
    #[arg(long, value_name = "MS")]
    poll_interval_ms: Option<u64>,

    /// Tries of a failing batch before its poison event is parked.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,

    /// Seconds between progress reports of a subscription that is catching up.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    progress_interval: u64,
}

pub async fn run(database_url: &str, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Listen before anything slow: a signal during start-up stops the daemon gracefully too.
    let mut signals = Termination::listen()?;
    let store = store::connect(database_url).await?;
    let runtime = Runtime::new(RuntimeConfig::daemon(&args.cache_dir))
        .context("cannot start the plugin runtime")?;
    let mut config = DispatchConfig::for_store(&store);
    config.max_attempts = args.max_attempts;
    config.progress_interval = Duration::from_secs(args.progress_interval);
    if let Some(poll) = args.poll_interval_ms {
        config.poll_interval = Duration::from_millis(poll.max(1));
    }

    // One spelling of every path: the watcher reports absolute ones.
    let folder = std::fs::canonicalize(&args.plugins)
        .with_context(|| format!("cannot open the plugins folder {}", args.plugins.display()))?;
    // Watch first, so a file that lands during the initial load is not missed.
    let mut watcher = Watcher::new(&folder)?;
    let mut dispatcher = Dispatcher::start(store.clone(), config).await?;
    let mut registry = Registry::new(runtime, store);
    registry.load_folder(&folder, &mut dispatcher).await?;
    if dispatcher.plugins().next().is_none() {
        warn!(folder = %folder.display(), "no plugin loaded yet: drop .wasm files into the folder");
    }
    info!(plugins = %folder.display(), "eventhost is running; Ctrl-C to stop");
    loop {
        tokio::select! {
            biased;
            () = signals.next() => break,
            changes = watcher.changes() => {
                let Some(paths) = changes else { break };
                for path in paths {
                    registry.apply(&path, &mut dispatcher).await;
                }
            }
        }
    }
    info!("stopping: finishing the batches in flight (signal again to abandon them)");
    tokio::select! {
        () = dispatcher.stop() => {}
        () = signals.next() => {
            warn!("abandoning the batches in flight: none of their effects were committed");
        }
    }
    registry.stop().await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM, listened to from the moment it is made: a signal that arrives while
/// the daemon is busy (loading a plugin file) is kept until `next` is awaited.
struct Termination {
    interrupt: Signal,
    terminate: Signal,
}

impl Termination {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
