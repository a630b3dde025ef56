//! Containment figures: the `eventhost` binary under test beside a baseline binary (an
//! earlier build, `--baseline`), each run as an operator runs it, in the same run:
//!
//! 1. Idle: CPU and resident memory of the daemon with 3 subscriptions (three copies of the
//!    counter plugin, renamed) and with 300 (five copies of `hostile-spin`, 60 each, renamed),
//!    no events, on SQLite (default poll), over `--idle-seconds`.
//! 2. Contention: the counter plugin's commit-to-handler latency (append committed -> its
//!    count in state), alone and beside `hostile-spin` (60 subscriptions) and `hostile-loop`,
//!    which spin until their 1 s time limit on every batch, on PostgreSQL, with
//!    `--max-attempts 1` (one failed try parks an event). Then the time from SIGTERM to exit
//!    with the spinners busy.
//! 3. Notification flood: the daemon's CPU while 100,000 `NOTIFY eventhost` arrive (ten
//!    transactions of 10,000 distinct payloads), 300 idle subscriptions plus the counter, on
//!    PostgreSQL, against the same time idle.
//!
//! Run: `bash scripts/build-plugins.sh && cargo build --release -p eventhost && cargo run
//! --release -p eventhost-bench --bin containment -- --baseline PATH/TO/OLD/eventhost`.
//! Without `--baseline` only the build under test is measured.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Build, Daemon, Server, TempDir, cells, header, millis, percentile,
    rename_plugin, target_dir,
};
use sqlx::{PgPool, SqlitePool};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    build: Build,
    /// An earlier build to measure beside it.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Seconds each idle measurement lasts.
    #[arg(long, default_value_t = 20)]
    idle_seconds: u64,
    /// Latency samples of the counter alone.
    #[arg(long, default_value_t = 40)]
    samples: usize,
    /// Latency samples of the counter beside the spinning plugins.
    #[arg(long, default_value_t = 10)]
    contended_samples: usize,
    #[command(flatten)]
    server: Server,
}

/// Longest wait for one event to be counted before the sample is given up.
const LATENCY_TIMEOUT: Duration = Duration::from_secs(120);

/// The spinning plugins' time limit.
const SPIN_SIDECAR: &str = "[limits]\ntime_per_batch_ms = 1000\n";

struct Components {
    counter: Vec<u8>,
    spin: Vec<u8>,
    spin_loop: Vec<u8>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dist = args.build.dist();
    let read = |relative: &str| {
        let path = dist.join(relative);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (bash scripts/build-plugins.sh)",
                path.display()
            )
        })
    };
    let components = Components {
        counter: read("plugins/counter.wasm")?,
        spin: read("hostile/hostile-spin.wasm")?,
        spin_loop: read("hostile/hostile-loop.wasm")?,
    };
    let under_test = match &args.build.eventhost {
        Some(path) => path.clone(),
        None => target_dir()?.join("release/eventhost"),
    };
    let mut builds = Vec::new();
    if let Some(baseline) = &args.baseline {
        builds.push(("baseline", baseline.clone()));
    }
    builds.push(("this build", under_test));
    for (_, binary) in &builds {
        if !binary.is_file() {
            bail!("no eventhost binary at {}", binary.display());
        }
    }
    let temp = TempDir::new("containment")?;
    let mut figures: Vec<Vec<Figure>> = Vec::new();
    for (label, binary) in &builds {
        eprintln!("measuring {label}: {}", binary.display());
        let dir = temp.0.join(label.replace(' ', "-"));
        figures.push(measure(&args, binary, &components, &dir).await?);
    }
    print_table(&args, &builds, &figures);
    Ok(())
}

/// One measured value, or why there is none.
#[derive(Debug, Clone)]
struct Figure {
    name: String,
    value: Option<f64>,
    unit: &'static str,
    note: String,
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value: Some(value),
            unit,
            note: String::new(),
        }
    }

    fn missing(name: impl Into<String>, note: String) -> Self {
        Self {
            name: name.into(),
            value: None,
            unit: "",
            note,
        }
    }

    fn shown(&self) -> String {
        match self.value {
            Some(value) if self.unit == "%" => format!("{value:.1}%"),
            Some(value) => format!("{value:.1} {}", self.unit),
            None => self.note.clone(),
        }
    }
}

