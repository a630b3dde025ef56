//! The real `eventhost` binary as a test fixture: a [`Deployment`] (plugins folder, compile
//! cache, log folder, database) from which [`Daemon`]s are started, signalled and killed, and
//! the command line is run.
//!
//! Every wait has a deadline, a spawned daemon never outlives its guard, and a failing test
//! prints the daemon's log (its stderr, `RUST_LOG=info`). Include it beside `mod support;` with
//! `#[path = "support/daemon.rs"] mod daemon;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::fmt::Display;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PgDatabase, SqliteFile};

/// A database of its own for one test: a fresh PostgreSQL database or SQLite file.
pub enum TestDatabase {
    Postgres(PgDatabase),
    Sqlite(SqliteFile),
}

impl TestDatabase {
    pub async fn postgres() -> Self {
        Self::Postgres(PgDatabase::create().await)
    }

    pub fn sqlite() -> Self {
        Self::Sqlite(SqliteFile::create())
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(database) => &database.url,
            Self::Sqlite(file) => &file.url,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "PostgreSQL",
            Self::Sqlite(_) => "SQLite",
        }
    }
}

/// The `eventhost` binary cargo built for these tests.
pub const EVENTHOST: &str = env!("CARGO_BIN_EXE_eventhost");

/// How often waits look again.
const POLL: Duration = Duration::from_millis(25);

/// At most this much of a log is printed when a test fails.
const LOG_TAIL_BYTES: usize = 24_000;

/// A built component under `dist/` (e.g. `plugins/counter.wasm`), or a failure saying how to
/// build it.
pub fn dist(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(relative);
    assert!(
        path.is_file(),
        "missing plugin {}: build the plugins first with `bash scripts/build-plugins.sh`",
        path.display()
    );
    path
}

/// The directory cargo builds into: `CARGO_TARGET_DIR` when absolute, else the ancestor of
/// this test binary that holds cargo's `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .expect("the test binary lives in a cargo target directory")
}

/// The compile cache every test's daemon and `eventhost test` run share.
pub fn compile_cache() -> PathBuf {
    target_dir().join("daemon-e2e-cache")
}

/// What an operator deploys: a plugins folder and a database, plus this test's log folder.
/// The compile cache is shared by all tests (artifacts are keyed by the wasm's hash and
/// written atomically), so only the first daemon pays for compilation.
pub struct Deployment {
    pub database_url: String,
    root: PathBuf,
    plugins: PathBuf,
    cache: PathBuf,
    logs: PathBuf,
    runs: usize,
    /// Environment variables the daemon and the command line get (the sinks' secrets).
    env: Vec<(String, String)>,
}

impl Deployment {
    pub fn new(database_url: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "eventhost-daemon-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let plugins = root.join("plugins");
        let logs = root.join("logs");
        std::fs::create_dir_all(&plugins).expect("create the plugins folder");
        std::fs::create_dir_all(&logs).expect("create the log folder");
        Self {
            database_url: database_url.to_owned(),
            root,
            plugins,
            cache: compile_cache(),
            logs,
            runs: 0,
            env: Vec::new(),
        }
    }

    /// Gives the daemons started from now on an empty compile cache of their own: each
    /// plugin's first load compiles it.
    pub fn own_cache(&mut self) {
        self.cache = self.root.join("cache");
    }

    /// Sets an environment variable for every daemon and command started from now on.
    pub fn env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Writes the daemon's configuration file and returns its path, for `--config`.
    pub fn config(&self, toml: &str) -> String {
        let path = self.root.join("eventhost.toml");
        std::fs::write(&path, toml).expect("write the configuration file");
        path.display().to_string()
    }

    /// Copies a component from `dist/` into the plugins folder as `file_name`, replacing any
    /// file of that name.
    pub fn install(&self, dist_relative: &str, file_name: &str) {
        let target = self.plugins.join(file_name);
        std::fs::copy(dist(dist_relative), &target).unwrap_or_else(|error| {
            panic!("cannot copy the plugin to {}: {error}", target.display())
        });
    }

