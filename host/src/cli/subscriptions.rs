//! `eventhost subscriptions`: list subscriptions with their lag, reset one to a position.
//! Safe while the daemon runs: a reset moves the checkpoint the daemon's next commit checks,
//! so the batch in flight is dropped and the daemon resumes from the new checkpoint; an idle
//! subscription notices on its next empty read (the reset wakes PostgreSQL daemons; SQLite
//! daemons see it within their poll interval).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_store as store;

use crate::operate;

#[derive(Debug, clap::Subcommand)]
pub enum SubscriptionsCommand {
    /// Every subscription: name, plugin, position, lag (events), status, the daemon that runs
    /// it (PostgreSQL), progress, last error.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a subscription's checkpoint so it handles events again (or skips them).
    Reset {
        /// The subscription, `<plugin>.<subscription>` as `list` shows it.
        name: String,
        /// Resume after the event at this position (0: from the beginning).
        #[arg(long, value_name = "POSITION", default_value_t = 0, value_parser = super::stored_number())]
        to: u64,
        /// Also delete the subscription's state, to rebuild a projection from scratch.
        #[arg(long)]
        clear_state: bool,
    },
}

pub async fn run(database_url: &str, command: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    let store = store::connect(database_url).await?;
    let mut out = std::io::stdout().lock();
    match command {
        SubscriptionsCommand::List { json } => {
            let subscriptions = operate::subscriptions(&store).await?;
            let daemons = operate::daemons(&store).await?;
            if !json {
                writeln!(
                    out,
                    "{:<32} {:<20} {:>10} {:>10} {:>7} {:<10} {:<24} {:<24} LAST ERROR",
                    "NAME", "PLUGIN", "POSITION", "LAG", "PARKED", "STATUS", "OWNER", "PROGRESS"
                )?;
            }
            for view in subscriptions {
                if json {
                    let line =
                        serde_json::to_string(&view).context("cannot encode a subscription")?;
                    writeln!(out, "{line}")?;
                } else {
                    let subscription = &view.record;
                    let remark = match (&view.held_back_by, &subscription.last_error) {
                        (Some(writer), _) => held_back_by(writer),
                        (None, Some(error)) => error.clone(),
                        (None, None) => "-".to_owned(),
                    };
                    let owner = match subscription.owner {
                        None => "-".to_owned(),
                        Some(owner) => daemons
                            .iter()
                            .find(|daemon| daemon.id == owner)
                            .map(|daemon| format!("{} pid {}", daemon.host, daemon.pid))
                            .unwrap_or_else(|| owner.to_string()),
                    };
                    writeln!(
                        out,
                        "{:<32} {:<20} {:>10} {:>10} {:>7} {:<10} {:<24} {:<24} {remark}",
                        subscription.name,
                        subscription.plugin,
                        view.position,
                        view.lag,
                        view.parked,
                        subscription.status,
                        owner,
                        progress_summary(subscription.progress.as_ref()),
                    )?;
                }
            }
        }
        SubscriptionsCommand::Reset {
            name,
            to,
            clear_state,
        } => {
            let view = operate::reset(&store, &name, to, clear_state).await?;
            let cleared = if clear_state { ", state cleared" } else { "" };
            writeln!(
                out,
                "{name}: resumes after position {} ({} events to handle{cleared})",
                view.position, view.lag
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an operator needs to find and end the transaction that holds events back.
fn held_back_by(writer: &eventhost_store::Writer) -> String {
    let who = match (writer.kind.as_str(), writer.pid) {
        ("session", Some(pid)) => format!("session pid {pid}"),
        (kind, _) => format!(
            "{kind} {}",
            writer.application.as_deref().unwrap_or("(unknown)")
        ),
    };
    format!(
        "held back by {who} (database {}, user {}, {} for {:.0} s): it must end first",
        writer.database.as_deref().unwrap_or("?"),
        writer.user.as_deref().unwrap_or("?"),
        writer.state.as_deref().unwrap_or("open"),
        writer.age.as_secs_f64()
    )
}

fn progress_summary(progress: Option<&serde_json::Value>) -> String {
    let Some(progress) = progress else {
        return "-".into();
    };
    let rate = progress["events_per_second"].as_f64().unwrap_or(0.0);
    let summary = match progress["eta_seconds"].as_u64() {
        Some(eta) if progress["lag"].as_u64().unwrap_or(0) > 0 => {
            format!("{rate:.0} ev/s, eta {eta}s")
        }
        _ => format!("{rate:.0} ev/s"),
    };
    // A subscription gone idle reports no more: say how old the last report is.
    let age = progress["measured_at"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| operate::age_seconds(at.with_timezone(&chrono::Utc)));
    match age {
        Some(age) if age >= STALE_PROGRESS_SECONDS => {
            format!("{summary} ({} ago)", rough_duration(age))
        }
        _ => summary,
    }
}

/// How old a progress report may be before `subscriptions list` says its age: a busy
/// subscription reports every `--progress-interval` (default 10 s).
const STALE_PROGRESS_SECONDS: f64 = 60.0;

/// `age` in seconds as the largest whole unit: `90 s` is `1m`, `7200 s` is `2h`.
fn rough_duration(age: f64) -> String {
    let seconds = age as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::progress_summary;
    use serde_json::json;

    #[test]
    fn an_old_progress_report_says_its_age() {
        let now = chrono::Utc::now();
        let report = |seconds_ago: i64, lag: u64| {
            json!({
                "events_per_second": 5000.0,
                "lag": lag,
                "eta_seconds": 3,
                "measured_at": now - chrono::Duration::seconds(seconds_ago),
            })
        };
        assert_eq!(progress_summary(Some(&report(5, 100))), "5000 ev/s, eta 3s");
        assert_eq!(
            progress_summary(Some(&report(600, 0))),
            "5000 ev/s (10m ago)"
        );
        assert_eq!(
            progress_summary(Some(&report(7300, 0))),
            "5000 ev/s (2h ago)"
        );
        assert_eq!(progress_summary(None), "-");
    }
}
