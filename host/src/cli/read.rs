//! `eventhost read`: prints events as JSONL, one stream, one category or all, page by page.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_domain::{Event, StreamId};
use eventhost_store::{self as store, EventStore, Store};

/// Rows fetched per round trip; output streams out page by page.
const PAGE: usize = 1_000;

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    #[command(subcommand)]
    scope: Scope,

    /// Start after this position (all, category) or version (stream).
    #[arg(long, global = true, default_value_t = 0, value_parser = super::stored_number())]
    after: u64,

    /// Print at most this many events.
    #[arg(long, global = true)]
    limit: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
enum Scope {
    /// Every event, in position order.
    All,
    /// The events of one aggregate type, in position order.
    Category { aggregate_type: String },
    /// The events of one stream, in version order.
    Stream {
        aggregate_type: String,
        aggregate_id: String,
    },
}

pub async fn run(database_url: &str, args: ReadArgs) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut after = args.after;
    let mut stdout = std::io::stdout().lock();
    while remaining > 0 {
        let page = read_page(&store, &args.scope, after, remaining.min(PAGE)).await?;
        let Some(last) = page.last() else { break };
        after = match args.scope {
            Scope::Stream { .. } => last.version,
            _ => last.position,
        };
        remaining -= page.len();
        for mut event in page {
            // The same text on both stores: PostgreSQL prints `jsonb` with spaces.
            event.payload = event.payload.compacted();
            let line = serde_json::to_string(&event).context("cannot encode an event")?;
            writeln!(stdout, "{line}").context("cannot write to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn read_page(
    store: &Store,
    scope: &Scope,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<Event>> {
    Ok(match scope {
        Scope::All => store.read_positions(None, after, limit).await?,
        Scope::Category { aggregate_type } => {
            store
                .read_positions(Some(aggregate_type), after, limit)
                .await?
        }
        Scope::Stream {
            aggregate_type,
            aggregate_id,
        } => {
            let stream = StreamId::new(aggregate_type, aggregate_id);
            store.read_stream(&stream, after + 1, limit).await?
        }
    })
}
