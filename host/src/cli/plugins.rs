//! `eventhost plugins`: inspect plugin files.
//!
//! `check` loads a file exactly as the daemon would (validation, import policy, `describe`)
//! and prints what the plugin subscribes to, or why it is rejected (exit code 1). `list` shows
//! what the daemon recorded of its plugins folder.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_dispatch::filter_check::NameCheck;
use eventhost_dispatch::filter_of;
use eventhost_domain::StoreLimits;
use eventhost_runtime::{
    FileRules, Interruption, PluginInfo, Runtime, RuntimeConfig, StartFrom, SubscriptionSpec,
};
use eventhost_store::{self as store, Checkpoint, PluginRecords, SubscriptionStore};

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Load a plugin file as the daemon would and print its description, or why it is rejected.
    Check(CheckArgs),
    /// The running daemon's plugin files: name, version, file, hash, loaded at, status.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The plugin's `.wasm` file.
    plugin: PathBuf,
    /// Print the description as JSON.
    #[arg(long)]
    json: bool,
    /// Where compiled artifacts are cached [default: the user's cache folder, e.g.
    /// ~/.cache/eventhost]
    #[arg(long, value_name = "DIR", env = "EVENTHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// The daemon's configuration file: the sinks a sidecar may grant.
    #[arg(long, value_name = "FILE", env = "EVENTHOST_CONFIG")]
    config: Option<PathBuf>,
}

/// `named_database`: the database the operator named, which `check` compares the plugin's
/// filters with (none: `check` reads no database).
pub async fn run(
    database_url: &str,
    named_database: Option<&str>,
    command: PluginsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::Check(args) => check(args, named_database).await,
        PluginsCommand::List { json } => list(database_url, json).await,
    }
}

async fn list(database_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<20} {:<10} {:<40} {:<12} {:<20} STATUS",
            "NAME", "VERSION", "FILE", "HASH", "LOADED AT"
        )?;
    }
    for record in store.plugin_records().await? {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&record).context("cannot encode a plugin record")?
            )?;
            continue;
        }
        let status = match &record.error {
            Some(error) => format!("{}: {error}", record.status),
            None => record.status.clone(),
        };
        writeln!(
            out,
            "{:<20} {:<10} {:<40} {:<12} {:<20} {status}",
            record.name.as_deref().unwrap_or("-"),
            record.version.as_deref().unwrap_or("-"),
            record.file,
            record.hash.get(..12).unwrap_or(&record.hash),
            record.loaded_at.format("%Y-%m-%d %H:%M:%S"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(args: CheckArgs, named_database: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = RuntimeConfig {
        interruption: Interruption::Epoch,
        pool: None,
        guests: None,
        cache_dir: Some(args.cache_dir.unwrap_or_else(super::user_cache_dir)),
        seeded_random: false,
        store_limits: StoreLimits::default(),
    };
    let runtime = Runtime::new(config)?;
    // The operator names the file: a link to it is followed.
    let rules = FileRules {
        follow_symlinks: true,
        ..FileRules::default()
    };
    let sinks = Config::load_given(args.config.as_deref())?.sink_names();
    // As the daemon loads it: with the limits and grants of its sidecar `NAME.toml`, if any.
    let plugin = eventhost_dispatch::plugins::load_plugin(
        &runtime,
        &args.plugin,
        rules,
        StoreLimits::default(),
        &sinks,
    )
    .await
    .with_context(|| format!("{} is rejected", args.plugin.display()))?;
    let info = plugin.handler.info();
    let grants = plugin.handler.sinks();
    let warnings = match named_database {
        Some(url) => deploy_warnings(url, info).await?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(info)?;
        value["sinks"] = serde_json::json!(grants);
        if let Some(subscriptions) = value["subscriptions"].as_array_mut() {
            for subscription in subscriptions {
                let capped = subscription["name"]
                    .as_str()
                    .and_then(|name| plugin.batch_size(name));
                if let Some(capped) = capped {
                    subscription["batch_size"] = serde_json::json!(capped);
                }
            }
        }
        if named_database.is_some() {
            value["warnings"] = serde_json::json!(warnings);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)
    } else {
        let mut text = describe(info, &grants, |name| plugin.batch_size(name));
        for warning in &warnings {
            text.push_str(&format!("  warning: {warning}\n"));
        }
        write!(out, "{text}")
    }
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// What deploying the plugin would do that its author may not mean, compared with the
/// database at `url`: a subscription whose filter changed starts again with its state
/// cleared; a filter's name that no stored event has receives nothing.
async fn deploy_warnings(url: &str, info: &PluginInfo) -> anyhow::Result<Vec<String>> {
    let store = store::connect(url).await?;
    let mut warnings = Vec::new();
    let mut names = NameCheck::new(&store);
    for spec in &info.subscriptions {
        let name = format!("{}.{}", info.name, spec.name);
        let filter = filter_of(spec);
        if let Some(stored) = store.subscription(&name).await?
            && stored.filter.clone().canonical() != filter
        {
            let again = match spec.start_from {
                StartFrom::Beginning => {
                    let events = store.count_after(Checkpoint::ORIGIN, &filter).await?;
                    format!(
                        "from its beginning, clears its state and handles the {events} stored events the new filter matches again"
                    )
                }
                StartFrom::Now => "from the moment of the deploy and clears its state".to_owned(),
            };
            warnings.push(format!(
                "{name}: its filter differs from the running subscription's: deploying it starts \
                 the subscription again {again}"
            ));
        }
        for miss in names.unmatched(&filter).await? {
            warnings.push(format!(
                "{name}: {miss}: the subscription would receive nothing of that name (a typo?)"
            ));
        }
    }
    Ok(warnings)
}

/// The plugin as text; `batch_size` gives a subscription's batch size under the sidecar's cap.
fn describe(
    info: &PluginInfo,
    sinks: &[&str],
    batch_size: impl Fn(&str) -> Option<usize>,
) -> String {
    let mut text = format!("{} {}\n", info.name, info.version);
    let granted = if sinks.is_empty() {
        "none".to_owned()
    } else {
        sinks.join(", ")
    };
    text.push_str(&format!("  sinks granted: {granted}\n"));
    for subscription in &info.subscriptions {
        let capped = batch_size(&subscription.name).unwrap_or(subscription.batch_size as usize);
        text.push_str(&describe_subscription(&info.name, subscription, capped));
    }
    text
}

fn describe_subscription(
    plugin: &str,
    subscription: &SubscriptionSpec,
    batch_size: usize,
) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "any".to_owned()
        } else {
            names.join(", ")
        }
    };
    format!(
        "  subscription {plugin}.{}\n    aggregate types: {}\n    event types:     {}\n    batch size:      {}\n    starts from:     {}\n",
        subscription.name,
        list(&subscription.aggregate_types),
        list(&subscription.event_types),
        batch_size,
        match subscription.start_from {
            StartFrom::Beginning => "beginning",
            StartFrom::Now => "now",
        }
    )
}
