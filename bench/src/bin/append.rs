//! Append throughput: `PgStore::append` against plain INSERTs of the same rows into a table
//! of the same shape, side by side in one run (docs/architecture.md, figures we aim for).
//!
//! `cargo run --release -p eventhost-bench --bin append [-- --seconds N]` creates a database
//! of its own on DATABASE_URL's server, measures each scenario for N seconds after a short
//! warm-up, on fresh tables and with equal connection pools, prints a table, and drops it.
//! A third column calls the SQL function `eventhost.append()` (the outbox way in, which
//! notifies inside the transaction) in autocommit, for comparison.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use eventhost_bench::{BenchDatabase, Server, thousands};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{EventStore, PgStore, StoreLimits};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Append throughput: eventhost against raw SQL INSERTs")]
struct Args {
    /// Seconds each measurement runs, after a warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[command(flatten)]
    server: Server,
    /// Commit without waiting for the WAL flush, on every side: shows the CPU cost of each
    /// way in once the disk is out of the picture (a diagnostic, not the target figure).
    #[arg(long)]
    no_flush_wait: bool,
}

const WARM_UP: Duration = Duration::from_secs(1);
/// Sides take turns in slices of this length.
const SLICE: Duration = Duration::from_millis(500);
/// Both sides get pools of this size, whatever the number of writers.
const POOL_SIZE: u32 = 16;
const AGGREGATE_TYPE: &str = "order";
const EVENT_TYPE: &str = "order.line-added";
/// Events per stream in the one-event-per-transaction scenarios.
const STREAM_LENGTH: u64 = 10;

/// One row of the printed table.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    events_per_tx: u64,
    writers: usize,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        events_per_tx: 1,
        writers: 1,
    },
    Scenario {
        events_per_tx: 1,
        writers: 4,
    },
    Scenario {
        events_per_tx: 100,
        writers: 1,
    },
    Scenario {
        events_per_tx: 100,
        writers: 4,
    },
];

impl Scenario {
    fn name(&self) -> String {
        let events = match self.events_per_tx {
            1 => "1 event/tx".to_owned(),
            n => format!("{n} events/tx"),
        };
        let writers = match self.writers {
            1 => "1 writer".to_owned(),
            n => format!("{n} writers"),
        };
        format!("{events}, {writers}")
    }

    /// What docs/architecture.md asks of eventhost in this scenario.
    fn target(&self, raw: f64, eventhost: f64) -> (&'static str, bool) {
        if self.events_per_tx == 1 {
            (">= 0.85x raw", eventhost >= 0.85 * raw)
        } else {
            (">= 100,000 ev/s", eventhost >= 100_000.0)
        }
    }
}

/// The plain table the baseline fills: eventhost.events' columns and unique constraints.
const RAW_TABLE: &str = "
    CREATE TABLE raw_events (
        position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id             uuid        NOT NULL UNIQUE,
        aggregate_type text        NOT NULL,
        aggregate_id   text        NOT NULL,
        version        bigint      NOT NULL,
        event_type     text        NOT NULL,
        payload        jsonb       NOT NULL,
        metadata       jsonb       NOT NULL DEFAULT '{}',
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (aggregate_type, aggregate_id, version)
    )";

const RAW_INSERT_ONE: &str = "
    INSERT INTO raw_events (id, aggregate_type, aggregate_id, version, event_type, payload, metadata)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)";

const RAW_INSERT_MANY: &str = "
    INSERT INTO raw_events (id, aggregate_type, aggregate_id, version, event_type, payload, metadata)
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                         $6::text[]::jsonb[], $7::text[]::jsonb[])";

