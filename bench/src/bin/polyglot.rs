//! One projection, three languages: the order-totals plugin written in Rust
//! (`dist/plugins/order-totals.wasm`), Python (`order-totals-py.wasm`, componentize-py) and
//! JavaScript (`order-totals-js.wasm`, componentize-js), measured side by side in one run,
//! each figure also as a ratio to the Rust plugin's.
//!
//! Run: `bash scripts/build-plugins.sh && cargo run --release -p eventhost-bench --bin polyglot
//! [-- --events N]` (release: a debug build compiles the Python component far too slowly).
//! PostgreSQL at DATABASE_URL (default `postgres://root@127.0.0.1:5432/test`); the benchmark
//! creates a database of its own on that server and drops it at the end.
//!
//! Per language:
//!
//! 1. Component size: the `.wasm` file as deployed (the guest language's runtime included:
//!    CPython for Python, StarlingMonkey for JavaScript).
//! 2. Cold compile: a [`Runtime`] in the daemon's configuration on a fresh, empty compile
//!    cache directory, then `eventhost_dispatch::plugins::load_plugin` timed, as the daemon loads a
//!    plugin it has never seen: compile, write the artifact to the cache, link, instantiate
//!    once for `describe`. Creating the runtime (engine, instance pool) is not included: a
//!    daemon does it once for all its plugins.
//! 3. Warm start: a new [`Runtime`] on the now-filled cache directory, `load_plugin` timed
//!    (the artifact read from the cache, linked, `describe` called); the median of
//!    `--warm-starts` (5), each on a runtime of its own. The run checks that the cold load
//!    wrote exactly one artifact and that the warm loads compiled nothing.
//! 4. Events/s: a backlog of `--events` (20,000) order events shaped like
//!    `examples/orders.jsonl` is appended once (`order.created` with 1-3 lines, 0-2
//!    `order.line-added`, then `order.paid`, sometimes twice, and/or `order.cancelled`, or
//!    neither, over thousands of orders of a few hundred customers; one `PgStore::append` per
//!    order carrying its whole history, from concurrent writers). Then each plugin alone runs
//!    through the real pipeline, `eventhost_dispatch::run`, its subscription `totals`
//!    catching up from the origin to the store's head; timed from the dispatcher's start to
//!    the committed checkpoint reaching the head (a [`Probe`] around the handler says when it
//!    has seen every event, without changing the dispatcher). Batches are the plugin's own
//!    (100 events), each handled by a fresh instance, as the daemon does.
//!
//! After each catch-up the subscription's state (`<plugin>.totals`, every key) must be byte
//! for byte the Rust plugin's, and equal to what a model of the specification computes from
//! the generated events; the run fails otherwise. A second table says where catch-up time
//! goes: the time in the handler per batch, and the cost of a fresh instance handling an
//! empty batch (the per-batch fixed cost: instantiation and one call). The machine's load
//! average (`/proc/loadavg`) is printed at the start and at the end: figures taken while
//! something else runs are not comparable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Dispatcher, Probe, Server, TempDir, cells, dist_dir, header, init_logs, millis,
    settle_backlog, thousands, wait_for_checkpoint,
};
use eventhost_dispatch::plugins::{SinkNames, load_plugin};
use eventhost_dispatch::{Dispatchable, Handler, StoreReads};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_runtime::{FileRules, Reads, Runtime, RuntimeConfig};
use eventhost_store::{EventStore, PgStore, Store, StoreLimits, SubscriptionStore};
use serde_json::{Value, json};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "order-totals in Rust, Python and JavaScript: size, compile, start, events/s")]
struct Args {
    /// Order events in the backlog each language's subscription catches up on.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Warm starts timed per language; the median is reported.
    #[arg(long, default_value_t = 5)]
    warm_starts: usize,
    /// Where the built components are (default: dist/ of the workspace).
    #[arg(long)]
    dist: Option<PathBuf>,
    #[command(flatten)]
    server: Server,
}

/// One language's build of the projection.
struct Language {
    label: &'static str,
    /// The name the plugin describes itself with: its subscription is `<plugin>.totals`.
    plugin: &'static str,
    /// The component, relative to `dist/`.
    file: &'static str,
}

