//! Deliveries: how fast messages leave the outbox for a NATS JetStream stream and for an HTTP
//! receiver, against the same client library sending the same messages directly, and how long
//! a message takes from the append that caused it to its receiver.
//!
//! `cargo run --release -p eventhost-bench --bin deliveries [-- --messages N --seconds S]`
//! creates a database of its own on DATABASE_URL's server, starts a `nats-server` (JetStream,
//! a free port, its store in a temporary folder) and an HTTP receiver in process, then:
//!
//! 1. **Throughput.** Direct: N messages sent with the client library the sink uses
//!    (`async-nats` publishing with `Nats-Msg-Id` and awaiting each ack; `reqwest` POSTing
//!    with `idempotency-key`), as many in flight as the sink's `concurrency` (32). Through
//!    eventhost: the same N messages committed to the outbox in batches of 1000, as a
//!    subscription's batches would, then the sink's delivery worker started; timed until the
//!    receiver holds all N.
//! 2. **Latency.** The daemon (`eventhost::daemon::run`) with `hostile-deliver`
//!    (`dist/hostile/hostile-deliver.wasm`), one message per event, events appended one by
//!    one at `--rate` per second for S seconds: the time from each append's commit to its
//!    message's arrival (HTTP request received; NATS message received by a subscriber).
//!
//! It prints one table, ratios against the direct client measured in the same run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use eventhost::config::{Config, HttpConfig};
use eventhost::daemon::{self, DaemonConfig};
use eventhost_bench::{
    BenchDatabase, Server, TempDir, cells, header, init_logs, millis, percentile, thousands,
};
use eventhost_deliveries::{Deliveries, DeliverySettings, Sinks};
use eventhost_domain::{ExpectedVersion, Message, NewEvent, StreamId};
use eventhost_store::{BatchCommit, Checkpoint, EventStore, Filter, Store, SubscriptionStore};

#[derive(Debug, Parser)]
#[command(about = "Deliveries to NATS JetStream and HTTP against the client libraries alone")]
struct Args {
    /// Messages in each throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Seconds of steady appends in each latency measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Appends per second in the latency measurement.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[command(flatten)]
    server: Server,
}

/// Messages in flight at once, direct or through a sink: the sink's default `concurrency`.
const IN_FLIGHT: usize = 32;
/// Messages per outbox commit, as a subscription's batch of 1000 events would enqueue.
const PER_COMMIT: usize = 1000;
/// Ordering keys the throughput messages are spread over.
const KEYS: usize = 256;
const SUBSCRIPTION: &str = "bench.deliveries";

#[tokio::main]
async fn main() -> Result<()> {
    init_logs();
    let args = Args::parse();
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = run(&args, &database.url).await;
    database.drop_it().await?;
    outcome
}

async fn run(args: &Args, database_url: &str) -> Result<()> {
    let nats = NatsServer::start()?;
    let receiver = Receiver::start().await?;
    let client = async_nats::connect(&nats.url).await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH".to_owned(),
            subjects: vec!["bench.>".to_owned()],
            ..Default::default()
        })
        .await
        .context("create the JetStream stream")?;
    let sinks = sinks(&receiver.url, &nats.url)?;
    let store = eventhost_store::connect(database_url).await?;

    let mut rows = Vec::new();
    let n = args.messages;
    let direct = direct_nats(&jetstream, n).await?;
    let published = nats_counter(&client, "bench.>").await?.expecting(n);
    let through = through_outbox(&store, &sinks, "events", n, published).await?;
    rows.push(throughput_row(
        "NATS JetStream, messages/s",
        n,
        direct,
        through,
    ));
    let direct = direct_http(&receiver, n).await?;
    let through = through_outbox(&store, &sinks, "hooks", n, receiver.counter(n)).await?;
    rows.push(throughput_row(
        "HTTP receiver, messages/s",
        n,
        direct,
        through,
    ));

    let latency = latency(args, database_url, &sinks, &receiver, &client).await?;
    header(&["figure", "direct client", "eventhost", "ratio", "target"]);
    for row in rows {
        cells(&row);
    }
    for (sink, samples) in latency {
        let p50 = percentile(&samples, 50);
        let p99 = percentile(&samples, 99);
        cells(&[
            format!(
                "{sink}: append to received at {} ev/s, p50 / p99",
                args.rate
            ),
            "-".to_owned(),
            format!("{:.2} / {:.2} ms", millis(p50), millis(p99)),
            "-".to_owned(),
            "p50 < 5 ms".to_owned(),
        ]);
    }
    Ok(())
}

fn throughput_row(figure: &str, n: usize, direct: Duration, through: Duration) -> Vec<String> {
    let rate = |elapsed: Duration| n as f64 / elapsed.as_secs_f64();
    vec![
        figure.to_owned(),
        thousands(rate(direct)),
        thousands(rate(through)),
        format!("{:.2}x", rate(through) / rate(direct)),
        ">= 0.5x".to_owned(),
    ]
}

