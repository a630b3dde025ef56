//! `eventhost run`: the daemon. Loads the plugins folder and dispatches every subscription,
//! applying plugin files as they are added, replaced or removed, until SIGINT or SIGTERM; a
//! second signal abandons batches in flight (their effects were never committed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use eventhost_runtime::{DEFAULT_CACHE_DIR, FileRules};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tracing::info;

use crate::daemon::{self, DaemonConfig};

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

    /// The largest plugin file loaded, in bytes (checked before reading).
    #[arg(long, value_name = "BYTES", default_value_t = FileRules::default().max_plugin_bytes, value_parser = clap::value_parser!(u64).range(1..))]
    max_plugin_bytes: u64,

    /// Follow symbolic links in the plugins folder (to regular files only); by default a
    /// link is refused.
    #[arg(long)]
    follow_symlinks: bool,

    /// Seconds between progress reports of a subscription that is catching up.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    progress_interval: u64,
}

pub async fn run(database_url: &str, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Listen before anything slow: a signal during start-up stops the daemon gracefully too.
    let mut signals = Termination::listen()?;
    let (first, first_signal) = oneshot::channel::<()>();
    let (second, second_signal) = oneshot::channel::<()>();
    tokio::spawn(async move {
        signals.next().await;
        let _ = first.send(());
        signals.next().await;
        let _ = second.send(());
    });
    let mut config = DaemonConfig::new(database_url, &args.plugins);
    config.cache_dir = args.cache_dir;
    config.poll_interval = args.poll_interval_ms.map(Duration::from_millis);
    config.max_attempts = args.max_attempts;
    config.progress_interval = Duration::from_secs(args.progress_interval);
    config.files = FileRules {
        max_plugin_bytes: args.max_plugin_bytes,
        follow_symlinks: args.follow_symlinks,
    };
    // A dropped sender (the signal task ended) resolves the receiver too.
    daemon::run(
        config,
        async {
            let _ = first_signal.await;
        },
        async {
            let _ = second_signal.await;
        },
    )
    .await?;
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
