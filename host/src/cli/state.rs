//! `eventhost state`: a subscription's key-value state (a projection's read model), as JSONL.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_store::{self as store, SubscriptionStore};

/// Entries fetched per round trip.
const PAGE: usize = 1_000;

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The subscription, `<plugin>.<subscription>` as `subscriptions list` shows it.
    subscription: String,
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
}

pub async fn run(database_url: &str, args: StateArgs) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    anyhow::ensure!(
        store.subscription(&args.subscription).await?.is_some(),
        "no subscription {:?} (see `eventhost subscriptions list`)",
        args.subscription
    );
    let mut out = std::io::stdout().lock();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .state_scan(&args.subscription, &args.prefix, after.as_deref(), PAGE)
            .await?;
        for (key, value) in &page {
            // Values are usually JSON documents: show them as such when they parse.
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
            let line = serde_json::json!({ "key": key, "value": value });
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
        if page.len() < PAGE {
            return Ok(ExitCode::SUCCESS);
        }
        after = page.last().map(|(key, _)| key.clone());
    }
}