fn sinks(receiver: &str, nats: &str) -> Result<Sinks> {
    let text = format!(
        "[sinks.hooks]\nkind = \"http\"\nurl = \"{receiver}/hooks\"\n\
         [sinks.events]\nkind = \"nats\"\nurl = \"{nats}\"\nsubject = \"bench.{{key}}\"\n"
    );
    let config = Config::parse(Path::new("bench.toml"), &text, |_| None)?;
    Ok(config.sinks)
}

fn message(sink: &str, n: usize, run: &str) -> Message {
    Message {
        id: format!("{run}:{n}"),
        sink: sink.to_owned(),
        key: Some(format!("k{}", n % KEYS)),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: json!({"n": n, "order_id": format!("o-{n}"), "amount_cents": 1500})
            .to_string()
            .into_bytes(),
    }
}

async fn direct_nats(jetstream: &async_nats::jetstream::Context, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    futures::stream::iter(0..n)
        .map(|i| {
            let message = message("events", i, &run);
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", message.id.as_str());
                let subject = format!("bench.{}", message.key.unwrap_or_default());
                jetstream
                    .publish_with_headers(subject, headers, message.body.into())
                    .await?
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    Ok(started.elapsed())
}

async fn direct_http(receiver: &Receiver, n: usize) -> Result<Duration> {
    eventhost_deliveries::install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = format!("{}/hooks", receiver.url);
    let done = receiver.counter(n);
    let started = Instant::now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    futures::stream::iter(0..n)
        .map(|i| {
            let message = message("hooks", i, &run);
            let (client, url) = (&client, &url);
            async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", &message.id)
                    .body(message.body)
                    .send()
                    .await?;
                ensure!(response.status().is_success(), "{}", response.status());
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    let elapsed = started.elapsed();
    done.wait().await;
    Ok(elapsed)
}

/// Commits `n` messages for `sink` to the outbox, then times a delivery worker sending them
/// until `arrived` has seen them all.
async fn through_outbox(
    store: &Store,
    sinks: &Sinks,
    sink: &str,
    n: usize,
    arrived: Counter,
) -> Result<Duration> {
    store
        .ensure_subscription(
            SUBSCRIPTION,
            "bench",
            &Filter::default(),
            Checkpoint::ORIGIN,
        )
        .await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    for (revision, chunk) in (0_u64..).zip((0..n).collect::<Vec<_>>().chunks(PER_COMMIT)) {
        let mut commit = BatchCommit::advance(
            SUBSCRIPTION,
            revision,
            Checkpoint::ORIGIN,
            Checkpoint::ORIGIN,
        );
        commit.messages = chunk.iter().map(|i| message(sink, *i, &run)).collect();
        store.commit_batch(&commit).await?;
    }
    let only: Sinks = sinks.only(sink);
    let started = Instant::now();
    let deliveries = Deliveries::start(store, &only, &DeliverySettings::default())?;
    arrived.wait().await;
    let elapsed = started.elapsed();
    deliveries.stop().await;
    Ok(elapsed)
}

/// Runs the daemon with hostile-deliver and appends one event per `1/rate` s; returns each
/// sink's append-to-arrival samples.
async fn latency(
    args: &Args,
    database_url: &str,
    sinks: &Sinks,
    receiver: &Receiver,
    nats: &async_nats::Client,
) -> Result<BTreeMap<&'static str, Vec<Duration>>> {
    let plugins = TempDir::new("bench-deliveries")?;
    let wasm = workspace().join("dist/hostile/hostile-deliver.wasm");
    ensure!(
        wasm.is_file(),
        "missing {}: run `bash scripts/build-plugins.sh`",
        wasm.display()
    );
    std::fs::copy(&wasm, plugins.0.join("deliver.wasm"))?;
    std::fs::write(
        plugins.0.join("deliver.toml"),
        "sinks = [\"hooks\", \"events\"]\n",
    )?;
    let cache = TempDir::new("bench-deliveries-cache")?;
    let mut config = DaemonConfig::new(database_url, &plugins.0);
    config.cache_dir = cache.0.clone();
    config.config = Config {
        sinks: sinks.clone(),
        deliveries: DeliverySettings::default(),
        relays: Vec::new(),
        http: HttpConfig::default(),
    };
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(daemon::run(
        config,
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
        std::future::pending(),
    ));
    let store = eventhost_store::connect(database_url).await?;
    let mut samples = BTreeMap::new();
    for sink in ["hooks", "events"] {
        let arrivals = match sink {
            "hooks" => receiver.arrivals(),
            _ => nats_arrivals(nats).await?,
        };
        // The throughput runs' bodies carried the same numbers.
        arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clear();
        // One message first, so that the plugin is loaded and the connections are open.
        append_timed(&store, sink, 0).await?;
        wait_for_arrival(&arrivals, 0).await?;
        let total = (args.seconds * u64::from(args.rate)) as usize;
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut committed = HashMap::new();
        for i in 1..=total {
            ticker.tick().await;
            committed.insert(i, append_timed(&store, sink, i).await?);
        }
        wait_for_arrival(&arrivals, total).await?;
        let arrived = arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let mut latencies: Vec<Duration> = committed
            .iter()
            .filter_map(|(i, at)| {
                arrived
                    .get(i)
                    .map(|arrival| arrival.saturating_duration_since(*at))
            })
            .collect();
        ensure!(
            latencies.len() == total,
            "{} of {total} messages arrived",
            latencies.len()
        );
        latencies.sort();
        samples.insert(
            if sink == "hooks" {
                "HTTP"
            } else {
                "NATS JetStream"
            },
            latencies,
        );
    }
    stop.send_replace(true);
    daemon.await??;
    Ok(samples)
}

/// Appends one event asking hostile-deliver for message `n` to `sink`; returns when its
/// commit returned.
async fn append_timed(store: &Store, sink: &str, n: usize) -> Result<Instant> {
    let body = json!({"n": n}).to_string();
    let event = NewEvent::new("probe.asked", json!({"sink": sink, "body": body}));
    let stream = StreamId::new("probe", format!("{sink}-{n}"));
    store
        .append(&stream, ExpectedVersion::Any, &[event])
        .await?;
    Ok(Instant::now())
}

type Arrivals = Arc<Mutex<HashMap<usize, Instant>>>;

async fn wait_for_arrival(arrivals: &Arrivals, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .contains_key(&n)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("message {n} did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Arrival times of the `{"n": N}` bodies published to the stream's subjects.
async fn nats_arrivals(client: &async_nats::Client) -> Result<Arrivals> {
    let arrivals: Arrivals = Arc::default();
    let mut subscription = client.subscribe("bench.>").await?;
    let recorded = Arc::clone(&arrivals);
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(n) = body_n(&message.payload)
                && let Ok(mut arrivals) = recorded.lock()
            {
                arrivals.entry(n).or_insert_with(Instant::now);
            }
        }
    });
    Ok(arrivals)
}

fn body_n(body: &[u8]) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["n"].as_u64().map(|n| n as usize)
}

/// Counts the messages published to `subject`, until `n` of a run have been seen.
async fn nats_counter(client: &async_nats::Client, subject: &str) -> Result<Counter> {
    let counter = Counter::new();
    let mut subscription = client.subscribe(subject.to_owned()).await?;
    let seen = counter.clone();
    tokio::spawn(async move {
        while subscription.next().await.is_some() {
            seen.add();
        }
    });
    Ok(counter)
}

/// Counts arrivals; `wait` returns once `expected` have arrived since it was made.
#[derive(Clone)]
struct Counter {
    count: Arc<watch::Sender<usize>>,
    expected: usize,
}

impl Counter {
    fn new() -> Self {
        Self {
            count: Arc::new(watch::Sender::new(0)),
            expected: 0,
        }
    }

    fn add(&self) {
        self.count.send_modify(|count| *count += 1);
    }

    fn expecting(mut self, n: usize) -> Self {
        self.expected = *self.count.borrow() + n;
        self
    }

    async fn wait(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|count| *count >= self.expected).await;
    }
}

