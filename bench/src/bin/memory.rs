//! Resident memory of the `eventhost` daemon on PostgreSQL, by what it runs: no plugin (the
//! baseline, measured in the same run), the five example plugins (three Rust, one Python,
//! one JavaScript), each language alone, and 50 Rust plugins (the counter, byte-patched to
//! 50 distinct names). Each case starts the release daemon in a fresh database, waits until
//! every plugin runs, and samples `/proc/<pid>/smaps` after it has been idle for a few
//! seconds: once after start-up, once after 200 orders went through every subscription.
//! Cold = an empty compile cache (the plugins are compiled in this start-up), warm = the
//! cache the cold start filled.
//!
//! The resident set is split by what backs it: anonymous memory (the heap, guest linear
//! memories in use, stacks), compiled plugin code (the cache's `.cwasm` files, mapped),
//! guest memory images wasmtime built in memory (`memfd`), and other files (the binary and
//! its libraries).
//!
//! Run: `bash scripts/build-plugins.sh && cargo build --release -p eventhost && cargo run
//! --release -p eventhost-bench --bin memory`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use eventhost_bench::{
    BenchDatabase, Build, Daemon, Server, TempDir, cells, header, plugins_folder, rename_plugin,
};
use eventhost_store::{PgStore, PluginRecords, StoreLimits, SubscriptionStore};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Resident memory of the daemon by the plugins it runs")]
struct Args {
    /// Rust plugins in the many-plugins case.
    #[arg(long, default_value_t = 50)]
    plugins: usize,
    /// Seconds the daemon idles before each sample.
    #[arg(long, default_value_t = 3)]
    idle_seconds: u64,
    #[command(flatten)]
    build: Build,
    #[command(flatten)]
    server: Server,
}

/// The example plugins, as `dist/plugins/` names them.
const EXAMPLES: [&str; 5] = [
    "counter",
    "order-totals",
    "shipping-policy",
    "order-totals-py",
    "order-totals-js",
];

/// Orders (each created, then paid) appended before the second sample.
const ORDERS: u64 = 200;

/// How long start-up (with cold compiles) and a catch-up may take.
const PATIENCE: Duration = Duration::from_secs(300);

/// Resident kB of the daemon by what backs it.
#[derive(Debug, Default, Clone, Copy)]
struct Resident {
    total: u64,
    anonymous: u64,
    compiled: u64,
    images: u64,
    files: u64,
}

impl Resident {
    /// Sums `Rss:` of each mapping of `/proc/<pid>/smaps` by the mapping's backing.
    fn of(pid: u32) -> Result<Self> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .with_context(|| format!("read /proc/{pid}/smaps"))?;
        let mut resident = Self::default();
        let mut backing = Backing::Anonymous;
        for line in smaps.lines() {
            if let Some(kb) = line.strip_prefix("Rss:") {
                let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse()?;
                resident.total += kb;
                match backing {
                    Backing::Anonymous => resident.anonymous += kb,
                    Backing::Compiled => resident.compiled += kb,
                    Backing::Image => resident.images += kb,
                    Backing::File => resident.files += kb,
                }
            } else if let Some(path) = mapping_path(line) {
                backing = if path.ends_with(".cwasm") {
                    Backing::Compiled
                } else if path.starts_with("/memfd:") {
                    Backing::Image
                } else if path.starts_with('/') {
                    Backing::File
                } else {
                    // Unnamed, [heap], [stack].
                    Backing::Anonymous
                };
            }
        }
        Ok(resident)
    }
}

enum Backing {
    Anonymous,
    Compiled,
    /// wasmtime's copy-on-write images of guest memories, built in memory.
    Image,
    File,
}

/// The path of a mapping's header line (`start-end perms offset dev inode [path]`), `Some("")`
/// for an unnamed one; `None` for the lines of fields under it.
fn mapping_path(line: &str) -> Option<&str> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    if !range.contains('-') || !range.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    let _ = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    Some(fields.next().unwrap_or("").trim())
}

/// One case's two samples.
struct Case {
    label: String,
    idle: Resident,
    after_work: Resident,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = args.build.binary()?;
    let temp = TempDir::new("memory")?;
    let dist = args.build.dist();

    let mut folders: Vec<(String, PathBuf)> = vec![
        (
            "no plugin".to_owned(),
            plugins_folder(&temp.0.join("none"), Some(&dist), &[])?,
        ),
        (
            "counter (Rust)".to_owned(),
            plugins_folder(&temp.0.join("counter"), Some(&dist), &["counter"])?,
        ),
        (
            "order-totals-py (Python)".to_owned(),
            plugins_folder(&temp.0.join("python"), Some(&dist), &["order-totals-py"])?,
        ),
        (
            "order-totals-js (JavaScript)".to_owned(),
            plugins_folder(&temp.0.join("js"), Some(&dist), &["order-totals-js"])?,
        ),
        (
            "the five example plugins".to_owned(),
            plugins_folder(&temp.0.join("examples"), Some(&dist), &EXAMPLES)?,
        ),
    ];
    let many = temp.0.join("many/plugins");
    std::fs::create_dir_all(&many)?;
    let counter = std::fs::read(dist.join("plugins/counter.wasm"))
        .context("read counter.wasm (bash scripts/build-plugins.sh)")?;
    for n in 0..args.plugins {
        let name = format!("cnt-{n:03}");
        let bytes = rename_plugin(&counter, b"counter", name.as_bytes())?;
        std::fs::write(many.join(format!("{name}.wasm")), bytes)?;
    }
    folders.push((format!("{} Rust plugins (counter)", args.plugins), many));

