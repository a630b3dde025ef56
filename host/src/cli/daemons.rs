//! `eventhost daemons`: the daemons running on a PostgreSQL database and the subscriptions
//! each runs (see `docs/operator.md`, "Several daemons").

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_store::{self as store, Store};

use crate::operate;

#[derive(Debug, clap::Subcommand)]
pub enum DaemonsCommand {
    /// Every live daemon: id, host, process id, version, when it started, the subscriptions
    /// it runs, and its plugins with their versions.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(database_url: &str, command: DaemonsCommand) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut out = std::io::stdout().lock();
    match command {
        DaemonsCommand::List { json } => {
            if let Store::Sqlite(_) = store {
                anyhow::bail!(
                    "a SQLite database runs one daemon at most (its lock file, `<database>.lock`, names it): several daemons need PostgreSQL"
                );
            }
            let daemons = operate::daemons(&store).await?;
            if !json {
                writeln!(
                    out,
                    "{:<36} {:<20} {:>8} {:<10} {:<20} SUBSCRIPTIONS / PLUGINS",
                    "ID", "HOST", "PID", "VERSION", "STARTED"
                )?;
            }
            for daemon in daemons {
                if json {
                    let line = serde_json::to_string(&daemon).context("cannot encode a daemon")?;
                    writeln!(out, "{line}")?;
                } else {
                    let runs = if daemon.subscriptions.is_empty() {
                        "-".to_owned()
                    } else {
                        format!(
                            "{} ({})",
                            daemon.subscriptions.len(),
                            daemon.subscriptions.join(", ")
                        )
                    };
                    let plugins = daemon
                        .plugins
                        .iter()
                        .map(|(name, label)| format!("{name} {label}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    writeln!(
                        out,
                        "{:<36} {:<20} {:>8} {:<10} {:<20} {runs} / {plugins}",
                        daemon.id,
                        daemon.host,
                        daemon.pid,
                        daemon.version,
                        daemon.started_at.format("%Y-%m-%d %H:%M:%S"),
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
