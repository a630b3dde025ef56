//! A policy at work: the shipping-policy plugin (`dist/plugins/shipping-policy.wasm`, Rust)
//! against a native Rust handler doing the same work through the same pipeline, in one run.
//! For each `order.paid` event both read the order's stream to find its `order.created`, check
//! that no shipment stream exists yet (one `read-streams` per batch for all its orders and
//! shipments), and emit a `shipment.requested` to a new stream of its own, committed with
//! the batch.
//!
//! 1. Catch-up: `--orders` orders (each `order.created` then `order.paid`, one append per
//!    order) are appended once; each handler alone then runs through the real pipeline
//!    (`eventhost_dispatch::run`), its subscription to `order.paid` catching up from the
//!    origin to the head. Timed from the dispatcher's start to the checkpoint at the head;
//!    the run checks that every order got exactly one shipment.
//! 2. Latency: with the handler's dispatcher running, an order every 1/`--rate` s (created,
//!    then paid, each its own append); from the `order.paid` append's return to the
//!    shipment's stream being at version 1, polled every 100 µs.
//!
//! The native handler emits to streams of type `shipment-native`, so the two never see each
//! other's shipments, and lets the store pick its events' ids (the plugin derives them from
//! the paid event's id).
//!
//! Run: `bash scripts/build-plugins.sh && cargo run --release -p eventhost-bench --bin policy
//! [-- --orders N]`. PostgreSQL at DATABASE_URL; the benchmark creates a database of its own
//! on that server and drops it at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Dispatcher, Probe, Server, TempDir, cells, dist_dir, header, init_logs, millis,
    percentile, thousands,
};
use eventhost_dispatch::plugins::{SinkNames, load_plugin};
use eventhost_dispatch::{Dispatchable, Handler};
use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId, StreamRead};
use eventhost_runtime::{
    Effects, Emit, FileRules, HandleError, PluginInfo, Reads, Runtime, RuntimeConfig, StartFrom,
    SubscriptionSpec,
};
use eventhost_store::{EventStore, PendingAppend, PgStore, StoreLimits};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Debug, Parser)]
#[command(about = "shipping-policy (WASM) against a native policy: catch-up and latency")]
struct Args {
    /// Orders (each created, then paid) in the backlog.
    #[arg(long, default_value_t = 20_000)]
    orders: u64,
    /// Orders per second in the latency measurement.
    #[arg(long, default_value_t = 25)]
    rate: u32,
    /// Seconds of steady orders in each latency measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Where the built components are (default: dist/ of the workspace).
    #[arg(long)]
    dist: Option<PathBuf>,
    #[command(flatten)]
    server: Server,
}

/// Orders appended together (each its own stream) while filling the backlog.
const BACKLOG_CHUNK: u64 = 100;
/// The longest a catch-up or one shipment may take before the run is declared stuck.
const LIMIT: Duration = Duration::from_secs(600);
/// How often the latency measurement looks for the shipment.
const POLL: Duration = Duration::from_micros(100);