    /// Where `file_name` is (or would be) in the plugins folder.
    pub fn plugin_path(&self, file_name: &str) -> PathBuf {
        self.plugins.join(file_name)
    }

    /// Writes the operator's sidecar `NAME.toml` for the plugin file `NAME.wasm`.
    pub fn sidecar(&self, plugin_file: &str, toml: &str) {
        let path = self.plugins.join(plugin_file).with_extension("toml");
        std::fs::write(&path, toml).expect("write the sidecar");
    }

    /// Starts `eventhost run` on this deployment, polling every 50 ms, with `extra` arguments.
    pub fn start(&mut self, extra: &[&str]) -> Daemon {
        self.start_polling_every(50, extra)
    }

    /// Starts `eventhost run` with a fallback poll of `poll_ms` and `extra` arguments. Its
    /// HTTP API listens on a free loopback port ([`Daemon::api`]) unless `extra` says `--http`.
    pub fn start_polling_every(&mut self, poll_ms: u64, extra: &[&str]) -> Daemon {
        self.runs += 1;
        let http: &[&str] = if extra.contains(&"--http") {
            &[]
        } else {
            &["--http", "127.0.0.1:0"]
        };
        let log = self.logs.join(format!("daemon-{:03}.log", self.runs));
        let stderr = File::create(&log).expect("create the daemon log");
        let child = Command::new(EVENTHOST)
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("run")
            .arg("--plugins")
            .arg(&self.plugins)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--poll-interval-ms")
            .arg(poll_ms.to_string())
            .args(http)
            .args(extra)
            .env_remove("EVENTHOST_HTTP")
            .env_remove("EVENTHOST_API_TOKEN")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {EVENTHOST}: {error}"));
        Daemon {
            child: Some(child),
            log,
            started: Instant::now(),
        }
    }

    /// Runs one `eventhost` command against this deployment's database, with the default log
    /// filter an operator gets.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let output = tokio::process::Command::new(EVENTHOST)
            .arg("--database-url")
            .arg(&self.database_url)
            .args(args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run {EVENTHOST}: {error}"));
        CliOutput::new(args, output)
    }

    /// [`Deployment::cli`], failing the test unless the command succeeds.
    pub async fn cli_ok(&self, args: &[&str]) -> CliOutput {
        let output = self.cli(args).await;
        assert!(output.status.success(), "{output}");
        output
    }

    /// `subscriptions list --json`, one JSON object per subscription.
    pub async fn subscriptions(&self) -> Vec<serde_json::Value> {
        self.cli_ok(&["subscriptions", "list", "--json"])
            .await
            .json_lines()
    }

    /// `plugins list --json`, each record with its file's name (the last part of its path).
    pub async fn plugins(&self) -> Vec<(String, serde_json::Value)> {
        self.cli_ok(&["plugins", "list", "--json"])
            .await
            .json_lines()
            .into_iter()
            .map(|record| {
                let file = record["file"].as_str().unwrap_or_default();
                let name = Path::new(file)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, record)
            })
            .collect()
    }

    /// `parked list --json`, one JSON object per parked event.
    pub async fn parked(&self) -> Vec<serde_json::Value> {
        self.cli_ok(&["parked", "list", "--json"])
            .await
            .json_lines()
    }

    /// Appends `n` events `item.added`, each to a stream of its own, one command each.
    pub async fn append_items(&self, n: usize) {
        for i in 0..n {
            self.cli_ok(&[
                "append",
                "--aggregate-type",
                "item",
                "--aggregate-id",
                &format!("i-{i}-{}", uuid::Uuid::new_v4().simple()),
                "--event-type",
                "item.added",
            ])
            .await;
        }
    }

    /// How many events the counter plugin (`dist/plugins/counter.wasm`) has counted.
    pub async fn counted(&self) -> u64 {
        let output = self.cli(&["state", "counter.all"]).await;
        if !output.status.success() {
            // Before the daemon has defined the subscription, nothing is counted.
            assert!(output.stderr.contains("not found"), "{output}");
            return 0;
        }
        output
            .json_lines()
            .iter()
            .find(|entry| entry["key"] == "count")
            .and_then(|entry| entry["value"].as_u64())
            .unwrap_or(0)
    }

    /// Where this deployment keeps its files (written to a temporary file per test).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn runs(&self) -> usize {
        self.runs
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the daemon logs of this test are kept in {}",
                self.logs.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A finished command: its arguments, exit status and output.
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn new(args: &[&str], output: Output) -> Self {
        Self {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}\n{self}"))
            })
            .collect()
    }
}

