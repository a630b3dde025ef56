//! `eventhost parked`: the events subscriptions set aside because they kept failing.
//! Replaying marks them; the running daemon handles them between batches, and a success
//! commits the effects and removes the entry in one transaction.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_store::{self as store, ParkedSelection};

use crate::operate;

#[derive(Debug, clap::Subcommand)]
pub enum ParkedCommand {
    /// Parked events, oldest first.
    List {
        /// Only this subscription's.
        subscription: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon to handle parked events again (after deploying a fixed plugin).
    Replay {
        /// The parked entry's id, as `list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every parked event (of `--subscription`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this subscription's parked events (`<plugin>.<subscription>`).
        #[arg(long, requires = "all")]
        subscription: Option<String>,
    },
    /// Drop a parked event for good, without handling it.
    Skip {
        /// The parked entry's id, as `list` shows it.
        id: i64,
    },
}

pub async fn run(database_url: &str, command: ParkedCommand) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut out = std::io::stdout().lock();
    match command {
        ParkedCommand::List { subscription, json } => {
            let parked = operate::parked(&store, subscription.as_deref()).await?;
            if !json {
                writeln!(
                    out,
                    "{:>6} {:<32} {:>10} {:<36} {:>8} {:<7} ERROR",
                    "ID", "SUBSCRIPTION", "POSITION", "EVENT", "ATTEMPTS", "REPLAY"
                )?;
            }
            for entry in parked {
                if json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&entry).context("cannot encode a parked event")?
                    )?;
                } else {
                    let replay = if entry.replay_requested {
                        "pending"
                    } else {
                        "-"
                    };
                    writeln!(
                        out,
                        "{:>6} {:<32} {:>10} {:<36} {:>8} {:<7} {}",
                        entry.id,
                        entry.subscription,
                        entry.position,
                        entry.event_id,
                        entry.attempts,
                        replay,
                        entry.error
                    )?;
                }
            }
        }
        ParkedCommand::Replay {
            id, subscription, ..
        } => {
            let selection = match id {
                Some(id) => ParkedSelection::One(id),
                None => ParkedSelection::AllOf(subscription.as_deref()),
            };
            let marked = operate::replay_parked(&store, selection).await?;
            writeln!(
                out,
                "{marked} parked event(s) marked for replay; the running daemon handles them next"
            )?;
        }
        ParkedCommand::Skip { id } => {
            operate::skip_parked(&store, id).await?;
            writeln!(out, "parked event {id} skipped")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