    let mut cases = Vec::new();
    for (label, folder) in &folders {
        let cache = folder.with_file_name("cache");
        for warmth in ["cold", "warm"] {
            let case = measure(&args, &binary, folder, &cache, &temp.0).await;
            let (idle, after_work) =
                case.with_context(|| format!("{label}, {warmth} compile cache"))?;
            eprintln!("{label} ({warmth}): idle {idle:?}, after work {after_work:?}");
            cases.push(Case {
                label: format!("{label}, {warmth}"),
                idle,
                after_work,
            });
        }
    }
    report(&args, &cases);
    Ok(())
}

/// Starts the daemon on `folder` in a fresh database; samples it idle after start-up and
/// idle after `ORDERS` orders went through every subscription.
async fn measure(
    args: &Args,
    binary: &Path,
    folder: &Path,
    cache: &Path,
    dir: &Path,
) -> Result<(Resident, Resident)> {
    let database = BenchDatabase::create(&args.server.database_url).await?;
    let outcome = async {
        let mut daemon = Daemon::start(
            binary,
            &database.url,
            folder,
            cache,
            dir,
            &["--http", "off"],
        )?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .context("connect to the bench database")?;
        let store = PgStore::connect(&database.url, StoreLimits::default()).await?;
        let plugins = eventhost_dispatch::plugins::plugin_files(folder)?.len();
        wait_until_running(&store, &mut daemon, plugins).await?;
        let idle_for = Duration::from_secs(args.idle_seconds);
        tokio::time::sleep(idle_for).await;
        let idle = Resident::of(daemon.child.id())?;
        for n in 0..ORDERS {
            append_order(&pool, n).await?;
        }
        wait_caught_up(&store, &mut daemon).await?;
        tokio::time::sleep(idle_for).await;
        let after_work = Resident::of(daemon.child.id())?;
        daemon.stop(Duration::from_secs(30)).await?;
        store.close().await;
        pool.close().await;
        Ok((idle, after_work))
    }
    .await;
    database.drop_it().await?;
    outcome
}

async fn wait_until_running(store: &PgStore, daemon: &mut Daemon, plugins: usize) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        daemon.check_running()?;
        let running = store
            .plugin_records()
            .await
            .map(|records| {
                records
                    .iter()
                    .filter(|record| record.status == "running")
                    .count()
            })
            .unwrap_or(0);
        if running == plugins {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{running} of {plugins} plugins running after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_caught_up(store: &PgStore, daemon: &mut Daemon) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        daemon.check_running()?;
        let mut lag = 0;
        for subscription in store.subscriptions().await? {
            lag += store.lag(&subscription.name).await?;
        }
        if lag == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lag {lag} after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Order `n`: created, then paid, as an application appends them.
async fn append_order(pool: &PgPool, n: u64) -> Result<()> {
    let order = format!("o-{n}");
    let created = serde_json::json!([{"event_type": "order.created", "payload": {
        "customer": format!("c-{}", n % 17),
        "lines": [{"sku": "sku", "quantity": 1 + n % 3, "unit_price_cents": 100 + n % 50}],
    }}]);
    let paid = serde_json::json!([{"event_type": "order.paid", "payload": {}}]);
    for (expected, events) in [(0, created), (1, paid)] {
        sqlx::query("SELECT * FROM eventhost.append('order', $1, $2, $3)")
            .bind(&order)
            .bind(expected)
            .bind(events)
            .execute(pool)
            .await
            .with_context(|| format!("append order {n}"))?;
    }
    Ok(())
}

fn report(args: &Args, cases: &[Case]) {
    println!(
        "\nResident memory of the daemon (PostgreSQL, --http off), MB; idle {} s before each sample",
        args.idle_seconds
    );
    println!("after start-up, then after {ORDERS} orders went through every subscription\n");
    header(&[
        "plugins, compile cache",
        "idle RSS",
        "anonymous",
        "compiled code",
        "memory images",
        "binary, libraries",
        "after work RSS",
        "anonymous",
        "compiled code",
        "over no plugin (after work)",
    ]);
    let baseline = cases
        .iter()
        .filter(|case| case.label.starts_with("no plugin"))
        .map(|case| case.after_work.total)
        .min()
        .unwrap_or(0);
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    for case in cases {
        cells(&[
            case.label.clone(),
            mb(case.idle.total),
            mb(case.idle.anonymous),
            mb(case.idle.compiled),
            mb(case.idle.images),
            mb(case.idle.files),
            mb(case.after_work.total),
            mb(case.after_work.anonymous),
            mb(case.after_work.compiled),
            format!(
                "{:+.1}",
                (case.after_work.total as f64 - baseline as f64) / 1024.0
            ),
        ]);
    }
}