async fn measure(
    args: &Args,
    binary: &Path,
    components: &Components,
    dir: &Path,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let cache = dir.join("cache");

    // 1. Idle.
    for (label, folder_files) in [
        ("3", idle_few(components)?),
        ("300", idle_many(components)?),
    ] {
        let folder = dir.join(format!("idle-{label}"));
        write_folder(&folder, &folder_files)?;
        let database = format!(
            "sqlite://{}",
            dir.join(format!("idle-{label}.db")).display()
        );
        let subscriptions: i64 = if label == "3" { 3 } else { 300 };
        let mut daemon = Daemon::start(binary, &database, &folder, &cache, dir, &[])?;
        let db = Db::Sqlite(SqlitePool::connect_lazy(&database)?);
        until_running(&db, &mut daemon, subscriptions).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = daemon
            .cpu_over(Duration::from_secs(args.idle_seconds))
            .await?;
        figures.push(Figure::new(
            format!("idle CPU, {label} subscriptions (SQLite)"),
            cpu * 100.0,
            "%",
        ));
        figures.push(Figure::new(
            format!("idle RSS, {label} subscriptions"),
            daemon.rss_kb()? as f64 / 1024.0,
            "MB",
        ));
        daemon.stop(Duration::from_secs(30)).await?;
    }

    // 2. Contention, on PostgreSQL.
    for contended in [false, true] {
        let database = BenchDatabase::create(&args.server.database_url).await?;
        let folder = dir.join(format!("latency-{contended}"));
        let mut files = vec![("counter.wasm".to_owned(), components.counter.clone())];
        if contended {
            files.push(("spin.wasm".to_owned(), components.spin.clone()));
            files.push(("spin.toml".to_owned(), SPIN_SIDECAR.as_bytes().to_vec()));
            files.push(("loop.wasm".to_owned(), components.spin_loop.clone()));
            files.push(("loop.toml".to_owned(), SPIN_SIDECAR.as_bytes().to_vec()));
        }
        write_folder(&folder, &files)?;
        let mut daemon = Daemon::start(
            binary,
            &database.url,
            &folder,
            &cache,
            dir,
            &["--max-attempts", "1"],
        )?;
        let db = Db::Postgres(PgPool::connect_lazy(&database.url)?);
        until_running(&db, &mut daemon, if contended { 62 } else { 1 }).await?;
        let samples = if contended {
            args.contended_samples
        } else {
            args.samples
        };
        let label = if contended {
            "counter beside 61 spinning subscriptions"
        } else {
            "counter alone"
        };
        match latencies(&db, samples).await? {
            Ok(mut latencies) => {
                latencies.sort();
                for p in [50, 99] {
                    figures.push(Figure::new(
                        format!("commit to handler p{p}, {label} (PostgreSQL)"),
                        millis(percentile(&latencies, p)),
                        "ms",
                    ));
                }
            }
            Err(why) => {
                for p in [50, 99] {
                    figures.push(Figure::missing(
                        format!("commit to handler p{p}, {label} (PostgreSQL)"),
                        why.clone(),
                    ));
                }
            }
        }
        if contended {
            let parked = db.counter_parked().await?;
            figures.push(Figure::new(
                "counter events parked beside the spinners",
                parked as f64,
                "",
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let took = daemon.stop(Duration::from_secs(120)).await?;
            figures.push(Figure::new(
                "SIGTERM to exit, spinners busy",
                millis(took),
                "ms",
            ));
        } else {
            daemon.stop(Duration::from_secs(30)).await?;
        }
        db.close().await;
        database.drop_it().await?;
    }

    // 3. Notification flood, on PostgreSQL.
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let folder = dir.join("flood");
    let mut files = idle_many(components)?;
    files.push(("counter.wasm".to_owned(), components.counter.clone()));
    write_folder(&folder, &files)?;
    let mut daemon = Daemon::start(binary, &database.url, &folder, &cache, dir, &[])?;
    let pg = PgPool::connect_lazy(&database.url)?;
    let db = Db::Postgres(pg.clone());
    until_running(&db, &mut daemon, 301).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(5);
    let idle = daemon.cpu_over(window).await?;
    let before = daemon.cpu_seconds()?;
    let started = Instant::now();
    for round in 0..10 {
        sqlx::query(
            "SELECT pg_notify('eventhost', ($1 * 10000 + g)::text) FROM generate_series(1, 10000) AS g",
        )
        .bind(round)
        .execute(&pg)
        .await
        .context("send notifications")?;
    }
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let flooded = (daemon.cpu_seconds()? - before) / started.elapsed().as_secs_f64();
    figures.push(Figure::new(
        "CPU, 300 idle subscriptions, 5 s (PostgreSQL)",
        idle * 100.0,
        "%",
    ));
    figures.push(Figure::new(
        "CPU, same, 100,000 notifications in those 5 s",
        flooded * 100.0,
        "%",
    ));
    daemon.stop(Duration::from_secs(30)).await?;
    db.close().await;
    database.drop_it().await?;
    Ok(figures)
}

/// The daemon's database, read and written with plain SQL as an application or an operator
/// would: the bench never migrates it, so a baseline build finds only its own schema.
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    async fn subscriptions(&self) -> Result<i64> {
        let count = match self {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM subscriptions")
                    .fetch_one(pool)
                    .await
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM eventhost.subscriptions")
                    .fetch_one(pool)
                    .await
            }
        };
        // Before the daemon made its schema, there is nothing.
        Ok(count.unwrap_or(0))
    }

    fn postgres(&self) -> Result<&PgPool> {
        match self {
            Db::Postgres(pool) => Ok(pool),
            Db::Sqlite(_) => bail!("this measurement runs on PostgreSQL"),
        }
    }

    /// Appends item `n` through `eventhost.append()`, as an application does.
    async fn append_item(&self, n: u64) -> Result<()> {
        let events = serde_json::json!([{ "event_type": "item.added", "payload": { "n": n } }]);
        sqlx::query("SELECT * FROM eventhost.append('item', $1, 0, $2)")
            .bind(format!("i-{n}"))
            .bind(events)
            .execute(self.postgres()?)
            .await?;
        Ok(())
    }

    async fn counted(&self) -> Result<u64> {
        let value: Option<String> = sqlx::query_scalar(
            "SELECT value FROM eventhost.state WHERE namespace = 'counter.all' AND key = 'count'",
        )
        .fetch_optional(self.postgres()?)
        .await?;
        Ok(value.and_then(|value| value.parse().ok()).unwrap_or(0))
    }

    async fn counter_parked(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM eventhost.parked WHERE subscription = 'counter.all'",
        )
        .fetch_one(self.postgres()?)
        .await?)
    }

    async fn close(self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Appends one event at a time and times until the counter has counted it; `Err` says why
/// the samples stopped (a sample that timed out, or the counter's event parked).
async fn latencies(db: &Db, samples: usize) -> Result<Result<Vec<Duration>, String>> {
    let mut latencies = Vec::with_capacity(samples);
    for n in 1..=samples as u64 {
        db.append_item(n).await?;
        let appended = Instant::now();
        loop {
            if db.counted().await? >= n {
                latencies.push(appended.elapsed());
                break;
            }
            if db.counter_parked().await? > 0 {
                return Ok(Err(format!("parked at sample {n}")));
            }
            if appended.elapsed() > LATENCY_TIMEOUT {
                return Ok(Err(format!("> {} s", LATENCY_TIMEOUT.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Ok(latencies))
}

/// Waits until `expected` subscriptions are defined and the daemon has settled on them.
async fn until_running(db: &Db, daemon: &mut Daemon, expected: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        daemon.check_running()?;
        if db.subscriptions().await? >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{expected} subscriptions not running within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` copies of `component` whose plugin name `name` is renamed `{prefix}NNN` (of the
/// same length): distinct plugins, with distinct hashes.
fn copies(
    component: &[u8],
    name: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<(String, Vec<u8>)>> {
    (0..count)
        .map(|n| {
            let copy = format!("{prefix}{n:03}");
            let bytes = rename_plugin(component, name.as_bytes(), copy.as_bytes())?;
            Ok((format!("{copy}.wasm"), bytes))
        })
        .collect()
}

/// Three copies of the counter: three plugins of one subscription each.
fn idle_few(components: &Components) -> Result<Vec<(String, Vec<u8>)>> {
    copies(&components.counter, "counter", "cnt-", 3)
}

/// Five copies of `hostile-spin`: 300 subscriptions, idle without events.
fn idle_many(components: &Components) -> Result<Vec<(String, Vec<u8>)>> {
    copies(&components.spin, "hostile-spin", "hostile-s", 5)
}

fn write_folder(folder: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(folder)?;
    for (name, bytes) in files {
        std::fs::write(folder.join(name), bytes)?;
    }
    Ok(())
}

fn print_table(args: &Args, builds: &[(&str, PathBuf)], figures: &[Vec<Figure>]) {
    println!(
        "containment: idle {} s per case; {} samples alone, {} beside the spinners; 2-core machine",
        args.idle_seconds, args.samples, args.contended_samples
    );
    let mut titles = vec!["figure"];
    titles.extend(builds.iter().map(|(label, _)| *label));
    if builds.len() == 2 {
        titles.push("this / baseline");
    }
    header(&titles);
    let rows = figures.last().map_or(0, Vec::len);
    for row in 0..rows {
        let mut values = vec![figures[figures.len() - 1][row].name.clone()];
        values.extend(figures.iter().map(|run| run[row].shown()));
        if let [baseline, current] = figures {
            values.push(match (baseline[row].value, current[row].value) {
                (Some(old), Some(new)) if old > 0.0 => format!("{:.2}x", new / old),
                _ => "-".to_owned(),
            });
        }
        cells(&values);
    }
}
