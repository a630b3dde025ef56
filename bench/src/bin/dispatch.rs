//! The dispatcher end to end: catch-up throughput from a backlog and commit-to-handler
//! latency, through `eventhost_dispatch::run` on PostgreSQL, for the counter plugin
//! (WebAssembly) and for the same counter in native Rust, side by side in one run
//! (docs/architecture.md, figures we aim for).
//!
//! `cargo run --release -p eventhost-bench --bin dispatch [-- --events N --seconds S]`
//! creates a database of its own on DATABASE_URL's server, appends a backlog of N events,
//! lets each handler's subscription catch up from the origin, times where a batch's time
//! goes (read, handle, commit), then appends single events at a steady rate for S seconds
//! to each caught-up handler, prints the tables beside the targets, and drops the
//! database. The counter component is `dist/plugins/counter.wasm`
//! (`bash scripts/build-plugins.sh`); `--wasm` points elsewhere.
//!
//! Both handlers run alone, one after the other, on the same backlog: a [`Probe`] around
//! each records when every batch finished, so the dispatcher itself is not modified.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use eventhost_bench::{
    BatchDone, BenchDatabase, Dispatcher, Probe, Server, cells, header, init_logs, millis,
    settle_backlog, target_dir, thousands, wait_for_checkpoint,
};
use eventhost_dispatch::plugins::{SinkNames, load_plugin};
use eventhost_dispatch::{Handler, StoreReads};
use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};
use eventhost_runtime::{
    Effects, FileRules, HandleError, PluginInfo, Reads, Runtime, RuntimeConfig, StartFrom,
    SubscriptionSpec,
};
use eventhost_store::{
    BatchCommit, Checkpoint, EventStore, Filter, PgStore, Store, StoreLimits, SubscriptionStore,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Dispatch throughput and latency: the WASM counter against a native one")]
struct Args {
    /// Events in the backlog each subscription catches up on.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Seconds of steady single-event appends in each latency measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Single-event appends per second in the latency measurement.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Batches timed step by step in the breakdown of a batch's time.
    #[arg(long, default_value_t = 100)]
    breakdown_batches: usize,
    /// The counter component (default: dist/plugins/counter.wasm in the workspace).
    #[arg(long)]
    wasm: Option<PathBuf>,
    #[command(flatten)]
    server: Server,
}

/// Concurrent writers filling the backlog.
const BACKLOG_WRITERS: u64 = 4;
/// Events per `PgStore::append` while filling the backlog (each call starts a stream).
const EVENTS_PER_APPEND: u64 = 1000;
const AGGREGATE_TYPES: [&str; 4] = ["order", "customer", "shipment", "invoice"];
const EVENT_TYPES: [&str; 4] = ["created", "line-added", "updated", "closed"];
/// The native counter's name: its subscription is `native-counter.all`.
const NATIVE_NAME: &str = "native-counter";
/// The longest a catch-up may take before the run is declared stuck.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(3600);
/// How long latency events may take to reach the handler before the run is declared stuck.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Tenths of the backlog whose rates show whether catch-up stays flat.
const SLICES: u64 = 10;
/// "Flat as the backlog grows": the last tenth's rate within this fraction of the first's,
/// either way (a rate that climbs as the subscription nears the head means each read costs
/// in proportion to what is left to read).
const FLAT: f64 = 0.1;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    init_logs();
    let args = Args::parse();
    ensure!(args.events >= SLICES, "--events must be at least {SLICES}");
    ensure!(args.rate > 0, "--rate must be positive");
    let handlers = Handlers::load(&args).await?;
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = run(&args, &database.url, &handlers).await;
    database.drop_it().await?;
    let report = outcome?;
    report.print(&args);
    Ok(())
}

/// The two handlers under test.
struct Handlers {
    wasm: Arc<dyn Handler>,
    native: Arc<dyn Handler>,
}