impl Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "`eventhost {}` exited with {}",
            self.args.join(" "),
            self.status
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// A running `eventhost run`. Dropping it kills the process (SIGKILL) if it still runs; if
/// the test is failing, its log is printed.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon was started").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, wherever it was; returns once it is reaped.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("send SIGKILL to the daemon");
            child.wait().expect("reap the daemon");
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the daemon to exit; fails the test if it takes longer than `timeout`.
    pub async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {timeout:?} (pid {})",
                self.pid()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `signal`, then waits for the daemon to exit; returns its status and how long
    /// the exit took.
    pub async fn stop_with(&mut self, signal: &str, timeout: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        self.signal(signal);
        let status = self.exit_status(timeout).await;
        (status, sent.elapsed())
    }

    /// Stops the daemon with SIGTERM and fails the test unless it exits 0 within 10 s.
    pub async fn stop(&mut self) {
        let (status, _) = self.stop_with("TERM", Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "the daemon exited with {status} after SIGTERM"
        );
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("poll the daemon")
    }

    /// Fails the test if the daemon is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit_status() {
            panic!("the daemon exited unexpectedly with {status}");
        }
    }

    /// Waits until the log holds `needle` at least `count` times.
    pub async fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) {
        let what = format!("{count} log line(s) with {needle:?}");
        let log = self.log.clone();
        self.wait_until(&what, timeout, || async {
            let seen = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(needle)
                .count();
            if seen >= count {
                Ok(())
            } else {
                Err(format!("{seen} seen"))
            }
        })
        .await;
    }

    /// Waits until `probe` returns `Ok`, failing the test (with the probe's last `Err`, which
    /// says what it saw) if the daemon exits or `timeout` passes first.
    pub async fn wait_until<T, F, Fut>(&mut self, what: &str, timeout: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "the daemon exited with {status} while waiting for {what} (last seen: {last})"
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (last seen: {last})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the counter plugin of `deployment` has counted exactly `n` events.
    pub async fn until_counted(&mut self, deployment: &Deployment, n: u64) {
        self.wait_until("the counter's count", Duration::from_secs(30), || async {
            let counted = deployment.counted().await;
            if counted == n {
                Ok(())
            } else {
                Err(format!("count {counted}"))
            }
        })
        .await;
    }

    /// The base URL of the daemon's HTTP API (`http://127.0.0.1:PORT`), once it listens.
    pub async fn api(&mut self) -> String {
        const LISTENING: &str = "HTTP API listening";
        self.wait_for_log(LISTENING, 1, Duration::from_secs(30))
            .await;
        let log = self.log();
        let address = log
            .lines()
            .find(|line| line.contains(LISTENING))
            .and_then(|line| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("address="))
            })
            .unwrap_or_else(|| panic!("no address in the daemon's log:\n{log}"));
        format!("http://{address}")
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail = log.len().saturating_sub(LOG_TAIL_BYTES);
            let start = (tail..log.len())
                .find(|&index| log.is_char_boundary(index))
                .unwrap_or(log.len());
            eprintln!(
                "--- daemon log {} (last {} bytes) ---\n{}",
                self.log.display(),
                log.len() - start,
                &log[start..]
            );
        }
    }
}
