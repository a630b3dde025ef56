//! Soak run: the `eventhost` daemon on PostgreSQL with the example plugins under a steady
//! stream of orders (`--rate` events per second, through `eventhost.append()` as an
//! application appends) for `--minutes`, sampled every `--sample-seconds`: resident memory,
//! open file descriptors, the daemon's database connections, CPU, and the subscriptions'
//! total lag, printed as a table. It then checks that nothing grew past the stated bounds
//! after the warm-up (the first sample): memory by at most what the subscriptions' state
//! caches may hold (16 MiB each, the daemon's default) plus `--rss-growth-percent`, file
//! descriptors by at most 8, connections never past the pool's 16 plus the listener, and the
//! lag back to 0 once the appends stop. Exits non-zero when a bound is passed.
//!
//! Not part of the test suite (it lasts half an hour by default). Run:
//! `bash scripts/build-plugins.sh && cargo build --release -p eventhost && cargo run --release
//! -p eventhost-bench --bin soak -- [--minutes 30] [--rate 500]`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Build, Daemon, Server, TempDir, cells, header, plugins_folder, thousands,
};
use std::str::FromStr;

use eventhost_store::{APPLICATION_NAME, PgStore, StoreLimits, SubscriptionStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Debug, Parser)]
struct Args {
    /// How long the appends last.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Events appended per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 60)]
    sample_seconds: u64,
    /// How much resident memory may grow from the first sample to the last, in percent.
    #[arg(long, default_value_t = 20)]
    rss_growth_percent: u64,
    #[command(flatten)]
    build: Build,
    #[command(flatten)]
    server: Server,
}

/// The example plugins the daemon runs.
const PLUGINS: [&str; 3] = ["counter", "order-totals", "shipping-policy"];

/// The application name of the soak's own connections.
const SOAK_APPLICATION: &str = "eventhost-soak";

/// Subscriptions whose lag is summed.
const SUBSCRIPTIONS: [&str; 3] = [
    "counter.all",
    "order-totals.totals",
    "shipping-policy.shipments",
];

/// What each subscription's state cache may hold (the daemon's default), in KiB.
const STATE_CACHE_KB: u64 = 16 * 1024;

/// Connections the daemon may hold: its pool (16) and the listener's.
const MAX_CONNECTIONS: i64 = 17;

/// Open file descriptors the daemon may gain after the warm-up.
const MAX_FD_GROWTH: i64 = 8;

/// How long the daemon gets to catch up once the appends stop.
const CATCH_UP: Duration = Duration::from_secs(120);

struct Sample {
    minute: f64,
    appended: u64,
    rss_kb: u64,
    fds: i64,
    connections: i64,
    cpu: f64,
    lag: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = args.build.binary()?;
    let temp = TempDir::new("soak")?;
    let plugins = plugins_folder(&temp.0, args.build.dist.as_deref(), &PLUGINS)?;
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = soak(&args, &binary, &database.url, &temp.0, &plugins).await;
    database.drop_it().await?;
    let (samples, caught_up) = outcome?;
    report(&args, &samples, caught_up)
}