impl Handlers {
    async fn load(args: &Args) -> Result<Self> {
        let target = target_dir()?;
        let path = match &args.wasm {
            Some(path) => path.clone(),
            None => default_wasm(&target)?,
        };
        let runtime = Runtime::new(RuntimeConfig::daemon(target.join("bench-dispatch-cache")))
            .context("start the runtime")?;
        let wasm = load_plugin(
            &runtime,
            &path,
            FileRules::default(),
            StoreLimits::default(),
            &SinkNames::new(),
        )
        .await
        .with_context(|| format!("load {}", path.display()))?;
        println!(
            "wasm: {} (plugin {} {})",
            path.display(),
            wasm.handler.info().name,
            wasm.handler.info().version
        );
        Ok(Self {
            wasm: wasm.handler,
            native: Arc::new(NativeCounter::new()),
        })
    }
}

/// Everything measured, for the printed tables.
struct Report {
    backlog: Backlog,
    wasm: Measured,
    native: Measured,
}

struct Measured {
    catch_up: CatchUp,
    breakdown: Breakdown,
    latency: Latency,
}

async fn run(args: &Args, url: &str, handlers: &Handlers) -> Result<Report> {
    let store = PgStore::connect(url, StoreLimits::default())
        .await
        .context("connect PgStore")?;
    let backlog = append_backlog(&store, args.events).await?;
    println!(
        "backlog: {} events appended in {:.1} s ({} ev/s, {BACKLOG_WRITERS} writers, {EVENTS_PER_APPEND} events per append), vacuumed and read once",
        thousands(backlog.events as f64),
        backlog.elapsed.as_secs_f64(),
        thousands(backlog.events as f64 / backlog.elapsed.as_secs_f64()),
    );
    let wasm_catch_up = catch_up(&store, &handlers.wasm, &backlog).await?;
    let native_catch_up = catch_up(&store, &handlers.native, &backlog).await?;
    let wasm_breakdown = breakdown(&store, &handlers.wasm, args.breakdown_batches).await?;
    let native_breakdown = breakdown(&store, &handlers.native, args.breakdown_batches).await?;
    let wasm_latency = latency(&store, &handlers.wasm, args).await?;
    let native_latency = latency(&store, &handlers.native, args).await?;
    store.pool().close().await;
    Ok(Report {
        backlog,
        wasm: Measured {
            catch_up: wasm_catch_up,
            breakdown: wasm_breakdown,
            latency: wasm_latency,
        },
        native: Measured {
            catch_up: native_catch_up,
            breakdown: native_breakdown,
            latency: native_latency,
        },
    })
}

// ---------------------------------------------------------------------------------------
// The handlers

/// The counter plugin's work in native Rust: one `PluginInfo` of the same shape
/// (subscription `all`, batches of 1000, from the beginning), one state read of `count`
/// through the dispatcher's `Reads`, one state write of `count + batch.len()`.
struct NativeCounter {
    info: PluginInfo,
}

impl NativeCounter {
    fn new() -> Self {
        let all = SubscriptionSpec {
            name: "all".to_owned(),
            aggregate_types: Vec::new(),
            event_types: Vec::new(),
            batch_size: 1000,
            start_from: StartFrom::Beginning,
        };
        Self {
            info: PluginInfo {
                name: NATIVE_NAME.to_owned(),
                version: "1.0.0".to_owned(),
                subscriptions: vec![all],
            },
        }
    }

    async fn count(
        &self,
        subscription: &str,
        batch: &[Event],
        reads: Arc<dyn Reads>,
    ) -> Result<Effects, HandleError> {
        let namespace = format!("{}.{subscription}", self.info.name);
        let host = |message: String| HandleError::Host { message };
        let count: u64 = match reads
            .state_get(&namespace, "count")
            .await
            .map_err(|error| host(error.to_string()))?
        {
            Some(value) => serde_json::from_str(&value).map_err(|error| host(error.to_string()))?,
            None => 0,
        };
        let mut effects = Effects::default();
        let value = serde_json::to_string(&(count + batch.len() as u64))
            .map_err(|error| host(error.to_string()))?;
        effects.state.insert("count".to_owned(), Some(value));
        Ok(effects)
    }
}

