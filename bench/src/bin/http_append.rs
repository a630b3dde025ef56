//! HTTP append throughput: the daemon's `POST /v1/streams/{type}/{id}/events` against the way
//! in it wraps, called natively, in the same run and on the same server. On PostgreSQL the
//! baseline is the SQL function `eventhost.append()` called by sqlx (what an application's
//! transaction calls); on SQLite, which has no server to call, it is the store library's
//! append in process (what `eventhost append` calls). Both sides: `--clients` concurrent
//! clients (4), keep-alive (a pool of connections), each request a new stream, 1 event per
//! request and 100.
//!
//! `cargo run --release -p eventhost-bench --bin http_append [-- --seconds N]` creates a
//! database of its own on DATABASE_URL's server and a SQLite file, starts the daemon in
//! process with its API on a free loopback port and no plugin, measures each side in
//! alternating slices for N seconds, and prints a table of ratios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use eventhost::daemon::{self, DaemonConfig};
use eventhost::http::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_FEEDS, HttpSettings, Tokens};
use eventhost_bench::{BenchDatabase, Server, TempDir, cells, header, init_logs, thousands};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{EventStore, Store};

#[derive(Debug, Parser)]
#[command(about = "HTTP append throughput against the SQL function and the store library")]
struct Args {
    /// Seconds each side runs per scenario, in alternating slices, after a warm-up.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Concurrent clients on each side.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[command(flatten)]
    server: Server,
}

const SLICE: Duration = Duration::from_millis(500);
const WARM_UP: Duration = Duration::from_secs(1);

/// One side's way of appending a request's worth of events to a new stream.
#[derive(Clone)]
enum Side {
    Http {
        client: reqwest::Client,
        base: String,
    },
    SqlFunction(PgPool),
    Library(Store),
}

impl Side {
    async fn append(&self, stream: &str, events: usize) -> Result<()> {
        match self {
            Side::Http { client, base } => {
                let body = json!({ "events": event_bodies(events) });
                let response = client
                    .post(format!("{base}/v1/streams/order/{stream}/events"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                ensure!(
                    response.status() == reqwest::StatusCode::CREATED,
                    "HTTP append answered {}",
                    response.status()
                );
                // Read to its end, as a client does: an answer dropped unread also closes
                // its connection, and the next request would open a new one.
                response.bytes().await?;
            }
            Side::SqlFunction(pool) => {
                sqlx::query("SELECT count(*) FROM eventhost.append('order', $1, NULL, $2)")
                    .bind(stream)
                    .bind(Value::Array(event_bodies(events)))
                    .execute(pool)
                    .await?;
            }
            Side::Library(store) => {
                let new: Vec<NewEvent> = (0..events)
                    .map(|i| NewEvent::new("order.line-added", line(i)))
                    .collect();
                store
                    .append(&StreamId::new("order", stream), ExpectedVersion::Any, &new)
                    .await?;
            }
        }
        Ok(())
    }
}

fn line(i: usize) -> Value {
    json!({"sku": "pen", "quantity": i % 7 + 1, "unit_price_cents": 250})
}

fn event_bodies(events: usize) -> Vec<Value> {
    (0..events)
        .map(|i| json!({"event_type": "order.line-added", "payload": line(i)}))
        .collect()
}

/// Events appended by `clients` clients of `side` during `slice`, each request `per_request`
/// events to a new stream.
async fn run_slice(
    side: &Side,
    clients: usize,
    per_request: usize,
    slice: Duration,
) -> Result<u64> {
    static STREAMS: AtomicU64 = AtomicU64::new(0);
    let appended = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + slice;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (side, appended) = (side.clone(), appended.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let stream = format!("s-{}", STREAMS.fetch_add(1, Ordering::Relaxed));
                side.append(&stream, per_request).await?;
                appended.fetch_add(per_request as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(appended.load(Ordering::Relaxed))
}

/// Events per second of each side, measured in alternating slices.
async fn compare(
    baseline: &Side,
    http: &Side,
    args: &Args,
    per_request: usize,
) -> Result<(f64, f64)> {
    run_slice(baseline, args.clients, per_request, WARM_UP).await?;
    run_slice(http, args.clients, per_request, WARM_UP).await?;
    let slices = (Duration::from_secs(args.seconds).as_millis() / SLICE.as_millis()).max(1);
    let (mut base_events, mut http_events) = (0, 0);
    let (mut base_time, mut http_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..slices {
        let started = Instant::now();
        base_events += run_slice(baseline, args.clients, per_request, SLICE).await?;
        base_time += started.elapsed();
        let started = Instant::now();
        http_events += run_slice(http, args.clients, per_request, SLICE).await?;
        http_time += started.elapsed();
    }
    Ok((
        base_events as f64 / base_time.as_secs_f64(),
        http_events as f64 / http_time.as_secs_f64(),
    ))
}

/// Runs the daemon on `database_url` with its API on a free port until the returned sender
/// says stop; returns the API's base URL.
async fn start_daemon(
    database_url: &str,
    plugins: &TempDir,
) -> Result<(String, watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}").parse()?;
    let mut config = DaemonConfig::new(database_url, &plugins.0);
    config.cache_dir = plugins.0.join("cache");
    config.http = Some(HttpSettings {
        address,
        tokens: Tokens::default(),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        max_feeds: DEFAULT_MAX_FEEDS,
        ready_max_lag: None,
        cors_origins: Vec::new(),
    });
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(async move {
        let mut stopped = stopped;
        let outcome = daemon::run(
            config,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            std::future::pending(),
        )
        .await;
        if let Err(error) = outcome {
            eprintln!("the daemon failed: {error}");
        }
    });
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("{base}/health/ready")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return Ok((base, stop, daemon));
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon was not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logs();
    eventhost_deliveries::install_crypto_provider();
    let postgres = BenchDatabase::create(&args.server.database_url).await?;
    let sqlite_dir = TempDir::new("bench-http-append")?;
    let sqlite_url = format!("sqlite://{}", sqlite_dir.0.join("events.db").display());
    println!(
        "HTTP append against the native way in, {} clients each, {} s per side per row\n",
        args.clients, args.seconds
    );
    header(&[
        "store",
        "events per request",
        "native, events/s",
        "HTTP, events/s",
        "HTTP / native",
    ]);
    for (store, url) in [("PostgreSQL", postgres.url.clone()), ("SQLite", sqlite_url)] {
        let plugins = TempDir::new("bench-http-append-plugins")?;
        let (base, stop, daemon) = start_daemon(&url, &plugins).await?;
        let baseline = match store {
            "PostgreSQL" => Side::SqlFunction(
                PgPoolOptions::new()
                    .max_connections(args.clients as u32)
                    .connect(&url)
                    .await
                    .context("connect the native client")?,
            ),
            _ => Side::Library(eventhost_store::connect(&url).await?),
        };
        let http = Side::Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(args.clients)
                .build()?,
            base,
        };
        for per_request in [1, 100] {
            let (native, over_http) = compare(&baseline, &http, &args, per_request).await?;
            cells(&[
                store.to_owned(),
                per_request.to_string(),
                thousands(native),
                thousands(over_http),
                format!("{:.2}x", over_http / native),
            ]);
        }
        let _ = stop.send(true);
        daemon.await?;
    }
    postgres.drop_it().await?;
    Ok(())
}
