//! Hot reload and start-up figures (docs/architecture.md, figures we aim for), measured on the daemon's own pieces
//! (`Watcher` + `Registry` + `Dispatcher`, wired as `eventhost run` wires them) in-process,
//! over an SQLite store in a temporary directory.
//!
//! 1. Reload latency: plugin `versioned` (releases `a` and `b`, `dist/hostile/hostile-versioned-
//!    {a,b}.wasm`, each batch sets state `tag` to its release) is written to a temporary name in
//!    the plugins folder and renamed into place; the time from the rename to the first batch
//!    committed by the new release (its tag seen in state, with an `item` event appended every
//!    few ms so batches keep coming) is one sample. Warm: both releases are already in the
//!    compile cache. Cold: every deployed file carries a unique custom section, so its hash is
//!    new to the cache and it is compiled on the reload path.
//! 2. Start-up with 50 plugins: 50 copies of the counter component, each byte-patched to a
//!    distinct plugin name (`counter` -> `cnt-NNN`, same length, also in its debug strings),
//!    so 50 distinct plugins with 50 distinct hashes. Each start-up runs in a child process
//!    (a clean RSS): cold = empty cache directory, warm = the cache the cold run filled.
//!    Measured: runtime creation to every plugin installed with its subscription started, and
//!    VmRSS after a second of idling.
//!
//! Run: `bash scripts/build-plugins.sh && cargo run --release -p eventhost-bench --bin reload`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use eventhost::daemon::{self, Daemon, DaemonConfig};
use eventhost_bench::{TempDir, dist_dir, millis, percentile, rename_plugin};
use eventhost_dispatch::shutdown::ShutdownTrigger;
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_runtime::{Limits, Runtime, RuntimeConfig};
use eventhost_store::{self as store, EventStore, Store, SubscriptionStore};
use serde_json::json;
use tokio::sync::oneshot;

#[derive(Debug, Parser)]
struct Args {
    /// Swaps measured per cache mode.
    #[arg(long, default_value_t = 10)]
    reloads: usize,
    /// Plugins in the start-up measurement.
    #[arg(long, default_value_t = 50)]
    plugins: usize,
    /// Where the built components are (`dist/` of the workspace).
    #[arg(long)]
    dist: Option<PathBuf>,
    /// Internal: run one start-up in this process: plugins folder, cache dir, database file.
    #[arg(long, num_args = 3, hide = true)]
    startup_child: Option<Vec<PathBuf>>,
}

