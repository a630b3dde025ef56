//! `eventhost test`: run a plugin against JSONL events with no database and print what it did.
//!
//! Uses the harness (the daemon's runtime over an in-memory store, fuel instead of time). The
//! report is JSON on stdout. With `--expect`, the report is checked against an expectations
//! file (format: [`eventhost_harness::Expectations`]) and every difference is listed on stderr
//! with exit code 1. Without it, the exit code is 1 when the plugin failed on any event.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use eventhost_harness::{self as harness, Expectations, Report};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin's `.wasm` file.
    plugin: PathBuf,
    /// Events to append first, one JSON object per line (the `append` input shape).
    #[arg(long)]
    events: PathBuf,
    /// Expectations to check: {"state": {SUBSCRIPTION: {KEY: VALUE}}, "emitted": [...],
    /// "messages": [...], "errors": [...]}.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Where compiled artifacts are cached [default: the user's cache folder, e.g.
    /// ~/.cache/eventhost]
    #[arg(long, value_name = "DIR", env = "EVENTHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Shadows the global `--database-url`, which `test` has no use for: hidden from its
    /// help (the command line refuses it when given).
    #[arg(long, hide = true)]
    database_url: Option<String>,
}

pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let fixture = read(&args.events)?;
    let fixture = harness::read_event_lines(fixture.as_bytes())
        .with_context(|| format!("in {}", args.events.display()))?;
    let expectations = args.expect.as_ref().map(read_expectations).transpose()?;
    let cache_dir = args.cache_dir.unwrap_or_else(super::user_cache_dir);
    let runtime = harness::deterministic_runtime(Some(cache_dir))?;
    let mut harness = harness::load(&runtime, &args.plugin).await?;
    harness.append_fixture(&fixture)?;
    harness.run().await?;
    let report = Report::of(&harness);
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&report)?
    )
    .context("cannot write to stdout")?;
    Ok(verdict(&report, expectations.as_ref()))
}

fn verdict(report: &Report, expectations: Option<&Expectations>) -> ExitCode {
    let Some(expectations) = expectations else {
        if report.errors.is_empty() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "the plugin failed on {} event(s); see \"errors\" above",
            report.errors.len()
        );
        return ExitCode::FAILURE;
    };
    let differences = expectations.differences(report);
    if differences.is_empty() {
        eprintln!("expectations met");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "expectations not met ({} difference(s)):",
        differences.len()
    );
    for difference in &differences {
        eprintln!("  - {difference}");
    }
    ExitCode::FAILURE
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_expectations(path: &PathBuf) -> anyhow::Result<Expectations> {
    let text = read(path)?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid expectations file", path.display()))
}