/// A ~200-byte JSON object, the same for every event on both sides.
fn payload() -> Value {
    json!({
        "order_id": "6f1c2a0e-8b7d-4c55-9e4b-2f0d7c9a1b3e",
        "line": 3,
        "sku": "SKU-00042-BLUE-XL",
        "quantity": 2,
        "unit_price": { "amount": "19.99", "currency": "EUR" },
        "customer": { "id": "c-981273", "tier": "gold" },
        "note": "leave at the door"
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = BenchDatabase::create(&args.server.database_url).await?;
    let mut url = server.url.clone();
    if args.no_flush_wait {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("options=-c%20synchronous_commit%3Doff");
    }
    let outcome = run(&args, &url).await;
    server.drop_it().await?;
    let rows = outcome?;
    print_table(&args, &rows);
    Ok(())
}

/// A measured scenario.
struct Row {
    scenario: Scenario,
    raw: f64,
    eventhost: f64,
    sql_function: f64,
}

async fn run(args: &Args, url: &str) -> Result<Vec<Row>> {
    let duration = Duration::from_secs(args.seconds);
    let store = PgStore::connect(url, StoreLimits::default())
        .await
        .context("connect PgStore")?;
    let raw = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await
        .context("connect the raw SQL pool")?;
    let sql = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await
        .context("connect the SQL function's pool")?;
    sqlx::query(RAW_TABLE)
        .execute(&raw)
        .await
        .context("create raw_events")?;
    println!(
        "payload {} bytes; pools of {POOL_SIZE} connections; per scenario and side: {WARM_UP:?} \
         warm-up, then {duration:?} in {SLICE:?} slices taking turns with the other sides",
        payload().to_string().len()
    );

    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        fresh_tables(&raw).await?;
        let sides = vec![
            team(scenario, |id| Writer::new(Sink::Raw(raw.clone()), id)),
            team(scenario, |id| Writer::new(Sink::Store(store.clone()), id)),
            team(scenario, |id| {
                Writer::new(Sink::SqlFunction(sql.clone()), id)
            }),
        ];
        let rates = measure(scenario, duration, sides).await?;
        println!(
            "  {:<24} raw {:>9.0} ev/s   eventhost {:>9.0} ev/s   eventhost.append() {:>9.0} ev/s",
            scenario.name(),
            rates[0],
            rates[1],
            rates[2],
        );
        rows.push(Row {
            scenario,
            raw: rates[0],
            eventhost: rates[1],
            sql_function: rates[2],
        });
    }
    raw.close().await;
    sql.close().await;
    store.pool().close().await;
    Ok(rows)
}

/// Empties every table so each scenario starts from the same state, and flushes the
/// previous scenario's writes so its checkpoint does not land in the next one.
async fn fresh_tables(pool: &PgPool) -> Result<()> {
    sqlx::query("TRUNCATE raw_events, eventhost.events, eventhost.streams RESTART IDENTITY")
        .execute(pool)
        .await
        .context("truncate the tables")?;
    // CHECKPOINT needs the pg_checkpoint role; without it, measurements are only noisier.
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
    Ok(())
}

fn team(scenario: Scenario, make: impl Fn(usize) -> Writer) -> Vec<Writer> {
    (0..scenario.writers).map(make).collect()
}

/// Runs each side's writers through a warm-up, then for `duration` in slices, the sides
/// taking turns (so a noisy neighbour or a slow disk moment hits all sides alike); returns
/// each side's events/s.
async fn measure(
    scenario: Scenario,
    duration: Duration,
    mut sides: Vec<Vec<Writer>>,
) -> Result<Vec<f64>> {
    for side in &mut sides {
        *side = run_phase(std::mem::take(side), scenario, WARM_UP).await?.0;
    }
    let slices = (duration.as_secs_f64() / SLICE.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut events = vec![0u64; sides.len()];
    let mut elapsed = vec![Duration::ZERO; sides.len()];
    for round in 0..slices {
        for turn in 0..sides.len() {
            let side = (round + turn) % sides.len();
            let writers = std::mem::take(&mut sides[side]);
            let (writers, count, took) = run_phase(writers, scenario, SLICE).await?;
            sides[side] = writers;
            events[side] += count;
            elapsed[side] += took;
        }
    }
    Ok(events
        .iter()
        .zip(&elapsed)
        .map(|(events, elapsed)| *events as f64 / elapsed.as_secs_f64())
        .collect())
}

/// Lets every writer append until `duration` has passed; returns them (to continue their
/// streams), the events appended in all, and the time it took.
async fn run_phase(
    writers: Vec<Writer>,
    scenario: Scenario,
    duration: Duration,
) -> Result<(Vec<Writer>, u64, Duration)> {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut writer| {
            tokio::spawn(async move {
                let mut events = 0;
                while Instant::now() < end {
                    events += writer.append(scenario.events_per_tx).await?;
                }
                anyhow::Ok((writer, events))
            })
        })
        .collect();
    let mut writers = Vec::new();
    let mut total = 0;
    for task in tasks {
        let (writer, events) = task.await.context("a writer panicked")??;
        writers.push(writer);
        total += events;
    }
    Ok((writers, total, start.elapsed()))
}

/// Where appends go.
enum Sink {
    Raw(PgPool),
    Store(PgStore),
    SqlFunction(PgPool),
}

impl Sink {
    /// Starts the names of this side's streams: the store and the SQL function share tables.
    fn prefix(&self) -> &'static str {
        match self {
            Sink::Raw(_) => "raw",
            Sink::Store(_) => "store",
            Sink::SqlFunction(_) => "sql",
        }
    }
}

/// One writer: appends to streams of its own, so writers never conflict.
struct Writer {
    sink: Sink,
    id: usize,
    payload: Arc<Value>,
    appends: u64,
}

impl Writer {
    fn new(sink: Sink, id: usize) -> Self {
        Self {
            sink,
            id,
            payload: Arc::new(payload()),
            appends: 0,
        }
    }

