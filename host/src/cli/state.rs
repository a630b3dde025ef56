//! `eventhost state`: a subscription's key-value state (a projection's read model), as JSONL.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_store as store;

use crate::operate;

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
    let mut out = std::io::stdout().lock();
    let mut after: Option<String> = None;
    loop {
        let page = operate::state_page(
            &store,
            &args.subscription,
            &args.prefix,
            after.as_deref(),
            PAGE,
        )
        .await?;
        for entry in &page {
            let line = serde_json::to_string(entry).context("cannot encode a state entry")?;
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
        if page.len() < PAGE {
            return Ok(ExitCode::SUCCESS);
        }
        after = page.last().map(|entry| entry.key.clone());
    }
}