const SUBSCRIPTION: &str = "versioned.all";
/// The longest one swap may take before the run gives up.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Between appended events while waiting for the new release.
const TICK: Duration = Duration::from_millis(5);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(child) = &args.startup_child {
        return runtime.block_on(startup_child(&child[0], &child[1], &child[2]));
    }
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let dist = dist_dir(args.dist.as_deref());
    let read = |relative: &str| {
        let path = dist.join(relative);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (build it: bash scripts/build-plugins.sh)",
                path.display()
            )
        })
    };
    let release_a = read("hostile/hostile-versioned-a.wasm")?;
    let release_b = read("hostile/hostile-versioned-b.wasm")?;
    let counter = read("plugins/counter.wasm")?;
    let temp = TempDir::new("reload")?;

    println!("reload benchmark: the daemon's watcher + registry + dispatcher in-process, SQLite");
    println!(
        "components: hostile-versioned-a.wasm {} bytes, hostile-versioned-b.wasm {} bytes, counter.wasm {} bytes (mostly debug info)",
        release_a.len(),
        release_b.len(),
        counter.len()
    );
    println!();

    let warm = reload_run(
        &temp.0.join("warm"),
        &release_a,
        &release_b,
        false,
        args.reloads,
    )
    .await
    .context("warm reload run")?;
    let cold = reload_run(
        &temp.0.join("cold"),
        &release_a,
        &release_b,
        true,
        args.reloads,
    )
    .await
    .context("cold reload run")?;
    println!(
        "reload latency: rename into place -> first batch by the new release ({} swaps each)",
        args.reloads
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "cache", "p50 ms", "max ms", "min ms"
    );
    for (label, samples) in [
        ("warm (artifact cached)", &warm),
        ("cold (compiled on reload)", &cold),
    ] {
        println!(
            "{label:<28} {:>10.1} {:>10.1} {:>10.1}",
            millis(percentile(samples, 50)),
            millis(*samples.last().expect("samples")),
            millis(samples[0]),
        );
    }
    println!(
        "(includes the watcher's {} ms debounce and a {} ms poll of the state)",
        eventhost_dispatch::plugins::DEBOUNCE.as_millis(),
        TICK.as_millis()
    );
    println!();

    // Start-up with many plugins, each start in a child process.
    let folder = temp.0.join("startup/plugins");
    let cache = temp.0.join("startup/cache");
    std::fs::create_dir_all(&folder)?;
    for n in 0..args.plugins {
        let name = format!("cnt-{n:03}");
        let bytes = rename_plugin(&counter, b"counter", name.as_bytes())?;
        std::fs::write(folder.join(format!("{name}.wasm")), bytes)?;
    }
    let database = temp.0.join("startup/x.db");
    let cold_start = startup(&folder, &cache, &database)?;
    let warm_start = startup(&folder, &cache, &database)?;
    println!(
        "start-up with {} plugins (distinct names and hashes, {} bytes each), each in a fresh process",
        args.plugins,
        counter.len()
    );
    println!(
        "{:<28} {:>12} {:>14}",
        "cache", "all loaded s", "VmRSS idle MB"
    );
    for (label, (seconds, rss)) in [
        ("cold (empty cache dir)", cold_start),
        ("warm (cache filled)", warm_start),
    ] {
        println!("{label:<28} {seconds:>12.2} {:>14.1}", rss as f64 / 1024.0);
    }
    println!();

    println!("targets (docs/architecture.md)");
    println!(
        "{:<52} {:>10} {:>12} {:>6}",
        "figure", "target", "measured", ""
    );
    let verdict = |pass: bool| if pass { "pass" } else { "MISS" };
    let warm_p50 = percentile(&warm, 50);
    let warm_max = *warm.last().expect("samples");
    let cold_max = *cold.last().expect("samples");
    let size_mb = release_a.len() as f64 / 1e6;
    for (figure, target, measured, pass) in [
        (
            format!("hot reload, warm cache, p50 ({size_mb:.1} MB file)"),
            "< 1 s".to_owned(),
            format!("{:.0} ms", millis(warm_p50)),
            warm_p50 < Duration::from_secs(1),
        ),
        (
            format!("hot reload, warm cache, max ({size_mb:.1} MB file)"),
            "< 1 s".to_owned(),
            format!("{:.0} ms", millis(warm_max)),
            warm_max < Duration::from_secs(1),
        ),
        (
            format!("hot reload, cold (compile), p50 ({size_mb:.1} MB file)"),
            "< 1 s".to_owned(),
            format!("{:.0} ms", millis(percentile(&cold, 50))),
            percentile(&cold, 50) < Duration::from_secs(1),
        ),
        (
            format!("hot reload, cold (compile), max ({size_mb:.1} MB file)"),
            "< 1 s".to_owned(),
            format!("{:.0} ms", millis(cold_max)),
            cold_max < Duration::from_secs(1),
        ),
        (
            format!("start-up, {} plugins, warm cache", args.plugins),
            "< 1 s".to_owned(),
            format!("{:.2} s", warm_start.0),
            warm_start.0 < 1.0,
        ),
        (
            format!("resident, {} idle plugins (warm start)", args.plugins),
            "< 200 MB".to_owned(),
            format!("{:.1} MB", warm_start.1 as f64 / 1024.0),
            warm_start.1 < 200 * 1024,
        ),
    ] {
        println!(
            "{figure:<52} {target:>10} {measured:>12} {:>6}",
            verdict(pass)
        );
    }
    Ok(())
}