    /// Appends one transaction of `count` events; returns `count`.
    async fn append(&mut self, count: u64) -> Result<u64> {
        // One-event transactions fill streams of STREAM_LENGTH; bigger ones start a stream each.
        let per_stream = if count == 1 { STREAM_LENGTH } else { count };
        let first = self.appends * count;
        let stream = StreamId::new(
            AGGREGATE_TYPE,
            format!("{}{}-{}", self.sink.prefix(), self.id, first / per_stream),
        );
        let version_before = first % per_stream;
        self.appends += 1;
        match &self.sink {
            Sink::Raw(pool) if count == 1 => {
                raw_insert_one(pool, &stream, version_before + 1, &self.payload).await?
            }
            Sink::Raw(pool) => raw_insert_many(pool, &stream, count, &self.payload).await?,
            Sink::Store(store) => {
                store_append(store, &stream, version_before, count, &self.payload).await?
            }
            Sink::SqlFunction(pool) => {
                sql_function_append(pool, &stream, version_before, count, &self.payload).await?
            }
        }
        Ok(count)
    }
}

async fn raw_insert_one(
    pool: &PgPool,
    stream: &StreamId,
    version: u64,
    payload: &Value,
) -> Result<()> {
    sqlx::query(RAW_INSERT_ONE)
        .bind(Uuid::now_v7())
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(version as i64)
        .bind(EVENT_TYPE)
        .bind(payload.to_string())
        .bind("{}")
        .execute(pool)
        .await
        .context("raw INSERT")?;
    Ok(())
}

async fn raw_insert_many(
    pool: &PgPool,
    stream: &StreamId,
    count: u64,
    payload: &Value,
) -> Result<()> {
    let n = count as usize;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let versions: Vec<i64> = (1..=count as i64).collect();
    let payloads: Vec<String> = (0..n).map(|_| payload.to_string()).collect();
    sqlx::query(RAW_INSERT_MANY)
        .bind(ids)
        .bind(vec![stream.aggregate_type.as_str(); n])
        .bind(vec![stream.aggregate_id.as_str(); n])
        .bind(versions)
        .bind(vec![EVENT_TYPE; n])
        .bind(payloads)
        .bind(vec!["{}"; n])
        .execute(pool)
        .await
        .context("raw multi-row INSERT")?;
    Ok(())
}

async fn store_append(
    store: &PgStore,
    stream: &StreamId,
    version_before: u64,
    count: u64,
    payload: &Value,
) -> Result<()> {
    let expected = match version_before {
        0 => ExpectedVersion::NoStream,
        version => ExpectedVersion::Exact(version),
    };
    let events: Vec<NewEvent> = (0..count)
        .map(|_| NewEvent::new(EVENT_TYPE, payload.clone()))
        .collect();
    store
        .append(stream, expected, &events)
        .await
        .context("PgStore::append")?;
    Ok(())
}

/// `SELECT ... FROM eventhost.append(...)` in autocommit, as an application would call it.
async fn sql_function_append(
    pool: &PgPool,
    stream: &StreamId,
    version_before: u64,
    count: u64,
    payload: &Value,
) -> Result<()> {
    let events: Vec<Value> = (0..count)
        .map(|_| json!({ "id": Uuid::now_v7(), "event_type": EVENT_TYPE, "payload": payload }))
        .collect();
    sqlx::query("SELECT count(*) FROM eventhost.append($1, $2, $3, $4::text::jsonb)")
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(version_before as i64)
        .bind(Value::Array(events).to_string())
        .execute(pool)
        .await
        .context("SELECT eventhost.append()")?;
    Ok(())
}

fn print_table(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "append throughput, {} s per measurement{} (eventhost = PgStore::append; \
         the last column is the SQL function eventhost.append() in autocommit)",
        args.seconds,
        if args.no_flush_wait {
            ", synchronous_commit=off"
        } else {
            ""
        }
    );
    println!(
        "| {:<24} | {:>12} | {:>14} | {:>6} | {:<15} | {:<3} | {:>24} |",
        "scenario",
        "raw SQL ev/s",
        "eventhost ev/s",
        "ratio",
        "target",
        "met",
        "eventhost.append() ev/s"
    );
    println!(
        "|{:-<26}|{:->14}|{:->16}|{:->8}|{:-<17}|{:-<5}|{:->26}|",
        "", "", "", "", "", "", ""
    );
    for row in rows {
        let (target, met) = row.scenario.target(row.raw, row.eventhost);
        println!(
            "| {:<24} | {:>12} | {:>14} | {:>5.2}x | {:<15} | {:<3} | {:>24} |",
            row.scenario.name(),
            thousands(row.raw),
            thousands(row.eventhost),
            row.eventhost / row.raw,
            target,
            if met { "yes" } else { "no" },
            format!(
                "{} ({:.2}x)",
                thousands(row.sql_function),
                row.sql_function / row.raw
            ),
        );
    }
}