/// The HTTP receiver: answers 204 to everything, counts requests, and records when each
/// `{"n": N}` body first arrived.
struct Receiver {
    url: String,
    counter: Counter,
    arrivals: Arrivals,
}

#[derive(Clone)]
struct Shared {
    counter: Counter,
    arrivals: Arrivals,
}

impl Receiver {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Shared {
            counter: Counter::new(),
            arrivals: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            counter: shared.counter,
            arrivals: shared.arrivals,
        })
    }

    /// A counter that completes after `n` more requests.
    fn counter(&self, n: usize) -> Counter {
        self.counter.clone().expecting(n)
    }

    fn arrivals(&self) -> Arrivals {
        Arc::clone(&self.arrivals)
    }
}

async fn receive(State(shared): State<Shared>, _headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Some(n) = body_n(&body)
        && let Ok(mut arrivals) = shared.arrivals.lock()
    {
        arrivals.entry(n).or_insert_with(Instant::now);
    }
    shared.counter.add();
    StatusCode::NO_CONTENT
}

/// A `nats-server` with JetStream on a free port, killed when dropped.
struct NatsServer {
    url: String,
    child: Child,
    _store: TempDir,
}

impl NatsServer {
    fn start() -> Result<Self> {
        let store = TempDir::new("bench-nats")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nats-server (apt install nats-server)")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            url: format!("nats://127.0.0.1:{port}"),
            child,
            _store: store,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
