//! Filtered subscription reads: a subscription to 1% of a large log against the unfiltered
//! read of the same number of events, in the same run, through the store's `read_batch` as
//! the dispatcher calls it (batches of 100, from the start), on PostgreSQL and SQLite. Also:
//! the read of a filtered subscription with nothing left to read (what every wake-up of an
//! idle one costs), and its lag count.
//!
//! `cargo run --release -p eventhost-bench --bin filtered_read [-- --events N]` creates a
//! database of its own on DATABASE_URL's server and a SQLite file, fills each with N events
//! (1% `order.paid`), and prints a table.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::time::Instant;

use eventhost_bench::{BenchDatabase, Server, TempDir, cells, header, thousands};
use eventhost_store::{Checkpoint, EventStore, Filter, Store, SubscriptionStore};

#[derive(Debug, Parser)]
#[command(about = "A subscription to 1% of the log against the unfiltered read")]
struct Args {
    /// Events in the log; 1% of them are `order.paid`.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rounds of each measurement, alternating; the table shows their median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    server: Server,
}

const BATCH: usize = 100;

fn paid() -> Filter {
    Filter {
        event_types: vec!["order.paid".into()],
        ..Filter::default()
    }
}

/// Reads `filter`'s first `events` events from the start in batches, as a subscription
/// catching up does; the time taken.
async fn read(store: &Store, filter: &Filter, events: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut read = 0;
    while read < events {
        let batch = store.read_batch(checkpoint, filter, BATCH).await?;
        let last = batch.last().context("the log ended early")?;
        checkpoint = last.checkpoint;
        read += batch.len() as u64;
    }
    Ok(started.elapsed())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The log: `events` events in one statement, 1% of them `order.paid`.
async fn fill(store: &Store, events: u64) -> Result<()> {
    let events = i64::try_from(events)?;
    match store {
        Store::Postgres(store) => {
            sqlx::query(
                "INSERT INTO eventhost.events
                     (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload)
                 SELECT pg_current_xact_id(), gen_random_uuid(), 'order', 'o-' || g, 1,
                        CASE WHEN g % 100 = 0 THEN 'order.paid' ELSE 'order.line-added' END,
                        '{\"sku\": \"pen\", \"quantity\": 1}'
                 FROM generate_series(1, $1) AS g",
            )
            .bind(events)
            .execute(store.pool())
            .await?;
            sqlx::raw_sql("VACUUM ANALYZE eventhost.events")
                .execute(store.pool())
                .await?;
        }
        Store::Sqlite(_) => unreachable!("filled through its own connection"),
    }
    Ok(())
}

async fn fill_sqlite(url: &str, events: u64) -> Result<()> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
         INSERT INTO events
             (id, aggregate_type, aggregate_id, version, event_type, payload, recorded_at)
         SELECT printf('%08x-0000-4000-8000-%012x', n, n), 'order', 'o-' || n, 1,
                CASE WHEN n % 100 = 0 THEN 'order.paid' ELSE 'order.line-added' END,
                '{\"sku\": \"pen\", \"quantity\": 1}', '2026-12-07T00:00:00Z'
         FROM g",
    )
    .bind(i64::try_from(events)?)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("ANALYZE").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    eventhost_bench::init_logs();
    let postgres = BenchDatabase::create(&args.server.database_url).await?;
    let dir = TempDir::new("bench-filtered-read")?;
    let sqlite_url = format!("sqlite://{}", dir.0.join("events.db").display());
    let matching = args.events / 100;
    println!(
        "A subscription to 1% of {} events against the unfiltered read of as many, batches of {BATCH}, median of {} rounds\n",
        thousands(args.events as f64),
        args.rounds
    );
    header(&[
        "store",
        "unfiltered, events/s",
        "1% filtered, events/s",
        "filtered / unfiltered",
        "idle filtered read, ms",
        "lag count of 1%, ms",
    ]);
    for (name, url) in [("PostgreSQL", postgres.url.clone()), ("SQLite", sqlite_url)] {
        let store = eventhost_store::connect(&url).await?;
        match &store {
            Store::Postgres(_) => fill(&store, args.events).await?,
            Store::Sqlite(_) => fill_sqlite(&url, args.events).await?,
        }
        let (mut unfiltered, mut filtered) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            unfiltered.push(read(&store, &Filter::default(), matching).await?);
            filtered.push(read(&store, &paid(), matching).await?);
        }
        let (unfiltered, filtered) = (median(unfiltered), median(filtered));

        // An idle subscription to a type the log does not have: what each wake-up reads.
        let absent = Filter {
            event_types: vec!["order.refunded".into()],
            ..Filter::default()
        };
        let mut idle = Vec::new();
        for _ in 0..args.rounds * 10 {
            let started = Instant::now();
            let batch = store.read_batch(Checkpoint::ORIGIN, &absent, BATCH).await?;
            anyhow::ensure!(batch.is_empty(), "no event has the absent type");
            idle.push(started.elapsed());
        }

        store
            .ensure_subscription("bench.paid", "bench", &paid(), Checkpoint::ORIGIN)
            .await?;
        let mut lag = Vec::new();
        for _ in 0..args.rounds {
            let started = Instant::now();
            let counted = store.lag("bench.paid").await?;
            lag.push(started.elapsed());
            anyhow::ensure!(counted == matching, "lag {counted}, expected {matching}");
        }

        let rate = |time: Duration| matching as f64 / time.as_secs_f64();
        cells(&[
            name.to_owned(),
            thousands(rate(unfiltered)),
            thousands(rate(filtered)),
            format!("{:.2}x", rate(filtered) / rate(unfiltered)),
            format!("{:.2}", median(idle).as_secs_f64() * 1e3),
            format!("{:.1}", median(lag).as_secs_f64() * 1e3),
        ]);
        store.close().await;
    }
    postgres.drop_it().await?;
    Ok(())
}