/// The baseline (Rust) first: ratios and the state comparison are against it.
static LANGUAGES: [Language; 3] = [
    Language {
        label: "Rust",
        plugin: "order-totals",
        file: "plugins/order-totals.wasm",
    },
    Language {
        label: "Python",
        plugin: "order-totals-py",
        file: "plugins/order-totals-py.wasm",
    },
    Language {
        label: "JavaScript",
        plugin: "order-totals-js",
        file: "plugins/order-totals-js.wasm",
    },
];

/// Concurrent writers filling the backlog (each append is one order's whole history).
const BACKLOG_WRITERS: usize = 8;
/// Orders per customer, on average, in the backlog.
const ORDERS_PER_CUSTOMER: u64 = 5;
const CUSTOMER_NAMES: [&str; 8] = [
    "ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken",
];
const SKUS: [&str; 6] = ["book", "pen", "lamp", "mug", "desk", "chair"];
/// Empty batches handed to a fresh instance to time the fixed cost of a batch.
const EMPTY_BATCHES: usize = 30;
/// State entries per `state_scan` page.
const SCAN_PAGE: usize = 100_000;
/// How often a catch-up in progress is checked for parked events or a stopped dispatcher.
const CATCH_UP_CHECK: Duration = Duration::from_secs(1);
/// The longest a catch-up may take before the run is declared stuck.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1800);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    init_logs();
    let args = Args::parse();
    ensure!(args.events > 0, "--events must be positive");
    ensure!(args.warm_starts > 0, "--warm-starts must be positive");
    let load_at_start = load_average()?;
    println!(
        "polyglot benchmark: order-totals in Rust, Python and JavaScript ({} CPUs)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("load average at start: {load_at_start}");

    let dist = dist_dir(args.dist.as_deref());
    let paths = LANGUAGES
        .iter()
        .map(|language| component_path(&dist, language))
        .collect::<Result<Vec<_>>>()?;

    let mut loaded = Vec::with_capacity(LANGUAGES.len());
    for (language, path) in LANGUAGES.iter().zip(&paths) {
        loaded.push(load_timings(language, path, args.warm_starts).await?);
    }

    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = pipeline(&args, &database.url, &loaded).await;
    database.drop_it().await?;
    let (backlog, throughputs) = outcome?;

    let load_at_end = load_average()?;
    println!();
    print_summary(&args, &loaded, &throughputs);
    print_batches(&backlog, &loaded, &throughputs);
    println!("load average at start: {load_at_start}");
    println!("load average at end:   {load_at_end}");
    Ok(())
}

/// The component of `language` under `dist`, or a clear error saying how to build it.
fn component_path(dist: &Path, language: &Language) -> Result<PathBuf> {
    let path = dist.join(language.file);
    ensure!(
        path.is_file(),
        "{} ({} plugin) not found; build the plugins first with: bash scripts/build-plugins.sh",
        path.display(),
        language.label
    );
    Ok(path)
}

/// `/proc/loadavg`'s 1-, 5- and 15-minute averages and its running/total tasks.
fn load_average() -> Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg").context("read /proc/loadavg")?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    ensure!(fields.len() >= 4, "unexpected /proc/loadavg: {text}");
    Ok(format!(
        "{} {} {} (1, 5, 15 min), {} tasks running/total",
        fields[0], fields[1], fields[2], fields[3]
    ))
}

// ---------------------------------------------------------------------------------------
// Compile and start

/// One language's component, its load timings, and the plugin the pipeline runs.
struct Loaded {
    language: &'static Language,
    size: u64,
    cold: Duration,
    /// Sorted.
    warm: Vec<Duration>,
    /// The compiled artifact the cold load left in the cache.
    artifact_size: u64,
    /// Loaded by the last warm start.
    plugin: Dispatchable,
    /// The cache directory; kept until the end, the artifact may be mapped.
    _cache: TempDir,
}

impl Loaded {
    fn warm_median(&self) -> Duration {
        self.warm[self.warm.len() / 2]
    }
}

