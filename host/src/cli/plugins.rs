//! `eventhost plugins`: inspect plugin files.
//!
//! `check` loads a file exactly as the daemon would (validation, import policy, `describe`)
//! and prints what the plugin subscribes to, or why it is rejected (exit code 1).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::runtime::{Interruption, PluginInfo, Runtime, RuntimeConfig, SubscriptionSpec};

#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Load a plugin file as the daemon would and print its description, or why it is rejected.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The plugin's `.wasm` file.
    plugin: PathBuf,
    /// Print the description as JSON.
    #[arg(long)]
    json: bool,
    /// Where compiled artifacts are cached.
    #[arg(long, env = "EVENTHOST_CACHE_DIR", default_value = crate::runtime::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
}

pub async fn run(command: PluginsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::Check(args) => check(args).await,
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = RuntimeConfig {
        interruption: Interruption::Epoch,
        pool: None,
        cache_dir: Some(args.cache_dir),
        seeded_random: false,
    };
    let runtime = Runtime::new(config)?;
    let plugin = runtime
        .load_file(&args.plugin)
        .await
        .with_context(|| format!("{} is rejected", args.plugin.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(plugin.info())?);
    } else {
        print!("{}", describe(plugin.info()));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(info: &PluginInfo) -> String {
    let mut text = format!("{} {}\n", info.name, info.version);
    for subscription in &info.subscriptions {
        text.push_str(&describe_subscription(&info.name, subscription));
    }
    text
}

fn describe_subscription(plugin: &str, subscription: &SubscriptionSpec) -> String {
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
        subscription.batch_size,
        match subscription.start_from {
            crate::runtime::StartFrom::Beginning => "beginning",
            crate::runtime::StartFrom::Now => "now",
        }
    )
}
