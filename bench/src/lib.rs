//! What the benchmarks share: a database of their own, the cargo target directory, the
//! dispatcher run with one probed handler, and the printed tables.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use eventhost_dispatch::shutdown::ShutdownTrigger;
use eventhost_dispatch::{self as dispatch, DispatchConfig, Dispatchable, Handler, InstallError};
use eventhost_domain::Event;
use eventhost_runtime::{Effects, HandleError, PluginInfo, Reads};
use eventhost_store::{Checkpoint, PgStore, Store, SubscriptionStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How often a wait for a checkpoint looks again.
const CHECKPOINT_POLL: Duration = Duration::from_millis(1);

/// A decorator that records when each batch finished (right after the inner handler
/// returned) and, when asked, when each event id was handled. It does not change what the
/// handler does.
pub struct Probe {
    inner: Arc<dyn Handler>,
    handled: watch::Sender<u64>,
    log: Mutex<ProbeLog>,
}

#[derive(Default)]
struct ProbeLog {
    batches: Vec<BatchDone>,
    /// Per event id, when its batch finished; only when `track_ids`.
    seen: HashMap<Uuid, Instant>,
    track_ids: bool,
}

/// One handled batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchDone {
    /// When the inner handler returned.
    pub done: Instant,
    pub size: usize,
    /// The inner handler's time (for the plugin: instantiation, host calls, guest code).
    pub handle: Duration,
}

impl Probe {
    pub fn new(inner: Arc<dyn Handler>, track_ids: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            handled: watch::channel(0).0,
            log: Mutex::new(ProbeLog {
                track_ids,
                ..ProbeLog::default()
            }),
        })
    }

    /// The durable subscription the dispatcher runs for this handler.
    pub fn subscription(&self) -> String {
        let info = self.inner.info();
        format!("{}.{}", info.name, info.subscriptions[0].name)
    }

    fn record(&self, batch: &[Event], started: Instant, done: Instant) {
        let mut log = self.log.lock().expect("probe log poisoned");
        log.batches.push(BatchDone {
            done,
            size: batch.len(),
            handle: done - started,
        });
        if log.track_ids {
            for event in batch {
                log.seen.entry(event.id).or_insert(done);
            }
        }
        drop(log);
        self.handled
            .send_modify(|handled| *handled += batch.len() as u64);
    }

    /// Events handled so far, as a channel to wait on.
    pub fn handled(&self) -> watch::Receiver<u64> {
        self.handled.subscribe()
    }

    pub fn batches(&self) -> Vec<BatchDone> {
        self.log.lock().expect("probe log poisoned").batches.clone()
    }

    pub fn seen(&self, id: &Uuid) -> Option<Instant> {
        self.log
            .lock()
            .expect("probe log poisoned")
            .seen
            .get(id)
            .copied()
    }
}

impl Handler for Probe {
    fn info(&self) -> &PluginInfo {
        self.inner.info()
    }

    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        async move {
            let started = Instant::now();
            let outcome = self.inner.handle(subscription, batch, reads).await;
            if outcome.is_ok() {
                self.record(batch, started, Instant::now());
            }
            outcome
        }
        .boxed()
    }
}

/// `eventhost_dispatch::run` with one handler, in a task, until [`Dispatcher::stop`].
pub struct Dispatcher {
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), InstallError>>,
}

impl Dispatcher {
    pub fn start(store: &PgStore, handler: Arc<dyn Handler>, max_batch_size: Option<u32>) -> Self {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let store = Store::Postgres(store.clone());
        let config = DispatchConfig::for_store(&store);
        let plugins = vec![Dispatchable {
            handler,
            max_batch_size,
        }];
        let task = tokio::spawn(dispatch::run(store, plugins, config, shutdown));
        Self { trigger, task }
    }

    /// Whether the dispatcher ended on its own (it failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn stop(self) -> Result<()> {
        self.trigger.trigger();
        self.task
            .await
            .context("the dispatcher panicked")?
            .context("the dispatcher failed")
    }
}

/// Waits until `name`'s committed checkpoint is `head` (the row may not exist yet), for at
/// most `limit`.
pub async fn wait_for_checkpoint(
    store: &PgStore,
    name: &str,
    head: Checkpoint,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(record) = store.subscription(name).await?
            && record.checkpoint == head
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not reach the head {head}");
        }
        tokio::time::sleep(CHECKPOINT_POLL).await;
    }
}

/// Logs to stderr, `warn` and above unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// A table's header row and its rule.
pub fn header(titles: &[&str]) {
    cells(
        &titles
            .iter()
            .map(|title| title.to_string())
            .collect::<Vec<_>>(),
    );
    let rule: Vec<String> = titles
        .iter()
        .map(|title| "-".repeat(title.len().max(8)))
        .collect();
    println!(
        "|{}|",
        rule.iter()
            .map(|dashes| format!("-{dashes}-"))
            .collect::<Vec<_>>()
            .join("|")
    );
}

pub fn cells(values: &[String]) {
    println!("| {} |", values.join(" | "));
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
    {
        return Ok(dir);
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .context("cannot find the cargo target directory; set CARGO_TARGET_DIR")
}

/// After a backlog was written: refreshes the planner's statistics (as autovacuum would in
/// production) and checks that every one of the `total` events is stored.
pub async fn settle_backlog(store: &PgStore, total: u64) -> Result<()> {
    sqlx::raw_sql("VACUUM ANALYZE eventhost.events")
        .execute(store.pool())
        .await
        .context("vacuum the backlog")?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventhost.events WHERE pg_column_size(payload) > 0",
    )
    .fetch_one(store.pool())
    .await
    .context("count the backlog")?;
    ensure!(
        stored as u64 == total,
        "{stored} events stored, {total} appended"
    );
    Ok(())
}