/// Loads `path` once on an empty cache directory (cold), then `warm_starts` times, each
/// with a new runtime on that directory (warm).
async fn load_timings(
    language: &'static Language,
    path: &Path,
    warm_starts: usize,
) -> Result<Loaded> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("read {}", path.display()))?
        .len();
    println!(
        "{}: {} ({} bytes)",
        language.label,
        path.display(),
        thousands(size as f64)
    );
    let cache = TempDir::new("polyglot")?;
    ensure!(artifacts(&cache.0)?.is_empty(), "the cache is not empty");

    let runtime = Runtime::new(RuntimeConfig::daemon(&cache.0)).context("start the runtime")?;
    let started = Instant::now();
    let cold_plugin = load_plugin(
        &runtime,
        path,
        FileRules::default(),
        StoreLimits::default(),
        &SinkNames::new(),
    )
    .await
    .with_context(|| format!("load {}", path.display()))?;
    let cold = started.elapsed();
    let info = cold_plugin.handler.info();
    ensure!(
        info.name == language.plugin,
        "{} describes itself as plugin {}, expected {}",
        path.display(),
        info.name,
        language.plugin
    );
    println!(
        "  plugin {} {}: cold compile {:.2} s",
        info.name,
        info.version,
        cold.as_secs_f64()
    );
    drop(cold_plugin);
    drop(runtime);
    let written = artifacts(&cache.0)?;
    ensure!(
        written.len() == 1,
        "the cold load left {} artifacts in the cache, expected 1",
        written.len()
    );
    let artifact_size = written[0].1;

    let mut warm = Vec::with_capacity(warm_starts);
    let mut plugin = None;
    for _ in 0..warm_starts {
        let runtime = Runtime::new(RuntimeConfig::daemon(&cache.0)).context("start the runtime")?;
        let started = Instant::now();
        let loaded = load_plugin(
            &runtime,
            path,
            FileRules::default(),
            StoreLimits::default(),
            &SinkNames::new(),
        )
        .await
        .with_context(|| format!("load {}", path.display()))?;
        warm.push(started.elapsed());
        plugin = Some(loaded);
    }
    ensure!(
        artifacts(&cache.0)? == written,
        "a warm start rewrote the artifact: it did not come from the cache"
    );
    warm.sort();
    println!(
        "  warm start: median {:.1} ms of {warm_starts} (min {:.1}, max {:.1})",
        millis(warm[warm.len() / 2]),
        millis(warm[0]),
        millis(warm[warm.len() - 1])
    );
    Ok(Loaded {
        language,
        size,
        cold,
        warm,
        artifact_size,
        plugin: plugin.expect("at least one warm start"),
        _cache: cache,
    })
}

/// The compiled artifacts in a cache directory: name, size, modification time.
fn artifacts(dir: &Path) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "cwasm")
        {
            let metadata = std::fs::metadata(&path)?;
            found.push((path, metadata.len(), metadata.modified()?));
        }
    }
    found.sort();
    Ok(found)
}

// ---------------------------------------------------------------------------------------
// The pipeline

