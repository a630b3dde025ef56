//! `eventhost run`: the daemon. Loads the plugins folder and dispatches every subscription,
//! applying plugin files as they are added, replaced or removed, until SIGINT or SIGTERM; a
//! second signal abandons batches in flight (their effects were never committed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use eventhost_dispatch::{
    BATCH_BYTES, HELD_BACK_WARNING, LEASE_TTL, MAX_SUBSCRIPTIONS, STATE_CACHE_BYTES,
};
use eventhost_runtime::{DEFAULT_CACHE_DIR, FileRules, GuestPool};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tracing::info;

use crate::config::Config;
use crate::daemon::{self, DaemonConfig};
use crate::http::{self, HttpSettings, Listen, Scope};

/// The environment variable holding a token with every scope.
const API_TOKEN_ENV: &str = "EVENTHOST_API_TOKEN";

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The folder of plugin files (`*.wasm`, each with an optional `NAME.toml` sidecar).
    #[arg(long, value_name = "DIR", default_value = "plugins")]
    plugins: PathBuf,

    /// The configuration file: sinks for plugins' messages, delivery settings (see
    /// examples/eventhost.toml). Without one the daemon has no sinks.
    #[arg(long, value_name = "FILE", env = "EVENTHOST_CONFIG")]
    config: Option<PathBuf>,

    /// Where compiled plugins are cached (only the daemon should write there).
    #[arg(long, value_name = "DIR", env = "EVENTHOST_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,

    /// Serve the HTTP API on this address, or `off` [default: the configuration file's
    /// [http] address, else 127.0.0.1:7070]. An address other than loopback needs a token
    /// (EVENTHOST_API_TOKEN, or [http.tokens] in the configuration file).
    #[arg(long, value_name = "ADDRESS:PORT|off", env = "EVENTHOST_HTTP")]
    http: Option<Listen>,

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

    /// Threads plugin code runs on, apart from the daemon's own [default: the number of
    /// CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    guest_threads: Option<u16>,

    /// Plugin calls (batches) running at once over all plugins; later ones wait their turn.
    #[arg(long, value_name = "N", default_value_t = GuestPool::default().concurrent_calls as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_plugin_calls: u16,

    /// Calls of one plugin running at once, whatever its number of subscriptions [default:
    /// the guest threads].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    max_calls_per_plugin: Option<u16>,

    /// Subscriptions run at once over all plugins; a plugin that would pass it is refused.
    #[arg(long, value_name = "N", default_value_t = MAX_SUBSCRIPTIONS, value_parser = parse_positive)]
    max_subscriptions: usize,

    /// Bytes of events (names, payloads, metadata) one batch holds; a batch ends after the
    /// event that reaches it, whatever its batch size.
    #[arg(long, value_name = "BYTES", default_value_t = BATCH_BYTES, value_parser = parse_positive)]
    max_batch_bytes: usize,

    /// Bytes of committed state each subscription keeps in memory between its batches, so a
    /// plugin's state reads need no round trip to the store (0: none).
    #[arg(long, value_name = "BYTES", default_value_t = STATE_CACHE_BYTES)]
    state_cache_bytes: usize,

    /// Seconds events may be held back by an open transaction (PostgreSQL) before the log
    /// names the transaction.
    #[arg(long, value_name = "SECONDS", default_value_t = HELD_BACK_WARNING.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    held_back_warning: u64,

    /// Seconds a subscription lease lasts unless its daemon renews it (PostgreSQL, several
    /// daemons): how long a killed daemon's subscriptions wait before another daemon on
    /// another machine takes them. Renewed every third of it.
    #[arg(long, value_name = "SECONDS", default_value_t = LEASE_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_ttl: u64,

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
    config.config = Config::load_given(args.config.as_deref())?;
    config.http = http_settings(args.http, &config.config)?;
    config.guests = guest_pool(&args);
    config.cache_dir = args.cache_dir;
    config.poll_interval = args.poll_interval_ms.map(Duration::from_millis);
    config.max_attempts = args.max_attempts;
    config.progress_interval = Duration::from_secs(args.progress_interval);
    config.files = FileRules {
        max_plugin_bytes: args.max_plugin_bytes,
        follow_symlinks: args.follow_symlinks,
    };
    config.max_subscriptions = args.max_subscriptions;
    config.batch_bytes = args.max_batch_bytes;
    config.state_cache_bytes = args.state_cache_bytes;
    config.held_back_warning = Duration::from_secs(args.held_back_warning);
    config.lease_ttl = Duration::from_secs(args.lease_ttl);
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

/// Where and how the HTTP API is served: `--http` or EVENTHOST_HTTP, else the configuration
/// file's address, else the default; tokens from the file and from EVENTHOST_API_TOKEN.
fn http_settings(given: Option<Listen>, config: &Config) -> anyhow::Result<Option<HttpSettings>> {
    let default = Listen::At(
        http::DEFAULT_ADDRESS
            .parse()
            .context("the default HTTP address")?,
    );
    let Listen::At(address) = given.or(config.http.address).unwrap_or(default) else {
        return Ok(None);
    };
    let mut tokens = config.http.tokens.clone();
    if let Ok(secret) = std::env::var(API_TOKEN_ENV) {
        tokens
            .add(API_TOKEN_ENV, &secret, &[Scope::Admin])
            .map_err(|error| anyhow::anyhow!("{API_TOKEN_ENV}: {error}"))?;
    }
    Ok(Some(HttpSettings {
        address,
        tokens,
        max_body_bytes: config.http.max_body_bytes,
        max_feeds: config.http.max_feeds,
        ready_max_lag: config.http.ready_max_lag,
        cors_origins: config.http.cors_origins.clone(),
    }))
}

/// The guest threads and call caps the arguments ask for; each defaults as `--help` says.
fn guest_pool(args: &RunArgs) -> GuestPool {
    let defaults = GuestPool::default();
    let threads = args.guest_threads.map_or(defaults.threads, usize::from);
    GuestPool {
        threads,
        concurrent_calls: usize::from(args.max_plugin_calls),
        calls_per_plugin: args.max_calls_per_plugin.map_or(threads, usize::from),
    }
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(value) => Ok(value),
        Err(error) => Err(error.to_string()),
    }
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
