//! The `eventhost` command line: parses arguments, calls the library, prints results.
//!
//! Exit codes are part of the interface: 0 success, 1 any other failure, 2 usage error,
//! 3 optimistic-concurrency conflict. Failures print one `error: ...` line on stderr.

mod append;
mod daemons;
mod deliveries;
#[cfg(test)]
mod docs_commands;
mod new;
mod parked;
mod plugins;
mod read;
mod run;
mod state;
mod subscriptions;
mod test;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use eventhost_store::{self as store, StoreError};

/// The SQLite file used when neither `--database-url` nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/eventhost.db";

#[derive(Debug, Parser)]
#[command(
    name = "eventhost",
    version,
    about = "Event store with durable subscriptions feeding sandboxed WebAssembly plugins"
)]
pub struct Cli {
    /// Where events live: `postgres://...` or `sqlite://PATH` (created if missing).
    #[arg(long, env = "DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,

    /// Log output format (logs go to stderr).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: dispatch every subscription of every plugin in the plugins folder.
    Run(run::RunArgs),
    /// Append events: one from arguments, or many from a JSONL file or stdin.
    Append(append::AppendArgs),
    /// Read events of one stream, one category (aggregate type), or all, as JSONL.
    Read(read::ReadArgs),
    /// Create or upgrade the database schema (also done automatically on every start).
    Migrate,
    /// Run a plugin against events from a JSONL file, with no database, and print what it did.
    Test(test::TestArgs),
    /// Write a new plugin project (Rust, Python or JavaScript) that builds and passes its tests.
    New(new::NewArgs),
    /// Inspect plugin files; list the daemon's plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// List subscriptions with their lag; reset one.
    #[command(subcommand)]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// Print a subscription's state (a projection's read model) as JSONL.
    State(state::StateArgs),
    /// List, replay or skip parked events.
    #[command(subcommand)]
    Parked(parked::ParkedCommand),
    /// List the messages plugins asked to send to sinks; retry dead ones, skip others.
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// List the daemons running on a PostgreSQL database and what each runs.
    #[command(subcommand)]
    Daemons(daemons::DaemonsCommand),
}

/// Runs the command line and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // `plugins check` reads a database only when `--database-url` names one: neither the
    // default SQLite file (it would be created to answer nothing) nor `DATABASE_URL`, set
    // for the daemon, which a check of a file before a deploy must not touch unasked.
    let database_named =
        matches.value_source("database_url") == Some(clap::parser::ValueSource::CommandLine);
    if database_named {
        let unused = match cli.command {
            Command::Test(_) => {
                Some("test uses no database (it runs the plugin on an in-memory store)")
            }
            Command::New(_) => Some("new writes a project and uses no database"),
            _ => None,
        };
        if let Some(why) = unused {
            return fail(&anyhow::anyhow!(
                "eventhost {why}: --database-url does not apply"
            ));
        }
    }
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(&anyhow::Error::new(error).context("cannot start the async runtime"));
        }
    };
    let outcome = runtime.block_on(run(cli, database_named));
    // A plugin still compiling on a blocking thread (the daemon was stopped while loading
    // it) must not hold up the exit: its artifact is written atomically or not at all.
    runtime.shutdown_timeout(Duration::from_millis(250));
    match outcome {
        Ok(code) => code,
        Err(error) => fail(&error),
    }
}

async fn run(cli: Cli, database_named: bool) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(&cli.database_url, args).await,
        Command::Subscriptions(command) => subscriptions::run(&cli.database_url, command).await,
        Command::Parked(command) => parked::run(&cli.database_url, command).await,
        Command::Deliveries(command) => deliveries::run(&cli.database_url, command).await,
        Command::Daemons(command) => daemons::run(&cli.database_url, command).await,
        Command::State(args) => state::run(&cli.database_url, args).await,
        Command::Append(args) => append::run(&cli.database_url, args).await,
        Command::Read(args) => read::run(&cli.database_url, args).await,
        Command::Migrate => {
            store::connect(&cli.database_url).await?;
            eprintln!("schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Test(args) => test::run(args).await,
        Command::New(args) => new::run(args),
        Command::Plugins(command) => {
            let named = database_named.then_some(cli.database_url.as_str());
            plugins::run(&cli.database_url, named, command).await
        }
    }
}

/// Where `test` and `plugins check` cache compiled plugins unless told: the user's cache
/// folder (`$XDG_CACHE_HOME/eventhost`, else `~/.cache/eventhost`, on Linux), not `data/cache`
/// of whatever directory they run in, which a plugin's author would find tens of MB of
/// artifacts in. `data/cache` when the system names no cache folder.
pub(crate) fn user_cache_dir() -> std::path::PathBuf {
    dirs::cache_dir().map_or_else(
        || std::path::PathBuf::from(eventhost_runtime::DEFAULT_CACHE_DIR),
        |dir| dir.join("eventhost"),
    )
}

/// A position or a version as the command line takes it: the store keeps them as signed
/// 64-bit integers, so larger numbers are a usage error, not an overflow.
pub(crate) fn stored_number() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=i64::MAX as u64)
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // The reader of stdout went away (`| head`): the end of the output, not a failure.
    let closed_stdout = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if closed_stdout {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {}", one_line(error));
    let conflict = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::Conflict { .. })
        )
    });
    ExitCode::from(if conflict { 3 } else { 1 })
}

/// The error and its causes on one line, leaving out causes whose text the line already
/// holds (database drivers often repeat their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
