//! `eventhost deliveries`: the messages plugins asked to send to the operator's sinks, and
//! what became of them. Safe while the daemon runs: `retry` makes dead or skipped messages
//! pending again (a daemon of this machine sends them within its poll interval), `skip` gives
//! up on pending or dead ones.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

use eventhost_domain::message::BodyText;
use eventhost_store::{
    self as store, DeliveryQuery, DeliverySelection, DeliveryStatus, DeliveryStore,
};

use crate::operate;

/// The most characters of a body the table shows.
const BODY_SHOWN: usize = 60;

#[derive(Debug, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// Messages, newest first: sink, key, status, attempts, last error.
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
        /// Only messages in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        limit: u64,
        /// One JSON object per line, with headers and body, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead (or skipped) messages again, from a fresh count of attempts.
    Retry {
        /// The message's id, as `list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead or skipped message (of `--sink`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this sink's messages.
        #[arg(long, requires = "all")]
        sink: Option<String>,
    },
    /// Give up on a pending or dead message: it is never sent (again).
    Skip {
        /// The message's id, as `list` shows it.
        id: i64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Pending,
    Delivered,
    Dead,
    Skipped,
}

impl From<Status> for DeliveryStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => Self::Pending,
            Status::Delivered => Self::Delivered,
            Status::Dead => Self::Dead,
            Status::Skipped => Self::Skipped,
        }
    }
}

pub async fn run(database_url: &str, command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut out = std::io::stdout().lock();
    match command {
        DeliveriesCommand::List {
            sink,
            status,
            limit,
            json,
        } => {
            let query = DeliveryQuery {
                sink,
                status: status.map(DeliveryStatus::from),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            };
            let deliveries = store.deliveries(&query).await?;
            if json {
                for delivery in deliveries {
                    let line =
                        serde_json::to_string(&delivery).context("cannot encode a message")?;
                    writeln!(out, "{line}")?;
                }
            } else {
                write_table(&mut out, &deliveries)?;
            }
        }
        DeliveriesCommand::Retry { id, sink, .. } => {
            let selection = match id {
                Some(id) => DeliverySelection::One(id),
                None => DeliverySelection::All {
                    sink: sink.as_deref(),
                },
            };
            let retried = operate::retry_deliveries(&store, selection).await?;
            writeln!(
                out,
                "{retried} message(s) pending again; the running daemon sends them next"
            )?;
        }
        DeliveriesCommand::Skip { id } => {
            operate::skip_delivery(&store, id).await?;
            writeln!(out, "message {id} skipped")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_table(
    out: &mut impl Write,
    deliveries: &[eventhost_store::Delivery],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8} {:<20} {:<16} {:<9} {:>8} {:<19} {:<40} {:<BODY_SHOWN$} LAST ERROR",
        "ID", "SINK", "KEY", "STATUS", "ATTEMPTS", "CREATED AT", "MESSAGE", "BODY"
    )?;
    for delivery in deliveries {
        let body = BodyText(&delivery.message.body).to_string();
        let body: String = body
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(BODY_SHOWN)
            .collect();
        writeln!(
            out,
            "{:>8} {:<20} {:<16} {:<9} {:>8} {:<19} {:<40} {:<BODY_SHOWN$} {}",
            delivery.id,
            delivery.message.sink,
            delivery.message.key.as_deref().unwrap_or("-"),
            delivery.status,
            delivery.attempts,
            delivery.created_at.format("%Y-%m-%d %H:%M:%S"),
            delivery.message.id,
            body,
            delivery.last_error.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}