/// What one handler did.
struct Figures {
    label: &'static str,
    /// Paid orders caught up on (the backlog, and the orders of earlier latency runs).
    orders: u64,
    catch_up: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn orders_per_second(&self) -> f64 {
        self.orders as f64 / self.catch_up.as_secs_f64()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    init_logs();
    let args = Args::parse();
    let dist = dist_dir(args.dist.as_deref());
    let cache = TempDir::new("policy-cache")?;
    let runtime = Runtime::new(RuntimeConfig::daemon(&cache.0)).context("start the runtime")?;
    let path = dist.join("plugins/shipping-policy.wasm");
    let plugin = load_plugin(
        &runtime,
        &path,
        FileRules::default(),
        StoreLimits::default(),
        &SinkNames::new(),
    )
    .await
    .with_context(|| format!("load {} (bash scripts/build-plugins.sh)", path.display()))?;
    let native = Dispatchable {
        handler: Arc::new(NativePolicy::new()),
        max_batch_size: plugin.max_batch_size,
    };

    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = measure(
        &args,
        &database.url,
        [("WASM", &plugin), ("native", &native)],
    )
    .await;
    database.drop_it().await?;
    report(&args, &outcome?);
    Ok(())
}

async fn measure(
    args: &Args,
    url: &str,
    handlers: [(&'static str, &Dispatchable); 2],
) -> Result<Vec<Figures>> {
    let store = PgStore::connect(url, StoreLimits::default())
        .await
        .context("connect PgStore")?;
    let started = Instant::now();
    for first in (0..args.orders).step_by(BACKLOG_CHUNK as usize) {
        let appends: Vec<PendingAppend> = (first..(first + BACKLOG_CHUNK).min(args.orders))
            .map(|n| PendingAppend {
                stream: order(n),
                expected: ExpectedVersion::NoStream,
                events: vec![created(n), paid()],
            })
            .collect();
        store.append_all(&appends).await?;
    }
    println!(
        "backlog: {} orders (created, then paid) appended in {:.1} s",
        thousands(args.orders as f64),
        started.elapsed().as_secs_f64()
    );
    let mut figures = Vec::new();
    let mut next_order = args.orders;
    for (label, handler) in handlers {
        let orders = next_order;
        let shipment_type = shipment_type(handler);
        let catch_up = catch_up(&store, handler, &shipment_type, orders).await?;
        let shipped = shipped(&store, &shipment_type).await?;
        ensure!(
            shipped == orders,
            "{label}: {shipped} shipments for {orders} orders"
        );
        println!(
            "{label}: caught up on {} paid orders in {:.2} s, each shipped once",
            thousands(orders as f64),
            catch_up.as_secs_f64()
        );
        let latencies = latency(args, &store, handler, &shipment_type, &mut next_order).await?;
        figures.push(Figures {
            label,
            orders,
            catch_up,
            latencies,
        });
    }
    store.close().await;
    Ok(figures)
}

/// Runs `handler` alone from the origin until it has handled `paid` paid orders and their
/// shipments are committed; the time it took.
async fn catch_up(
    store: &PgStore,
    handler: &Dispatchable,
    shipment_type: &str,
    paid: u64,
) -> Result<Duration> {
    let probe = Probe::new(Arc::clone(&handler.handler), false);
    let started = Instant::now();
    let dispatcher = Dispatcher::start(store, probe.clone(), handler.max_batch_size);
    let mut handled = probe.handled();
    tokio::time::timeout(LIMIT, handled.wait_for(|handled| *handled >= paid))
        .await
        .context("the catch-up took too long")?
        .context("the probe went away")?;
    while shipped(store, shipment_type).await? < paid {
        ensure!(
            started.elapsed() < LIMIT,
            "the last shipments were not committed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    dispatcher.stop().await?;
    Ok(elapsed)
}

/// How many orders have a shipment of `shipment_type`.
async fn shipped(store: &PgStore, shipment_type: &str) -> Result<u64> {
    let shipped: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM eventhost.events
         WHERE aggregate_type = $1 AND event_type = 'shipment.requested'",
    )
    .bind(shipment_type)
    .fetch_one(store.pool())
    .await?;
    Ok(u64::try_from(shipped).unwrap_or(0))
}

/// Orders at `--rate` for `--seconds` with `handler` running: from each paid append's
/// return to its shipment's commit.
async fn latency(
    args: &Args,
    store: &PgStore,
    handler: &Dispatchable,
    shipment_type: &str,
    next_order: &mut u64,
) -> Result<Vec<Duration>> {
    let dispatcher = Dispatcher::start(store, Arc::clone(&handler.handler), handler.max_batch_size);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let orders = args.seconds * u64::from(args.rate);
    let mut latencies = Vec::with_capacity(orders as usize);
    for _ in 0..orders {
        ticks.tick().await;
        let n = *next_order;
        *next_order += 1;
        let stream = order(n);
        store
            .append(&stream, ExpectedVersion::NoStream, &[created(n)])
            .await?;
        store
            .append(&stream, ExpectedVersion::Exact(1), &[paid()])
            .await?;
        let paid_at = Instant::now();
        let shipment = StreamId::new(shipment_type, &stream.aggregate_id);
        while store.stream_version(&shipment).await? == 0 {
            ensure!(paid_at.elapsed() < LIMIT, "no shipment for {stream}");
            tokio::time::sleep(POLL).await;
        }
        latencies.push(paid_at.elapsed());
    }
    dispatcher.stop().await?;
    latencies.sort();
    Ok(latencies)
}

fn order(n: u64) -> StreamId {
    StreamId::new("order", format!("o-{n}"))
}

fn created(n: u64) -> NewEvent {
    NewEvent::new(
        "order.created",
        json!({
            "customer": format!("c-{}", n % 997),
            "lines": [{"sku": "book", "quantity": 1 + n % 3, "unit_price_cents": 1250}],
        }),
    )
}

fn paid() -> NewEvent {
    NewEvent::new("order.paid", json!({ "method": "card" }))
}

/// The aggregate type `handler` emits its shipments to.
fn shipment_type(handler: &Dispatchable) -> String {
    match handler.handler.info().name.as_str() {
        NATIVE_NAME => "shipment-native".to_owned(),
        _ => "shipment".to_owned(),
    }
}

const NATIVE_NAME: &str = "native-shipping-policy";

/// shipping-policy's work in native Rust, through the same host reads and effects.
struct NativePolicy {
    info: PluginInfo,
}

impl NativePolicy {
    fn new() -> Self {
        let shipments = SubscriptionSpec {
            name: "shipments".to_owned(),
            aggregate_types: Vec::new(),
            event_types: vec!["order.paid".to_owned()],
            batch_size: 100,
            start_from: StartFrom::Beginning,
        };
        Self {
            info: PluginInfo {
                name: NATIVE_NAME.to_owned(),
                version: "1.0.0".to_owned(),
                subscriptions: vec![shipments],
            },
        }
    }

    /// One read of every paid order's stream and its shipment stream's version, as the
    /// plugin's `read-streams` call makes.
    async fn ship(&self, batch: &[Event], reads: Arc<dyn Reads>) -> Result<Effects, HandleError> {
        let paid: Vec<&Event> = batch
            .iter()
            .filter(|event| event.event_type == "order.paid")
            .collect();
        let asked: Vec<StreamRead> = paid
            .iter()
            .flat_map(|paid| {
                [
                    StreamRead {
                        stream: paid.stream(),
                        from_version: 1,
                        limit: 1000,
                    },
                    StreamRead {
                        stream: shipment_of(paid),
                        from_version: 1,
                        limit: 0,
                    },
                ]
            })
            .collect();
        let pages = reads
            .read_streams(&asked, usize::MAX)
            .await
            .map_err(|error| HandleError::Host {
                message: error.to_string(),
            })?;
        let mut effects = Effects::default();
        for (paid, pages) in paid.into_iter().zip(pages.chunks(2)) {
            let customer = pages[0]
                .events
                .iter()
                .find(|event| event.event_type == "order.created")
                .and_then(|event| {
                    let payload: serde_json::Value =
                        serde_json::from_str(event.payload.as_str()).ok()?;
                    payload["customer"].as_str().map(str::to_owned)
                });
            let Some(customer) = customer else {
                continue;
            };
            if pages[1].version != 0 {
                continue;
            }
            let mut requested = NewEvent::new(
                "shipment.requested",
                json!({ "order_id": paid.aggregate_id, "customer": customer }),
            );
            requested
                .metadata
                .insert("causation-id".to_owned(), paid.id.to_string());
            effects.emitted.push(Emit {
                stream: shipment_of(paid),
                expected: ExpectedVersion::NoStream,
                events: vec![requested],
            });
        }
        Ok(effects)
    }
}

/// The native policy's shipment stream for the order `paid` names.
fn shipment_of(paid: &Event) -> StreamId {
    StreamId::new("shipment-native", &paid.aggregate_id)
}

impl Handler for NativePolicy {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle<'a>(
        &'a self,
        _subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        self.ship(batch, reads).boxed()
    }
}

fn report(args: &Args, figures: &[Figures]) {
    println!(
        "\nshipping-policy: a backlog of {} paid orders caught up; latency at {} orders/s for {} s",
        thousands(args.orders as f64),
        args.rate,
        args.seconds
    );
    header(&[
        "handler",
        "catch-up, paid orders/s",
        "vs native",
        "paid to shipped p50 ms",
        "p99 ms",
    ]);
    let native = figures
        .iter()
        .find(|figures| figures.label == "native")
        .map_or(1.0, Figures::orders_per_second);
    for figure in figures {
        let rate = figure.orders_per_second();
        cells(&[
            figure.label.to_owned(),
            thousands(rate),
            format!("{:.2}x", rate / native),
            format!("{:.2}", millis(percentile(&figure.latencies, 50))),
            format!("{:.2}", millis(percentile(&figure.latencies, 99))),
        ]);
    }
}