/// Runs the daemon's pieces on a fresh folder holding release `a`, then swaps releases
/// `reloads` times; returns the sorted latencies.
async fn reload_run(
    dir: &Path,
    release_a: &[u8],
    release_b: &[u8],
    cold: bool,
    reloads: usize,
) -> anyhow::Result<Vec<Duration>> {
    let folder = dir.join("plugins");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&folder)?;
    let target = folder.join("versioned.wasm");
    std::fs::write(&target, release_a)?;
    let database = format!("sqlite://{}", dir.join("x.db").display());
    let store = store::connect(&database).await?;
    let runtime = Runtime::new(RuntimeConfig::daemon(&cache))?;
    if !cold {
        // Both releases in the compile cache before anything is measured.
        for bytes in [release_a, release_b] {
            runtime
                .load("warm-up", bytes.to_vec(), Limits::default())
                .await?;
        }
    }
    drop(runtime);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut config = DaemonConfig::new(database.clone(), &folder);
    config.cache_dir = cache.clone();
    let daemon = tokio::spawn(daemon::run(
        config,
        async {
            let _ = stopped.await;
        },
        std::future::pending(),
    ));
    // Release `a` serving first.
    let mut n = 0u64;
    wait_for_tag(&store, "a", &mut n).await?;

    let mut samples = Vec::with_capacity(reloads);
    for i in 0..reloads {
        let (tag, bytes) = if i % 2 == 0 {
            ("b", release_b)
        } else {
            ("a", release_a)
        };
        let mut bytes = bytes.to_vec();
        if cold {
            add_custom_section(&mut bytes, format!("bench-{}-{i}", uuid::Uuid::new_v4()));
        }
        let temporary = folder.join("versioned.wasm.partial");
        std::fs::write(&temporary, &bytes)?;
        let renamed = Instant::now();
        std::fs::rename(&temporary, &target)?;
        wait_for_tag(&store, tag, &mut n)
            .await
            .with_context(|| format!("swap {i} to release {tag}"))?;
        samples.push(renamed.elapsed());
    }
    let _ = stop.send(());
    daemon.await??;
    samples.sort();
    Ok(samples)
}

/// Appends an `item` event every [`TICK`] until the last committed batch carries `tag`.
async fn wait_for_tag(store: &Store, tag: &str, n: &mut u64) -> anyhow::Result<()> {
    let wanted = serde_json::to_string(tag)?;
    let started = Instant::now();
    loop {
        if store.state_get(SUBSCRIPTION, "tag").await?.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        if started.elapsed() > RELOAD_TIMEOUT {
            bail!("release {tag} did not serve within {RELOAD_TIMEOUT:?}");
        }
        *n += 1;
        let stream = StreamId::new("item", format!("i-{n}"));
        let event = NewEvent::new("item.added", json!({ "n": *n }));
        store
            .append(&stream, ExpectedVersion::NoStream, &[event])
            .await?;
        tokio::time::sleep(TICK).await;
    }
}

/// Runs this binary as a child doing one start-up; returns (seconds, VmRSS kB).
fn startup(folder: &Path, cache: &Path, database: &Path) -> anyhow::Result<(f64, u64)> {
    let output = Command::new(std::env::current_exe()?)
        .arg("--startup-child")
        .args([folder, cache, database])
        .output()?;
    if !output.status.success() {
        bail!(
            "the start-up child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("STARTUP "))
        .context("the start-up child printed no result")?;
    let mut fields = line.split_whitespace();
    let seconds = fields.next().context("seconds")?.parse()?;
    let rss = fields.next().context("rss")?.parse()?;
    Ok((seconds, rss))
}

/// One start-up, as `eventhost run` does it: store, runtime, dispatcher, every plugin of the
/// folder.
async fn startup_child(folder: &Path, cache: &Path, database: &Path) -> anyhow::Result<()> {
    let mut config = DaemonConfig::new(format!("sqlite://{}", database.display()), folder);
    config.cache_dir = cache.to_path_buf();
    store::connect(&config.database_url).await?;
    let started = Instant::now();
    let (_loading, shutdown) = ShutdownTrigger::new();
    let daemon = Daemon::start(config, shutdown).await?;
    let elapsed = started.elapsed();
    let expected = eventhost_dispatch::plugins::plugin_files(folder)?.len();
    let loaded = daemon.plugins().count();
    if loaded != expected {
        bail!("{loaded} of {expected} plugins loaded");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = vm_rss_kb()?;
    println!("STARTUP {} {rss}", elapsed.as_secs_f64());
    daemon.run(async {}, std::future::pending()).await;
    Ok(())
}

fn vm_rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Appends a custom section to a component: same behaviour, a new hash.
fn add_custom_section(bytes: &mut Vec<u8>, name: String) {
    let section = wasm_encoder::CustomSection {
        name: name.into(),
        data: b"cache-buster".as_slice().into(),
    };
    wasm_encoder::ComponentSection::append_to_component(&section, bytes);
}