/// The PostgreSQL server a benchmark measures on, as every benchmark takes it
/// (`#[command(flatten)]`).
#[derive(Debug, clap::Args)]
pub struct Server {
    /// The PostgreSQL server; the benchmark makes a database of its own there and drops it
    /// after.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://root@127.0.0.1:5432/test"
    )]
    pub database_url: String,
}

/// A database created on the server for this run.
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    /// Where the benchmark connects.
    pub url: String,
}

impl BenchDatabase {
    pub async fn create(admin_url: &str) -> Result<Self> {
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {admin_url} (set DATABASE_URL)"))?;
        let name = format!("eventhost_bench_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .context("create the benchmark database")?;
        let options = PgConnectOptions::from_str(admin_url)?.database(&name);
        let url = options.to_url_lossy().to_string();
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    pub async fn drop_it(self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .context("drop the benchmark database")?;
        Ok(())
    }
}

/// `bytes` with every occurrence of `from` replaced by `to` (same length): a plugin's name in
/// its data segment, and the same word in debug strings, where it is harmless. So one
/// component becomes many distinct plugins, each with a hash of its own.
pub fn rename_plugin(bytes: &[u8], from: &[u8], to: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        from.len() == to.len(),
        "a same-length name keeps the binary valid"
    );
    let mut out = bytes.to_vec();
    let mut replaced = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            replaced += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    ensure!(replaced > 0, "no occurrence of the plugin name to patch");
    Ok(out)
}

/// The `p`th percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("eventhost-{label}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `eventhost run` in a child process (its log at `RUST_LOG=warn` in a file of `dir`), with
/// its CPU time and resident memory from `/proc`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(
        binary: &Path,
        database_url: &str,
        plugins: &Path,
        cache: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let log = dir.join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(binary)
            .arg("--database-url")
            .arg(database_url)
            .arg("run")
            .arg("--plugins")
            .arg(plugins)
            .arg("--cache-dir")
            .arg(cache)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child, log })
    }

    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("the daemon exited with {status}:\n{log}");
        }
        Ok(())
    }

    /// CPU time (user + system, every thread) the daemon has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("a /proc stat line")?
            .1
            .split_whitespace()
            .collect();
        // Fields 14 and 15 of stat(5), counted after the command name's parenthesis.
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / clock_ticks()?)
    }

    /// The share of one core the daemon used over `window`.
    pub async fn cpu_over(&self, window: Duration) -> Result<f64> {
        let before = self.cpu_seconds()?;
        tokio::time::sleep(window).await;
        Ok((self.cpu_seconds()? - before) / window.as_secs_f64())
    }

    pub fn rss_kb(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    }

    /// SIGTERM, then waits for the exit; returns how long it took.
    pub async fn stop(mut self, limit: Duration) -> Result<Duration> {
        let sent = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        while self.child.try_wait()?.is_none() {
            if sent.elapsed() > limit {
                self.child.kill()?;
                self.child.wait()?;
                bail!("the daemon did not stop within {limit:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(sent.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> Result<f64> {
    let output = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

/// The `eventhost` binary under test: `given`, or release/eventhost in the cargo target
/// directory.
pub fn release_binary(given: Option<&Path>) -> Result<PathBuf> {
    let binary = match given {
        Some(path) => path.to_path_buf(),
        None => target_dir()?.join("release/eventhost"),
    };
    if !binary.is_file() {
        bail!(
            "no eventhost binary at {} (cargo build --release -p eventhost)",
            binary.display()
        );
    }
    Ok(binary)
}

/// The build a benchmark that starts the release daemon runs, as each takes it
/// (`#[command(flatten)]`).
#[derive(Debug, clap::Args)]
pub struct Build {
    /// The build under test [default: release/eventhost in the cargo target directory].
    #[arg(long)]
    pub eventhost: Option<PathBuf>,
    /// Where the built components are (`dist/` of the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
}

impl Build {
    /// The `eventhost` binary under test (see [`release_binary`]).
    pub fn binary(&self) -> Result<PathBuf> {
        release_binary(self.eventhost.as_deref())
    }

    /// Where the built components are (see [`dist_dir`]).
    pub fn dist(&self) -> PathBuf {
        dist_dir(self.dist.as_deref())
    }
}

/// Where the built components are: `given`, or the workspace's `dist/`.
pub fn dist_dir(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist"))
}

/// A plugins folder in `dir` holding the example plugins `names`, copied from `dist` (the
/// workspace's `dist/` unless given).
pub fn plugins_folder(dir: &Path, dist: Option<&Path>, names: &[&str]) -> Result<PathBuf> {
    let dist = dist_dir(dist);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for plugin in names {
        let source = dist.join(format!("plugins/{plugin}.wasm"));
        std::fs::copy(&source, plugins.join(format!("{plugin}.wasm"))).with_context(|| {
            format!(
                "cannot copy {} (bash scripts/build-plugins.sh)",
                source.display()
            )
        })?;
    }
    Ok(plugins)
}