/// One language's catch-up through the dispatcher.
struct Throughput {
    elapsed: Duration,
    events: u64,
    batches: usize,
    /// Time in the handler per batch, sorted.
    handle: Vec<Duration>,
    /// A fresh instance handling an empty batch: median.
    empty_batch: Duration,
    state_entries: usize,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn in_handler(&self) -> f64 {
        self.handle.iter().sum::<Duration>().as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// Appends the backlog, then runs each plugin alone through the dispatcher from the origin,
/// checking each one's state against the model's and the Rust plugin's.
async fn pipeline(args: &Args, url: &str, loaded: &[Loaded]) -> Result<(Backlog, Vec<Throughput>)> {
    let store = PgStore::connect(url, StoreLimits::default())
        .await
        .context("connect PgStore")?;
    let backlog = append_backlog(&store, args.events).await?;
    println!(
        "backlog: {} order events ({} orders, {} customers) appended in {:.1} s from {BACKLOG_WRITERS} writers, one append per order; vacuumed and read once",
        thousands(backlog.events as f64),
        thousands(backlog.orders as f64),
        thousands(backlog.customers as f64),
        backlog.elapsed.as_secs_f64(),
    );

    let mut throughputs = Vec::with_capacity(loaded.len());
    let mut baseline: Option<(String, Vec<(String, String)>)> = None;
    for loaded in loaded {
        let empty_batch = empty_batch_cost(&store, &loaded.plugin.handler).await?;
        let (mut throughput, name) = catch_up(&store, &loaded.plugin, backlog.events).await?;
        throughput.empty_batch = empty_batch;
        let state = state_of(&store, &name).await?;
        throughput.state_entries = state.len();
        check_against_model(&name, &state, &backlog.expected)?;
        match &baseline {
            None => {
                println!(
                    "  state: {} entries, as the model computes",
                    thousands(state.len() as f64)
                );
                baseline = Some((name, state));
            }
            Some((baseline_name, baseline_state)) => {
                check_identical(baseline_name, baseline_state, &name, &state)?;
                println!(
                    "  state: {} entries, byte for byte those of {baseline_name}",
                    thousands(state.len() as f64)
                );
            }
        }
        throughputs.push(throughput);
    }
    store.pool().close().await;
    Ok((backlog, throughputs))
}

/// Starts the dispatcher with the plugin alone, measures from then until its checkpoint is
/// the store's head, and stops it. Returns the figures and the subscription's name.
async fn catch_up(
    store: &PgStore,
    plugin: &Dispatchable,
    events: u64,
) -> Result<(Throughput, String)> {
    let probe = Probe::new(Arc::clone(&plugin.handler), false);
    let name = probe.subscription();
    let head = store.head().await?;
    println!(
        "catch-up: {name} from the origin over {} events...",
        thousands(events as f64)
    );
    let mut handled = probe.handled();
    let started = Instant::now();
    let dispatcher = Dispatcher::start(store, probe.clone(), plugin.max_batch_size);
    loop {
        let seen = tokio::time::timeout(
            CATCH_UP_CHECK,
            handled.wait_for(|handled| *handled >= events),
        )
        .await;
        match seen {
            Ok(seen) => {
                seen.map(|_| ()).context("the probe went away")?;
                break;
            }
            Err(_) => {
                let parked = store.parked(Some(name.as_str())).await?;
                if let Some(first) = parked.first() {
                    bail!(
                        "{name} parked {} events; the first failed with: {}",
                        parked.len(),
                        first.error
                    );
                }
                ensure!(
                    !dispatcher.is_finished(),
                    "the dispatcher stopped during the catch-up"
                );
                ensure!(
                    started.elapsed() < CATCH_UP_LIMIT,
                    "{name}: catch-up took longer than {CATCH_UP_LIMIT:?}"
                );
            }
        }
    }
    wait_for_checkpoint(store, &name, head, CATCH_UP_LIMIT).await?;
    let elapsed = started.elapsed();
    dispatcher.stop().await?;

    let batches = probe.batches();
    let mut handle: Vec<Duration> = batches.iter().map(|batch| batch.handle).collect();
    handle.sort();
    let throughput = Throughput {
        elapsed,
        events,
        batches: batches.len(),
        handle,
        empty_batch: Duration::ZERO,
        state_entries: 0,
    };
    println!(
        "  {:.2} s, {} ev/s, {} batches, {:.0}% of the time in the handler",
        elapsed.as_secs_f64(),
        thousands(throughput.rate()),
        throughput.batches,
        throughput.in_handler() * 100.0
    );
    Ok((throughput, name))
}

/// The median time of a fresh instance handling an empty batch: what every batch costs
/// before its first event (a new store and instance, the call, the effects handed back).
async fn empty_batch_cost(store: &PgStore, handler: &Arc<dyn Handler>) -> Result<Duration> {
    let reads: Arc<dyn Reads> = Arc::new(StoreReads(Store::Postgres(store.clone())));
    let subscription = handler.info().subscriptions[0].name.clone();
    let mut samples = Vec::with_capacity(EMPTY_BATCHES);
    for _ in 0..EMPTY_BATCHES {
        let started = Instant::now();
        let effects = handler
            .handle(&subscription, &[], Arc::clone(&reads))
            .await
            .with_context(|| format!("{} handling an empty batch", handler.info().name))?;
        samples.push(started.elapsed());
        ensure!(
            effects.state.is_empty(),
            "{} changed state on an empty batch",
            handler.info().name
        );
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Every state entry of the subscription `name`, in the store's key order.
async fn state_of(store: &PgStore, name: &str) -> Result<Vec<(String, String)>> {
    let mut entries: Vec<(String, String)> = Vec::new();
    loop {
        let after = entries.last().map(|(key, _)| key.clone());
        let page = store
            .state_scan(name, "", after.as_deref(), SCAN_PAGE)
            .await
            .with_context(|| format!("scan the state of {name}"))?;
        let full = page.len() == SCAN_PAGE;
        entries.extend(page);
        if !full {
            return Ok(entries);
        }
    }
}

/// Fails unless `state` is exactly what the model of the specification expects.
fn check_against_model(
    name: &str,
    state: &[(String, String)],
    expected: &BTreeMap<String, String>,
) -> Result<()> {
    let actual: BTreeMap<&str, &str> = state
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    ensure!(actual.len() == state.len(), "{name}: a key scanned twice");
    for (key, value) in expected {
        match actual.get(key.as_str()) {
            Some(actual) if actual == value => {}
            Some(actual) => bail!("{name}: {key} is {actual}, the model says {value}"),
            None => bail!("{name}: {key} is missing, the model says {value}"),
        }
    }
    if let Some(key) = actual.keys().find(|key| !expected.contains_key(**key)) {
        bail!("{name}: {key} is set, the model has no such key");
    }
    Ok(())
}

/// Fails unless the two states are the same entries, byte for byte, in the same order.
fn check_identical(
    baseline_name: &str,
    baseline: &[(String, String)],
    name: &str,
    state: &[(String, String)],
) -> Result<()> {
    if let Some(index) =
        (0..baseline.len().max(state.len())).find(|&index| baseline.get(index) != state.get(index))
    {
        bail!(
            "the state of {name} differs from that of {baseline_name} ({} against {} entries); entry {index}: {:?} against {:?}",
            state.len(),
            baseline.len(),
            state.get(index),
            baseline.get(index)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The dispatcher and its probe

// ---------------------------------------------------------------------------------------
// The backlog and the model of the projection

/// The events every subscription starts from, and the state they must end with.
struct Backlog {
    events: u64,
    orders: usize,
    customers: u64,
    elapsed: Duration,
    /// Key -> compact JSON value, as the specification in
    /// `plugins/rust/order-totals/src/lib.rs` says.
    expected: BTreeMap<String, String>,
}

/// One event of an order's history.
enum Step {
    Created {
        customer: String,
        lines: Vec<(&'static str, i64, i64)>,
    },
    LineAdded(&'static str, i64, i64),
    Paid,
    Cancelled,
}

/// A small deterministic generator (splitmix64): the same backlog on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn line(&mut self) -> (&'static str, i64, i64) {
        let sku = SKUS[self.below(SKUS.len() as u64) as usize];
        let quantity = 1 + self.below(5) as i64;
        let unit_price_cents = 99 + self.below(9_901) as i64;
        (sku, quantity, unit_price_cents)
    }
}

/// One order's history: created with 1-3 lines, 0-2 lines added, then paid (55%), cancelled
/// (20%), paid twice (7%, the second a no-op), paid then cancelled (6%), or left open (12%).
fn order_history(index: u64, customers: u64) -> Vec<Step> {
    let mut rng = Rng::new(index + 1);
    let customer = rng.below(customers);
    let customer = format!(
        "{}-{customer}",
        CUSTOMER_NAMES[(customer % CUSTOMER_NAMES.len() as u64) as usize]
    );
    let lines = (0..1 + rng.below(3)).map(|_| rng.line()).collect();
    let mut steps = vec![Step::Created { customer, lines }];
    for _ in 0..rng.below(3) {
        let (sku, quantity, unit_price_cents) = rng.line();
        steps.push(Step::LineAdded(sku, quantity, unit_price_cents));
    }
    match rng.below(100) {
        0..55 => steps.push(Step::Paid),
        55..75 => steps.push(Step::Cancelled),
        75..82 => steps.extend([Step::Paid, Step::Paid]),
        82..88 => steps.extend([Step::Paid, Step::Cancelled]),
        _ => {}
    }
    steps
}

/// An order's state in the model.
struct ModelOrder {
    customer: String,
    status: &'static str,
    lines: u64,
    total_cents: i64,
}

/// The projection, as its specification says, over the generated events.
#[derive(Default)]
struct Model {
    orders: BTreeMap<String, ModelOrder>,
    /// Customer -> (orders, paid_cents).
    customers: BTreeMap<String, (u64, i64)>,
}

impl Model {
    /// Applies `step` to order `id`; returns the event's type and payload.
    fn apply(&mut self, id: &str, step: &Step) -> (&'static str, Value) {
        match step {
            Step::Created { customer, lines } => {
                let total_cents = lines.iter().map(|(_, q, p)| q * p).sum();
                self.orders.insert(
                    id.to_owned(),
                    ModelOrder {
                        customer: customer.clone(),
                        status: "open",
                        lines: lines.len() as u64,
                        total_cents,
                    },
                );
                self.customers.entry(customer.clone()).or_default().0 += 1;
                let lines: Vec<Value> = lines
                    .iter()
                    .map(|(sku, quantity, unit_price_cents)| {
                        json!({"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents})
                    })
                    .collect();
                (
                    "order.created",
                    json!({"customer": customer, "lines": lines}),
                )
            }
            Step::LineAdded(sku, quantity, unit_price_cents) => {
                let order = self.orders.get_mut(id).expect("created first");
                order.lines += 1;
                order.total_cents += quantity * unit_price_cents;
                (
                    "order.line-added",
                    json!({"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents}),
                )
            }
            Step::Paid => {
                let order = self.orders.get_mut(id).expect("created first");
                let amount_cents = order.total_cents;
                if order.status != "paid" {
                    order.status = "paid";
                    self.customers
                        .get_mut(&order.customer)
                        .expect("the customer of a created order")
                        .1 += amount_cents;
                }
                ("order.paid", json!({"amount_cents": amount_cents}))
            }
            Step::Cancelled => {
                let order = self.orders.get_mut(id).expect("created first");
                order.status = "cancelled";
                ("order.cancelled", json!({"reason": "changed mind"}))
            }
        }
    }

    /// The state: `order/<id>` and `customer/<name>`, values in compact JSON with the fields
    /// in the specification's order.
    fn state(&self) -> BTreeMap<String, String> {
        let text = |value: &str| serde_json::to_string(value).expect("a string serializes");
        let orders = self.orders.iter().map(|(id, order)| {
            (
                format!("order/{id}"),
                format!(
                    r#"{{"customer":{},"status":"{}","lines":{},"total_cents":{}}}"#,
                    text(&order.customer),
                    order.status,
                    order.lines,
                    order.total_cents
                ),
            )
        });
        let customers = self.customers.iter().map(|(name, (orders, paid_cents))| {
            (
                format!("customer/{name}"),
                format!(r#"{{"orders":{orders},"paid_cents":{paid_cents}}}"#),
            )
        });
        orders.chain(customers).collect()
    }
}

/// Generates orders until `total` events (the last order's history cut short if need be),
/// appends each order's history in one `PgStore::append` from `BACKLOG_WRITERS` concurrent
/// writers, then vacuums, so the first reader does not pay for setting hint bits, and reads
/// the table once, so every plugin finds it equally cached.
async fn append_backlog(store: &PgStore, total: u64) -> Result<Backlog> {
    let customers = (total / 4 / ORDERS_PER_CUSTOMER).max(1);
    let mut model = Model::default();
    let mut appends: Vec<(StreamId, Vec<NewEvent>)> = Vec::new();
    let mut generated = 0u64;
    while generated < total {
        let index = appends.len() as u64;
        let id = format!("o-{}", 100_000 + index);
        let mut steps = order_history(index, customers);
        steps.truncate((total - generated) as usize);
        let events: Vec<NewEvent> = steps
            .iter()
            .map(|step| {
                let (event_type, payload) = model.apply(&id, step);
                NewEvent::new(event_type, payload)
            })
            .collect();
        generated += events.len() as u64;
        appends.push((StreamId::new("order", id), events));
    }
    let orders = appends.len();
    let appends = Arc::new(appends);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..BACKLOG_WRITERS)
        .map(|_| {
            let store = store.clone();
            let appends = Arc::clone(&appends);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                while let Some((stream, events)) = appends.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    store
                        .append(stream, ExpectedVersion::NoStream, events)
                        .await
                        .context("PgStore::append")?;
                }
                anyhow::Ok(())
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
        orders,
        customers: model.customers.len() as u64,
        elapsed,
        expected: model.state(),
    })
}

// ---------------------------------------------------------------------------------------
// Printing

fn print_summary(args: &Args, loaded: &[Loaded], throughputs: &[Throughput]) {
    println!(
        "order-totals by language: cold compile on an empty cache, warm start (median of {}), catch-up through eventhost_dispatch::run on PostgreSQL over {} events",
        args.warm_starts,
        thousands(args.events as f64)
    );
    header(&[
        "language",
        "plugin",
        "component bytes",
        "MB",
        "cold compile s",
        "vs Rust",
        "warm start ms",
        "vs Rust",
        "events/s",
        "vs Rust",
    ]);
    let (rust, rust_throughput) = (&loaded[0], &throughputs[0]);
    for (loaded, throughput) in loaded.iter().zip(throughputs) {
        cells(&[
            loaded.language.label.to_owned(),
            loaded.language.plugin.to_owned(),
            thousands(loaded.size as f64),
            format!("{:.1}", loaded.size as f64 / 1e6),
            format!("{:.2}", loaded.cold.as_secs_f64()),
            ratio(loaded.cold.as_secs_f64() / rust.cold.as_secs_f64()),
            format!("{:.1}", millis(loaded.warm_median())),
            ratio(millis(loaded.warm_median()) / millis(rust.warm_median())),
            thousands(throughput.rate()),
            ratio(throughput.rate() / rust_throughput.rate()),
        ]);
    }
    println!(
        "(vs Rust: the figure divided by the Rust plugin's in this run; for times higher is slower, for events/s lower is slower)"
    );
    println!();
}

fn print_batches(backlog: &Backlog, loaded: &[Loaded], throughputs: &[Throughput]) {
    println!(
        "where catch-up time goes: batches of the plugin's size, each a fresh instance; state identical in the three languages ({} entries)",
        thousands(throughputs[0].state_entries as f64)
    );
    header(&[
        "language",
        "catch-up s",
        "batches",
        "events/batch",
        "handle ms/batch p50",
        "in handler",
        "empty batch ms",
        "artifact MB",
        "warm min..max ms",
    ]);
    for (loaded, throughput) in loaded.iter().zip(throughputs) {
        cells(&[
            loaded.language.label.to_owned(),
            format!("{:.2}", throughput.elapsed.as_secs_f64()),
            throughput.batches.to_string(),
            format!(
                "{:.1}",
                backlog.events as f64 / throughput.batches.max(1) as f64
            ),
            format!(
                "{:.3}",
                millis(
                    throughput
                        .handle
                        .get(throughput.handle.len() / 2)
                        .copied()
                        .unwrap_or_default()
                )
            ),
            format!("{:.0}%", throughput.in_handler() * 100.0),
            format!("{:.3}", millis(throughput.empty_batch)),
            format!("{:.1}", loaded.artifact_size as f64 / 1e6),
            format!(
                "{:.1}..{:.1}",
                millis(loaded.warm[0]),
                millis(loaded.warm[loaded.warm.len() - 1])
            ),
        ]);
    }
    println!(
        "(empty batch: median of {EMPTY_BATCHES} calls of handle with no events, i.e. a new instance and one call: the fixed cost of every batch)"
    );
    println!();
}

fn ratio(value: f64) -> String {
    format!("{value:.2}x")
}
