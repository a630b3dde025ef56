//! Batch commits on PostgreSQL, by what the batch emitted: a policy's batch (one event to
//! each of many new streams, as shipping-policy emits a `shipment.requested` per paid order)
//! against a batch that emitted the same number of events to one new stream, in the same
//! run. A commit runs every emitted stream's append in one statement, so its cost should
//! follow the events, not the number of streams.
//!
//! `cargo run --release -p eventhost-bench --bin commit [-- --seconds N]` creates a
//! database of its own on DATABASE_URL's server, commits batches of each kind in
//! alternating slices for N seconds per kind and row, prints a table, and drops the database.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

use eventhost_bench::{BenchDatabase, Server, cells, header, thousands};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{
    BatchCommit, Checkpoint, Filter, PendingAppend, PgStore, StoreLimits, SubscriptionStore,
};

#[derive(Debug, Parser)]
#[command(about = "Batch commits: events emitted to many streams against one stream")]
struct Args {
    /// Seconds each kind of batch is committed per row, in alternating slices.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[command(flatten)]
    server: Server,
}

const SLICE: Duration = Duration::from_millis(500);
const SUBSCRIPTION: &str = "bench.commit";

/// One subscription, committed to over and over: each commit raises its revision and leaves
/// its checkpoint where it is (no events are read; only the commit is measured).
struct Committer {
    store: PgStore,
    revision: u64,
    streams: u64,
}

impl Committer {
    /// Commits one batch that emitted `events` events, one per new stream or all to one.
    async fn commit(&mut self, events: usize, one_stream: bool) -> Result<()> {
        let mut commit = BatchCommit::advance(
            SUBSCRIPTION,
            self.revision,
            Checkpoint::ORIGIN,
            Checkpoint::ORIGIN,
        );
        let event = |n: usize| NewEvent::new("shipment.requested", json!({ "order": n }));
        if one_stream {
            commit
                .appends
                .push(self.append((0..events).map(event).collect()));
        } else {
            for n in 0..events {
                let append = self.append(vec![event(n)]);
                commit.appends.push(append);
            }
        }
        self.store.commit_batch(&commit).await?;
        self.revision += 1;
        Ok(())
    }

    fn append(&mut self, events: Vec<NewEvent>) -> PendingAppend {
        self.streams += 1;
        PendingAppend {
            stream: StreamId::new("shipment", format!("s-{}", self.streams)),
            expected: ExpectedVersion::NoStream,
            events,
        }
    }

    /// Commits batches for one slice: the events committed, and the time it took.
    async fn slice(&mut self, events: usize, one_stream: bool) -> Result<(u64, Duration)> {
        let started = Instant::now();
        let mut committed = 0;
        while started.elapsed() < SLICE {
            self.commit(events, one_stream).await?;
            committed += events as u64;
        }
        Ok((committed, started.elapsed()))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let store = PgStore::connect(&database.url, StoreLimits::default())
        .await
        .context("open the store")?;
    let record = store
        .ensure_subscription(
            SUBSCRIPTION,
            "bench",
            &Filter::default(),
            Checkpoint::ORIGIN,
        )
        .await?;
    let mut committer = Committer {
        store: store.clone(),
        revision: record.revision,
        streams: 0,
    };
    println!(
        "Batch commits on PostgreSQL, {} s per kind and row\n",
        args.seconds
    );
    header(&[
        "events per batch",
        "to one stream, events/s",
        "one per stream, events/s",
        "ratio",
    ]);
    for events in [1, 10, 100] {
        committer.slice(events, true).await?;
        committer.slice(events, false).await?;
        let (mut one, mut many) = ((0, Duration::ZERO), (0, Duration::ZERO));
        let slices = (Duration::from_secs(args.seconds).as_millis() / SLICE.as_millis()).max(1);
        for _ in 0..slices {
            let (events_done, took) = committer.slice(events, true).await?;
            one = (one.0 + events_done, one.1 + took);
            let (events_done, took) = committer.slice(events, false).await?;
            many = (many.0 + events_done, many.1 + took);
        }
        let one = one.0 as f64 / one.1.as_secs_f64();
        let many = many.0 as f64 / many.1.as_secs_f64();
        cells(&[
            events.to_string(),
            thousands(one),
            thousands(many),
            format!("{:.2}x", many / one),
        ]);
    }
    store.close().await;
    database.drop_it().await?;
    Ok(())
}
