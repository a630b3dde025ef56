//! Several daemons on one PostgreSQL database: catch-up of a backlog through the example
//! plugins (counter, order-totals, shipping-policy) by one daemon and by two sharing the
//! subscriptions, measured in the same run; and how long a subscription waits after its
//! daemon dies (`kill -9`: the survivor on the same machine sees the process gone) or stops
//! answering (`SIGSTOP`, as a lost machine: its leases run out), until the survivor has
//! handled an event appended meanwhile.
//!
//! Not part of the test suite. Run: `bash scripts/build-plugins.sh && cargo build --release
//! -p eventhost && cargo run --release -p eventhost-bench --bin failover -- [--events 200000]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Build, Daemon, Server, TempDir, cells, header, millis, percentile,
    plugins_folder, thousands,
};
use eventhost_store::{PgStore, StoreLimits, SubscriptionStore};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Events in the backlog (each an `order.created` of a stream of its own).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Kills (and pauses) measured.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The daemons' lease TTL, in seconds.
    #[arg(long, default_value_t = 3)]
    lease_ttl: u64,
    #[command(flatten)]
    build: Build,
    #[command(flatten)]
    server: Server,
}

const PLUGINS: [&str; 3] = ["counter", "order-totals", "shipping-policy"];
const SUBSCRIPTIONS: [&str; 3] = [
    "counter.all",
    "order-totals.totals",
    "shipping-policy.shipments",
];
const WAIT: Duration = Duration::from_secs(300);

/// What a run needs: the binary, the plugins folder, a scratch directory.
struct Setup {
    binary: PathBuf,
    plugins: PathBuf,
    temp: TempDir,
    lease_ttl: String,
}

impl Setup {
    fn start(&self, url: &str) -> Result<Daemon> {
        Daemon::start(
            &self.binary,
            url,
            &self.plugins,
            &self.temp.0.join("cache"),
            &self.temp.0,
            &["--http", "off", "--lease-ttl", &self.lease_ttl],
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = args.build.binary()?;
    let temp = TempDir::new("failover")?;
    let plugins = plugins_folder(&temp.0, args.build.dist.as_deref(), &PLUGINS)?;
    let setup = Setup {
        binary,
        plugins,
        temp,
        lease_ttl: args.lease_ttl.to_string(),
    };

    println!(
        "Catch-up of {} events through {} subscriptions (lease TTL {} s)\n",
        thousands(args.events as f64),
        SUBSCRIPTIONS.len(),
        args.lease_ttl
    );
    header(&[
        "daemons",
        "catch-up s",
        "events/s (x3 subscriptions)",
        "vs 1 daemon",
    ]);
    let mut baseline = None;
    for daemons in [1, 2] {
        let database = BenchDatabase::create(&args.server.database_url).await?;
        let outcome = catch_up(&setup, &database.url, daemons, args.events).await;
        database.drop_it().await?;
        let took = outcome?;
        let rate = args.events as f64 / took.as_secs_f64();
        let base = *baseline.get_or_insert(rate);
        cells(&[
            daemons.to_string(),
            format!("{:.1}", took.as_secs_f64()),
            thousands(rate),
            format!("{:.2}x", rate / base),
        ]);
    }

    println!("\nTakeover: from the failure until the survivor handled an event appended then\n");
    header(&["failure", "rounds", "p50 ms", "max ms"]);
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = takeovers(&setup, &database.url, args.rounds).await;
    database.drop_it().await?;
    for (failure, mut times) in outcome? {
        times.sort();
        cells(&[
            failure.to_owned(),
            times.len().to_string(),
            format!("{:.0}", millis(percentile(&times, 50))),
            format!("{:.0}", millis(*times.last().context("no round")?)),
        ]);
    }
    Ok(())
}

async fn store(url: &str) -> Result<PgStore> {
    PgStore::connect(url, StoreLimits::default())
        .await
        .context("open the store")
}

/// Subscription to the pid of the daemon that holds its lease.
async fn owners(store: &PgStore) -> Result<BTreeMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.name, d.pid FROM eventhost.subscriptions s
         JOIN eventhost.daemons d ON d.id = s.owner
         WHERE s.lease_expires_at > now() AND d.expires_at > now()",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, pid)| (name, u32::try_from(pid).unwrap_or(0)))
        .collect())
}