async fn soak(
    args: &Args,
    binary: &Path,
    url: &str,
    dir: &Path,
    plugins: &Path,
) -> Result<(Vec<Sample>, Option<Duration>)> {
    let mut daemon = Daemon::start(binary, url, plugins, &dir.join("cache"), dir, &[])?;
    let options = PgConnectOptions::from_str(url)?.application_name(SOAK_APPLICATION);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .context("connect to the soak database")?;
    // The URL sqlx writes back leaves the application name out: name it again.
    let mut store_url = options.to_url_lossy();
    store_url
        .query_pairs_mut()
        .append_pair("application_name", SOAK_APPLICATION);
    let store = PgStore::connect(store_url.as_ref(), StoreLimits::default())
        .await
        .context("open the store")?;
    wait_for_subscriptions(&pool, &mut daemon).await?;

    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let mut appends = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1) as u32);
    appends.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sampling = tokio::time::interval(Duration::from_secs(args.sample_seconds.max(1)));
    sampling.tick().await;
    let mut appended = 0u64;
    let mut cpu_before = daemon.cpu_seconds()?;
    let mut sampled_at = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::select! {
            _ = appends.tick() => {
                append_order_event(&pool, appended).await?;
                appended += 1;
            }
            _ = sampling.tick() => {
                daemon.check_running()?;
                let cpu_now = daemon.cpu_seconds()?;
                let cpu = (cpu_now - cpu_before) / sampled_at.elapsed().as_secs_f64();
                cpu_before = cpu_now;
                sampled_at = Instant::now();
                let sample = Sample {
                    minute: started.elapsed().as_secs_f64() / 60.0,
                    appended,
                    rss_kb: daemon.rss_kb()?,
                    fds: open_fds(&daemon)?,
                    connections: connections(&pool, &database).await?,
                    cpu,
                    lag: total_lag(&store).await?,
                };
                eprintln!(
                    "minute {:.0}: {} appended, rss {} KiB, {} fds, {} connections, cpu {:.0}%, lag {}",
                    sample.minute, sample.appended, sample.rss_kb, sample.fds,
                    sample.connections, sample.cpu * 100.0, sample.lag
                );
                samples.push(sample);
            }
        }
    }
    let appends_ended = Instant::now();
    let mut caught_up = None;
    while appends_ended.elapsed() < CATCH_UP {
        if total_lag(&store).await? == 0 {
            caught_up = Some(appends_ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.check_running()?;
    samples.push(Sample {
        minute: started.elapsed().as_secs_f64() / 60.0,
        appended,
        rss_kb: daemon.rss_kb()?,
        fds: open_fds(&daemon)?,
        connections: connections(&pool, &database).await?,
        cpu: (daemon.cpu_seconds()? - cpu_before) / sampled_at.elapsed().as_secs_f64(),
        lag: total_lag(&store).await?,
    });
    daemon.stop(Duration::from_secs(30)).await?;
    store.close().await;
    Ok((samples, caught_up))
}

async fn wait_for_subscriptions(pool: &PgPool, daemon: &mut Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        daemon.check_running()?;
        let defined: Option<i64> =
            sqlx::query_scalar("SELECT count(*) FROM eventhost.subscriptions")
                .fetch_one(pool)
                .await
                .ok();
        if defined == Some(SUBSCRIPTIONS.len() as i64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the daemon did not start its subscriptions within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Event `n` of a steady stream of orders: every order is created, then paid (the shipping
/// policy then appends a shipment), in streams of their own.
async fn append_order_event(pool: &PgPool, n: u64) -> Result<()> {
    let order = format!("o-{}", n / 2);
    let (expected, events) = if n.is_multiple_of(2) {
        (
            0,
            serde_json::json!([{"event_type": "order.created", "payload": {
                "customer": format!("c-{}", n % 97),
                "lines": [{"sku": "sku", "quantity": 1 + n % 3, "unit_price_cents": 100 + n % 50}],
            }}]),
        )
    } else {
        (
            1,
            serde_json::json!([{"event_type": "order.paid", "payload": {}}]),
        )
    };
    sqlx::query("SELECT * FROM eventhost.append('order', $1, $2, $3)")
        .bind(&order)
        .bind(expected)
        .bind(events)
        .execute(pool)
        .await
        .with_context(|| format!("append event {n}"))?;
    Ok(())
}

fn open_fds(daemon: &Daemon) -> Result<i64> {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))?.count();
    Ok(fds as i64)
}

/// The daemon's connections (the soak's own carry another application name).
async fn connections(pool: &PgPool, database: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    )
    .bind(database)
    .bind(APPLICATION_NAME)
    .fetch_one(pool)
    .await?)
}

async fn total_lag(store: &PgStore) -> Result<u64> {
    let mut total = 0;
    for name in SUBSCRIPTIONS {
        total += store.lag(name).await?;
    }
    Ok(total)
}

fn report(args: &Args, samples: &[Sample], caught_up: Option<Duration>) -> Result<()> {
    println!(
        "soak: {} events/s for {} min on PostgreSQL, the example plugins ({}); 2-core machine",
        args.rate,
        args.minutes,
        PLUGINS.join(", ")
    );
    header(&[
        "minute",
        "appended",
        "RSS (MiB)",
        "fds",
        "connections",
        "CPU",
        "lag",
    ]);
    for sample in samples {
        cells(&[
            format!("{:.1}", sample.minute),
            thousands(sample.appended as f64),
            format!("{:.1}", sample.rss_kb as f64 / 1024.0),
            sample.fds.to_string(),
            sample.connections.to_string(),
            format!("{:.0}%", sample.cpu * 100.0),
            sample.lag.to_string(),
        ]);
    }
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        bail!("no sample was taken (--minutes shorter than --sample-seconds?)");
    };
    let mut failures = Vec::new();
    let caches_kb = STATE_CACHE_KB * SUBSCRIPTIONS.len() as u64;
    let rss_bound = first.rss_kb * (100 + args.rss_growth_percent) / 100 + caches_kb;
    if last.rss_kb > rss_bound {
        failures.push(format!(
            "resident memory grew from {} KiB to {} KiB, past {} KiB (+{}%, and {} KiB of state caches)",
            first.rss_kb, last.rss_kb, rss_bound, args.rss_growth_percent, caches_kb
        ));
    }
    if last.fds > first.fds + MAX_FD_GROWTH {
        failures.push(format!(
            "open file descriptors grew from {} to {}",
            first.fds, last.fds
        ));
    }
    if let Some(most) = samples.iter().map(|sample| sample.connections).max()
        && most > MAX_CONNECTIONS
    {
        failures.push(format!(
            "{most} connections, past the pool's {MAX_CONNECTIONS}"
        ));
    }
    match caught_up {
        Some(after) => println!(
            "\ncaught up {:.1} s after the last append",
            after.as_secs_f64()
        ),
        None => failures.push(format!(
            "the lag was not back to 0 within {CATCH_UP:?} of the last append"
        )),
    }
    println!(
        "\nbounds after the first sample: RSS +{}% and the state caches ({} x 16 MiB), fds +{MAX_FD_GROWTH}, connections <= {MAX_CONNECTIONS}, lag 0 at the end",
        args.rss_growth_percent,
        SUBSCRIPTIONS.len()
    );
    if failures.is_empty() {
        println!("within bounds");
        Ok(())
    } else {
        bail!("out of bounds:\n{}", failures.join("\n"))
    }
}