impl Handler for NativeCounter {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        self.count(subscription, batch, reads).boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The backlog

/// The events every subscription starts from.
struct Backlog {
    events: u64,
    elapsed: Duration,
}

/// A ~200-byte JSON object, varied a little per event.
fn payload(call: u64, index: u64) -> Value {
    json!({
        "order_id": format!("o-{call}"),
        "line": index,
        "sku": "SKU-00042-BLUE-XL",
        "quantity": 2,
        "unit_price": { "amount": "19.99", "currency": "EUR" },
        "customer": { "id": "c-981273", "tier": "gold" },
        "note": "leave at the door"
    })
}

/// Appends `total` events, `EVENTS_PER_APPEND` per call, each call a new stream of one of
/// a few aggregate types, from `BACKLOG_WRITERS` concurrent writers; then vacuums, so the
/// first reader does not pay for setting hint bits, and reads the table once, so both
/// handlers find it equally cached.
async fn append_backlog(store: &PgStore, total: u64) -> Result<Backlog> {
    let calls = total.div_ceil(EVENTS_PER_APPEND);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..BACKLOG_WRITERS)
        .map(|_| {
            let store = store.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let call = next.fetch_add(1, Ordering::Relaxed);
                    if call >= calls {
                        return anyhow::Ok(());
                    }
                    let count = EVENTS_PER_APPEND.min(total - call * EVENTS_PER_APPEND);
                    append_call(&store, call, count).await?;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.context("a backlog writer panicked")??;
    }
    let elapsed = started.elapsed();
    settle_backlog(store, total).await?;
    Ok(Backlog {
        events: total,
        elapsed,
    })
}

async fn append_call(store: &PgStore, call: u64, count: u64) -> Result<()> {
    let kind = (call % AGGREGATE_TYPES.len() as u64) as usize;
    let stream = StreamId::new(AGGREGATE_TYPES[kind], format!("b-{call}"));
    let events: Vec<NewEvent> = (0..count)
        .map(|index| {
            let event_type = EVENT_TYPES[(index % EVENT_TYPES.len() as u64) as usize];
            NewEvent::new(
                format!("{}.{event_type}", AGGREGATE_TYPES[kind]),
                payload(call, index),
            )
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, &events)
        .await
        .context("PgStore::append")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Catch-up

/// One handler's catch-up from the origin over the whole backlog.
struct CatchUp {
    elapsed: Duration,
    events: u64,
    /// Events/s over each tenth of the backlog, by when the handler finished its batches.
    slices: Vec<f64>,
    /// Summed time inside the handler.
    handling: Duration,
}

impl CatchUp {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// The last tenth's rate over the first's.
    fn flatness(&self) -> f64 {
        self.slices[self.slices.len() - 1] / self.slices[0]
    }

    fn is_flat(&self) -> bool {
        (self.flatness() - 1.0).abs() <= FLAT
    }
}

/// Starts the dispatcher with `handler` alone, measures from then until its checkpoint is
/// the store's head, stops it, and checks the count is the backlog, exactly.
async fn catch_up(
    store: &PgStore,
    handler: &Arc<dyn Handler>,
    backlog: &Backlog,
) -> Result<CatchUp> {
    let probe = Probe::new(Arc::clone(handler), false);
    let name = probe.subscription();
    let head = store.head().await?;
    println!(
        "catch-up: {name} from the origin over {} events...",
        thousands(backlog.events as f64)
    );
    let mut handled = probe.handled();
    let started = Instant::now();
    let dispatcher = Dispatcher::start(store, probe.clone(), None);
    tokio::time::timeout(
        CATCH_UP_LIMIT,
        handled.wait_for(|handled| *handled >= backlog.events),
    )
    .await
    .context("catch-up took too long")??;
    wait_for_checkpoint(store, &name, head, CATCH_UP_LIMIT).await?;
    let elapsed = started.elapsed();
    dispatcher.stop().await?;

    let count = committed_count(store, &name).await?;
    ensure!(
        count == backlog.events,
        "{name} counted {count} events, the backlog holds {}",
        backlog.events
    );
    let batches = probe.batches();
    let catch_up = CatchUp {
        elapsed,
        events: backlog.events,
        slices: slice_rates(started, &batches, backlog.events),
        handling: batches.iter().map(|batch| batch.handle).sum(),
    };
    println!(
        "  {:.2} s, {} ev/s, count {} (exact)",
        elapsed.as_secs_f64(),
        thousands(catch_up.rate()),
        thousands(count as f64)
    );
    Ok(catch_up)
}

/// The committed value of the counter's `count`.
async fn committed_count(store: &PgStore, name: &str) -> Result<u64> {
    let value = store.state_get(name, "count").await?;
    match value {
        Some(value) => Ok(value.parse().context("count is not an integer")?),
        None => Ok(0),
    }
}

/// Events/s over each tenth of `total`, from when the batches crossing each tenth finished.
fn slice_rates(started: Instant, batches: &[BatchDone], total: u64) -> Vec<f64> {
    let mut marks = vec![(started, 0u64)];
    let mut handled = 0u64;
    for batch in batches {
        handled += batch.size as u64;
        let next = marks.len() as u64;
        if next <= SLICES && handled * SLICES >= next * total {
            marks.push((batch.done, handled));
        }
    }
    marks
        .windows(2)
        .map(|pair| {
            let ((from, before), (to, after)) = (pair[0], pair[1]);
            (after - before) as f64 / (to - from).as_secs_f64()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Where a batch's time goes

/// Mean time per batch of each step of the dispatcher's loop (`dispatch::worker`).
#[derive(Debug, Default)]
struct Breakdown {
    batches: u32,
    events: u64,
    read: Duration,
    copy: Duration,
    handle: Duration,
    commit: Duration,
}

impl Breakdown {
    fn total(&self) -> Duration {
        self.read + self.copy + self.handle + self.commit
    }

    /// What a batch takes when, as in the worker, the next read runs while this batch is
    /// copied, handled and committed.
    fn overlapped(&self) -> Duration {
        self.read.max(self.copy + self.handle + self.commit)
    }

    fn mean_ms(&self, step: Duration) -> f64 {
        step.as_secs_f64() * 1e3 / f64::from(self.batches.max(1))
    }

    fn rate(&self, per_batches: Duration) -> f64 {
        self.events as f64 / per_batches.as_secs_f64()
    }
}

/// Runs the worker's steps by hand on a subscription of its own, from the origin, for
/// `batches` batches: `read_batch`, the copy of the events, `handle`, `commit_batch`, each
/// timed, one after the other (the parked-replay check runs once a poll interval, not per
/// batch, and is left out).
async fn breakdown(
    store: &PgStore,
    handler: &Arc<dyn Handler>,
    batches: usize,
) -> Result<Breakdown> {
    let spec = handler.info().subscriptions[0].clone();
    let name = format!("breakdown-{}.{}", handler.info().name, spec.name);
    let filter = Filter::default();
    let mut revision = store
        .ensure_subscription(&name, "breakdown", &filter, Checkpoint::ORIGIN)
        .await?
        .revision;
    let reads: Arc<dyn Reads> = Arc::new(StoreReads(Store::Postgres(store.clone())));
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut times = Breakdown::default();
    for _ in 0..batches {
        let started = Instant::now();
        let entries = store
            .read_batch(checkpoint, &filter, spec.batch_size as usize)
            .await?;
        let read = Instant::now();
        let Some(last) = entries.last() else { break };
        let events: Vec<Event> = entries.iter().map(|entry| entry.event.clone()).collect();
        let copied = Instant::now();
        let effects = handler
            .handle(&spec.name, &events, Arc::clone(&reads))
            .await
            .context("handle")?;
        let handled = Instant::now();
        let mut commit = BatchCommit::advance(&name, revision, checkpoint, last.checkpoint);
        commit.state = effects.state.into_iter().collect();
        store.commit_batch(&commit).await?;
        let committed = Instant::now();
        checkpoint = commit.to;
        revision += 1;

        times.batches += 1;
        times.events += events.len() as u64;
        times.read += read - started;
        times.copy += copied - read;
        times.handle += handled - copied;
        times.commit += committed - handled;
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------
// Latency

/// Commit-to-handler latencies of single appends to a caught-up subscription.
struct Latency {
    samples: Vec<Duration>,
    achieved_rate: f64,
    /// Mean events per batch while the appends went on.
    batch_size: f64,
    /// Median time inside the handler per batch.
    handle_p50: Duration,
}

impl Latency {
    fn percentile(&self, fraction: f64) -> Duration {
        let index = ((self.samples.len() as f64 * fraction) as usize).min(self.samples.len() - 1);
        self.samples[index]
    }

    fn max(&self) -> Duration {
        self.samples[self.samples.len() - 1]
    }
}

/// Starts the dispatcher with `handler` alone, lets it catch up, appends single events at
/// `args.rate` for `args.seconds`, and pairs each append's return with the instant the
/// handler finished the batch holding that event.
async fn latency(store: &PgStore, handler: &Arc<dyn Handler>, args: &Args) -> Result<Latency> {
    let probe = Probe::new(Arc::clone(handler), true);
    let name = probe.subscription();
    println!(
        "latency: {name}, {} single appends/s for {} s...",
        args.rate, args.seconds
    );
    let dispatcher = Dispatcher::start(store, probe.clone(), None);
    wait_for_checkpoint(store, &name, store.head().await?, CATCH_UP_LIMIT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_batch = probe.batches().len();

    let started = Instant::now();
    let appended = append_steadily(store, args.rate, Duration::from_secs(args.seconds)).await?;
    let achieved_rate = appended.len() as f64 / started.elapsed().as_secs_f64();
    let samples = drain(&probe, &appended).await?;
    wait_for_checkpoint(store, &name, store.head().await?, CATCH_UP_LIMIT).await?;
    dispatcher.stop().await?;

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM eventhost.events")
        .fetch_one(store.pool())
        .await?;
    let count = committed_count(store, &name).await?;
    ensure!(
        count == stored as u64,
        "{name} counted {count} events, the store holds {stored}"
    );
    let batches = probe.batches().split_off(first_batch);
    let mut handle: Vec<Duration> = batches.iter().map(|batch| batch.handle).collect();
    handle.sort();
    let latency = Latency {
        samples,
        achieved_rate,
        batch_size: appended.len() as f64 / batches.len().max(1) as f64,
        handle_p50: handle.get(handle.len() / 2).copied().unwrap_or_default(),
    };
    println!(
        "  p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; count {} (exact)",
        millis(latency.percentile(0.5)),
        millis(latency.percentile(0.99)),
        millis(latency.max()),
        thousands(count as f64)
    );
    Ok(latency)
}

/// Appends one event per tick to a handful of streams; returns each event's id with the
/// instant its append returned (committed and notified).
async fn append_steadily(
    store: &PgStore,
    rate: u32,
    duration: Duration,
) -> Result<Vec<(Uuid, Instant)>> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut appended = Vec::new();
    let batch = Uuid::new_v4().simple().to_string();
    while Instant::now() < end {
        ticker.tick().await;
        let n = appended.len() as u64;
        let stream = StreamId::new("latency", format!("{batch}-{}", n % 10));
        let event = NewEvent::new("latency.pinged", json!({ "n": n }));
        let done = store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .context("PgStore::append")?;
        appended.push((done.events[0].id, Instant::now()));
    }
    Ok(appended)
}

/// Waits until the probe has seen every appended event; returns the latencies, sorted.
async fn drain(probe: &Probe, appended: &[(Uuid, Instant)]) -> Result<Vec<Duration>> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut samples = Vec::with_capacity(appended.len());
    for (id, committed) in appended {
        let seen = loop {
            if let Some(seen) = probe.seen(id) {
                break seen;
            }
            if Instant::now() > deadline {
                bail!("event {id} never reached the handler");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The handler may see an event before its append returns (the append's NOTIFY is a
        // second round trip); that counts as no latency.
        samples.push(seen.saturating_duration_since(*committed));
    }
    samples.sort();
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// Printing

impl Report {
    fn print(&self, args: &Args) {
        println!();
        self.print_catch_up();
        self.print_slices();
        self.print_breakdown(args);
        self.print_latency(args);
        self.print_targets();
    }

    fn print_catch_up(&self) {
        println!(
            "catch-up from a backlog of {} events, one subscription, batches of 1000",
            thousands(self.backlog.events as f64)
        );
        header(&[
            "handler",
            "seconds",
            "events/s",
            "first 10% ev/s",
            "last 10% ev/s",
            "last/first",
            "in handler",
        ]);
        for (label, catch_up) in self.pair(|measured| &measured.catch_up) {
            let share = catch_up.handling.as_secs_f64() / catch_up.elapsed.as_secs_f64();
            cells(&[
                label.to_owned(),
                format!("{:.2}", catch_up.elapsed.as_secs_f64()),
                thousands(catch_up.rate()),
                thousands(catch_up.slices[0]),
                thousands(catch_up.slices[catch_up.slices.len() - 1]),
                format!("{:.2}", catch_up.flatness()),
                format!("{:.0}%", share * 100.0),
            ]);
        }
        let (wasm, native) = (&self.wasm.catch_up, &self.native.catch_up);
        cells(&[
            "ratio wasm/native".to_owned(),
            format!(
                "{:.2}x",
                wasm.elapsed.as_secs_f64() / native.elapsed.as_secs_f64()
            ),
            format!("{:.2}x", wasm.rate() / native.rate()),
            format!("{:.2}x", wasm.slices[0] / native.slices[0]),
            format!(
                "{:.2}x",
                wasm.slices[wasm.slices.len() - 1] / native.slices[native.slices.len() - 1]
            ),
            String::new(),
            String::new(),
        ]);
        println!();
    }

    fn print_slices(&self) {
        println!("catch-up events/s by tenth of the backlog");
        header(&["tenth", "wasm ev/s", "native ev/s", "wasm/native"]);
        let (wasm, native) = (&self.wasm.catch_up.slices, &self.native.catch_up.slices);
        for (index, (wasm, native)) in wasm.iter().zip(native).enumerate() {
            cells(&[
                format!("{}-{}%", index * 10, index * 10 + 10),
                thousands(*wasm),
                thousands(*native),
                format!("{:.2}x", wasm / native),
            ]);
        }
        println!();
    }

    fn print_breakdown(&self, args: &Args) {
        println!(
            "where a batch's time goes: the worker's steps timed by hand, mean ms per batch of 1000 over the first {} batches",
            args.breakdown_batches
        );
        header(&[
            "handler",
            "read_batch",
            "copy events",
            "handle",
            "commit_batch",
            "serial total",
            "=> events/s",
            "read overlapped",
            "=> events/s",
        ]);
        for (label, times) in self.pair(|measured| &measured.breakdown) {
            cells(&[
                label.to_owned(),
                format!("{:.3}", times.mean_ms(times.read)),
                format!("{:.3}", times.mean_ms(times.copy)),
                format!("{:.3}", times.mean_ms(times.handle)),
                format!("{:.3}", times.mean_ms(times.commit)),
                format!("{:.3}", times.mean_ms(times.total())),
                thousands(times.rate(times.total())),
                format!("{:.3}", times.mean_ms(times.overlapped())),
                thousands(times.rate(times.overlapped())),
            ]);
        }
        println!();
    }

    fn print_latency(&self, args: &Args) {
        println!(
            "commit to handler: single appends at {}/s for {} s to a caught-up subscription (WASM: a fresh instance per batch, instantiation included)",
            args.rate, args.seconds
        );
        header(&[
            "handler",
            "events",
            "appends/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "events/batch",
            "handle p50 ms",
        ]);
        for (label, latency) in self.pair(|measured| &measured.latency) {
            cells(&[
                label.to_owned(),
                latency.samples.len().to_string(),
                format!("{:.0}", latency.achieved_rate),
                format!("{:.3}", millis(latency.percentile(0.5))),
                format!("{:.3}", millis(latency.percentile(0.99))),
                format!("{:.3}", millis(latency.max())),
                format!("{:.2}", latency.batch_size),
                format!("{:.3}", millis(latency.handle_p50)),
            ]);
        }
        let (wasm, native) = (&self.wasm.latency, &self.native.latency);
        let ratio = |wasm: Duration, native: Duration| {
            format!("{:.2}x", wasm.as_secs_f64() / native.as_secs_f64())
        };
        cells(&[
            "ratio wasm/native".to_owned(),
            String::new(),
            String::new(),
            ratio(wasm.percentile(0.5), native.percentile(0.5)),
            ratio(wasm.percentile(0.99), native.percentile(0.99)),
            ratio(wasm.max(), native.max()),
            String::new(),
            ratio(wasm.handle_p50, native.handle_p50),
        ]);
        println!();
    }

    fn print_targets(&self) {
        let (wasm, native) = (&self.wasm, &self.native);
        let wasm_p50 = millis(wasm.latency.percentile(0.5));
        let wasm_p99 = millis(wasm.latency.percentile(0.99));
        let rate_ratio = native.catch_up.rate() / wasm.catch_up.rate();
        let p50_ratio = wasm_p50 / millis(native.latency.percentile(0.5));
        let rows = [
            (
                "catch-up into the WASM counter",
                format!("{} ev/s", thousands(wasm.catch_up.rate())),
                ">= 100,000 ev/s".to_owned(),
                wasm.catch_up.rate() >= 100_000.0,
            ),
            (
                "flat as the backlog grows (last/first 10%)",
                format!("{:.2}", wasm.catch_up.flatness()),
                format!("{:.1}..={:.1} (flat)", 1.0 - FLAT, 1.0 + FLAT),
                wasm.catch_up.is_flat(),
            ),
            (
                "commit to WASM handler p50",
                format!("{wasm_p50:.3} ms"),
                "<= 0.7 ms".to_owned(),
                wasm_p50 <= 0.7,
            ),
            (
                "commit to WASM handler p99",
                format!("{wasm_p99:.3} ms"),
                "<= 2.5 ms".to_owned(),
                wasm_p99 <= 2.5,
            ),
            (
                "WASM within 2x of native: catch-up",
                format!("native {rate_ratio:.2}x faster"),
                "<= 2x".to_owned(),
                rate_ratio <= 2.0,
            ),
            (
                "WASM within 2x of native: latency p50",
                format!("wasm {p50_ratio:.2}x slower"),
                "<= 2x".to_owned(),
                p50_ratio <= 2.0,
            ),
        ];
        println!("targets (docs/architecture.md)");
        header(&["figure", "measured", "target", "met"]);
        for (figure, measured, target, met) in rows {
            cells(&[
                figure.to_owned(),
                measured,
                target,
                if met { "yes" } else { "no" }.to_owned(),
            ]);
        }
    }

    fn pair<T>(&self, field: impl Fn(&Measured) -> &T) -> [(&'static str, &T); 2] {
        [
            ("wasm counter", field(&self.wasm)),
            ("native counter", field(&self.native)),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Set-up

/// The workspace's `dist/plugins/counter.wasm`, else the one cargo built.
fn default_wasm(target: &Path) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        workspace.join("dist/plugins/counter.wasm"),
        target.join("wasm32-wasip2/release/counter.wasm"),
    ]
    .into_iter()
    .find(|path| path.is_file())
    .context("counter.wasm not found; build it first with: bash scripts/build-plugins.sh")
}