/// Waits until every subscription is held, by each of `pids` at least once.
async fn until_shared(store: &PgStore, daemons: &mut [Daemon]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        for daemon in daemons.iter_mut() {
            daemon.check_running()?;
        }
        let owners = owners(store).await?;
        let everyone = daemons
            .iter()
            .all(|daemon| owners.values().any(|pid| *pid == daemon.child.id()));
        if owners.len() == SUBSCRIPTIONS.len() && everyone {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the daemons did not share the subscriptions: {owners:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_caught_up(store: &PgStore) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut lag = 0;
        for name in SUBSCRIPTIONS {
            lag += store.lag(name).await?;
        }
        if lag == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not caught up: lag {lag}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `events` orders created, each a stream of its own, in one statement, and a wake-up.
async fn fill(store: &PgStore, from: u64, events: u64) -> Result<()> {
    sqlx::query(
        "INSERT INTO eventhost.events
             (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload)
         SELECT pg_current_xact_id(), gen_random_uuid(), 'order', 'o-' || g, 1, 'order.created',
                jsonb_build_object('customer', 'c-' || (g % 100), 'lines',
                    jsonb_build_array(jsonb_build_object(
                        'sku', 'pen', 'quantity', 1 + g % 3, 'unit_price_cents', 100 + g % 50)))
         FROM generate_series($1, $2) AS g",
    )
    .bind(i64::try_from(from)?)
    .bind(i64::try_from(from + events - 1)?)
    .execute(store.pool())
    .await?;
    sqlx::query("SELECT pg_notify('eventhost', '')")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Starts `count` daemons on an empty database, waits until they share the subscriptions,
/// writes the backlog and times its catch-up.
async fn catch_up(setup: &Setup, url: &str, count: usize, events: u64) -> Result<Duration> {
    let mut daemons = Vec::new();
    for _ in 0..count {
        daemons.push(setup.start(url)?);
    }
    let store = store(url).await?;
    until_shared(&store, &mut daemons).await?;
    let started = Instant::now();
    fill(&store, 1, events).await?;
    until_caught_up(&store).await?;
    let took = started.elapsed();
    for daemon in daemons {
        daemon.stop(Duration::from_secs(10)).await?;
    }
    Ok(took)
}

/// Two daemons; in each round, the one holding more subscriptions is killed (or paused) and
/// an event appended; timed until every subscription handled it. The failed daemon is then
/// replaced.
async fn takeovers(
    setup: &Setup,
    url: &str,
    rounds: usize,
) -> Result<Vec<(&'static str, Vec<Duration>)>> {
    let store = store(url).await?;
    let mut daemons = vec![setup.start(url)?, setup.start(url)?];
    let mut next = 1;
    let mut results = Vec::new();
    for failure in ["kill -9 (same machine)", "SIGSTOP (lease expiry)"] {
        let mut times = Vec::new();
        for _ in 0..rounds {
            until_shared(&store, &mut daemons).await?;
            until_caught_up(&store).await?;
            let owners = owners(&store).await?;
            let busiest = (0..daemons.len())
                .max_by_key(|index| {
                    let pid = daemons[*index].child.id();
                    owners.values().filter(|owner| **owner == pid).count()
                })
                .context("two daemons")?;
            let mut victim = daemons.swap_remove(busiest);
            let failed = Instant::now();
            if failure.starts_with("kill") {
                victim.child.kill()?;
                victim.child.wait()?;
            } else {
                signal(&victim, "STOP")?;
            }
            fill(&store, next, 1).await?;
            next += 1;
            until_caught_up(&store).await?;
            times.push(failed.elapsed());
            if failure.starts_with("SIGSTOP") {
                signal(&victim, "CONT")?;
            }
            drop(victim);
            daemons.push(setup.start(url)?);
        }
        results.push((failure, times));
    }
    for daemon in daemons {
        daemon.stop(Duration::from_secs(10)).await?;
    }
    Ok(results)
}

fn signal(daemon: &Daemon, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(daemon.child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} failed");
    }
    Ok(())
}
