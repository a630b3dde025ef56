//! `eventhost append`: one event from flags, or many from a JSONL file or stdin.
//!
//! A file is read and checked whole (every rule the store applies, line by line) before
//! anything is written; then every line is appended, in order, in one transaction: all of
//! them or none. A line refused on the way (a conflict) is named by its number, and nothing
//! of the file is written.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use uuid::Uuid;

use eventhost_domain::input::{EventLine, parse_expected_version, read_event_lines};
use eventhost_domain::{ExpectedVersion, Metadata};
use eventhost_store::{self as store, StoreError};

use crate::operate;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  eventhost append --aggregate-type order --aggregate-id o-1 --event-type order.created --payload '{\"customer\":\"ada\"}'\n  eventhost append --file events.jsonl\n  cat events.jsonl | eventhost append --file -\n\nJSONL lines: {\"aggregate_type\", \"aggregate_id\", \"event_type\", \"payload\", optional \"metadata\" (string map), \"id\" (UUID), \"expected_version\" (number, \"any\" or \"no-stream\")}"
)]
pub struct AppendArgs {
    /// Read events from this JSONL file (`-` for stdin) instead of the flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["aggregate_type", "aggregate_id", "event_type", "payload", "metadata", "id", "expected_version"])]
    file: Option<PathBuf>,

    /// The stream's aggregate type, e.g. `order`.
    #[arg(long, required_unless_present = "file")]
    aggregate_type: Option<String>,

    /// The stream's aggregate id, e.g. `o-1001`.
    #[arg(long, required_unless_present = "file")]
    aggregate_id: Option<String>,

    /// What happened, e.g. `order.created`.
    #[arg(long, required_unless_present = "file")]
    event_type: Option<String>,

    /// The payload: any JSON value.
    #[arg(long, default_value = "{}", value_parser = parse_json)]
    payload: Option<serde_json::Value>,

    /// Metadata entries as KEY=VALUE; repeat for several.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata_entry)]
    metadata: Vec<(String, String)>,

    /// The event's id (a UUID); appending the same id twice stores it once.
    #[arg(long)]
    id: Option<Uuid>,

    /// `any`, `no-stream`, or the version the stream must be at.
    #[arg(long, default_value = "any", value_parser = parse_expected_version)]
    expected_version: Option<ExpectedVersion>,
}

pub async fn run(database_url: &str, args: AppendArgs) -> anyhow::Result<ExitCode> {
    let lines = match &args.file {
        Some(path) => read_file(path)?,
        None => vec![line_from_flags(args)?],
    };
    let store = store::connect(database_url).await?;
    let appended = operate::append_lines(&store, &lines)
        .await
        .map_err(|error| refused_line(error, &lines));
    // Before anything can fail: the daemons hear of the events now, not at their next poll.
    store.close().await;
    let appended = appended?;
    let mut stdout = std::io::stdout().lock();
    for record in &appended {
        let line = serde_json::to_string(record).context("cannot encode an appended event")?;
        writeln!(stdout, "{line}").context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Names the input line an append error is about; nothing of the input was written.
fn refused_line(error: StoreError, lines: &[EventLine]) -> anyhow::Error {
    let StoreError::InAppend { index, source } = error else {
        return anyhow::Error::new(error).context("append failed: nothing was written");
    };
    let what = match lines.get(index) {
        Some(line) if lines.len() > 1 && line.line > 0 => {
            format!("line {}: nothing of the input was written", line.line)
        }
        _ => "append failed".to_owned(),
    };
    anyhow::Error::new(*source).context(what)
}

fn read_file(path: &PathBuf) -> anyhow::Result<Vec<EventLine>> {
    let lines = if path.as_os_str() == "-" {
        read_event_lines(std::io::stdin().lock()).context("stdin")?
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        read_event_lines(BufReader::new(file)).with_context(|| path.display().to_string())?
    };
    anyhow::ensure!(!lines.is_empty(), "no events in the input");
    Ok(lines)
}

fn line_from_flags(args: AppendArgs) -> anyhow::Result<EventLine> {
    let missing = |flag: &str| anyhow::anyhow!("{flag} is required");
    Ok(EventLine {
        aggregate_type: args
            .aggregate_type
            .ok_or_else(|| missing("--aggregate-type"))?,
        aggregate_id: args.aggregate_id.ok_or_else(|| missing("--aggregate-id"))?,
        event_type: args.event_type.ok_or_else(|| missing("--event-type"))?,
        payload: args.payload.unwrap_or_default(),
        metadata: args.metadata.into_iter().collect::<Metadata>(),
        id: args.id,
        expected_version: args.expected_version.unwrap_or_default(),
        line: 0,
    })
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))
}

fn parse_metadata_entry(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    if key.is_empty() {
        return Err("metadata key must not be empty".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}
