//! Hot reload through the real daemon (docs/architecture.md, Lifecycle): the plugin file is
//! replaced, broken, deleted and added while the daemon runs. Releases `a`, `b` and `c` of plugin `versioned`
//! write their tag into state key `seen/<event id>` for each event they handle, so an effect
//! lost or repeated across a swap shows as a missing key or a key holding two tags, and which
//! release handled an event stays visible. Also: a changed filter rebuilds the subscription
//! however the new release arrives, the watcher ignores the daemon's own reads, and a signal
//! that lands while the daemon loads a file still stops it.
//!
//! Uses `dist/hostile/hostile-versioned-{a,b,c}.wasm`, built by `bash scripts/build-plugins.sh`;
//! a missing one fails the test. Reload latencies are printed (`--nocapture` shows them).

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use daemon::{Daemon, Deployment, TestDatabase};
use eventhost_dispatch::plugins::DEBOUNCE;
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{self as store, EventStore, PluginRecords, Store, SubscriptionStore};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const SUBSCRIPTION: &str = "versioned.all";
const PLUGIN_FILE: &str = "versioned.wasm";
const STARTUP: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(30);
/// The longest one swap may take to serve, compile included.
const RELOAD: Duration = Duration::from_secs(20);
/// How long a stopped subscription is watched to make sure it handles nothing.
const QUIET: Duration = Duration::from_secs(1);

/// A release of plugin `versioned`: `a` and `b` subscribe to `item` events, `c` to `item`
/// and `thing` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    A,
    B,
    C,
}

impl Release {
    fn tag(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::C => "c",
        }
    }

    fn version(self) -> String {
        format!("1.0.0-{}", self.tag())
    }

    fn bytes(self) -> Vec<u8> {
        let path = daemon::dist(&format!("hostile/hostile-versioned-{}.wasm", self.tag()));
        std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    }
}

/// How a plugin file is written into the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Write {
    /// To a temporary name, then renamed into place: the documented safe way.
    Rename,
    /// Truncated and rewritten in place, in one write (what `cp` does).
    InPlace,
    /// Truncated and rewritten in place in two halves, with a pause longer than the watcher's
    /// debounce between them: the daemon sees the half-written file first.
    InPieces,
}

fn plugin_path(deployment: &Deployment) -> PathBuf {
    deployment.path("plugins").join(PLUGIN_FILE)
}

/// Writes `bytes` as the plugin file, `how` an operator or a copy tool would.
async fn deploy(deployment: &Deployment, bytes: &[u8], how: Write) {
    let target = plugin_path(deployment);
    let done = |result: std::io::Result<()>| {
        result.unwrap_or_else(|error| panic!("cannot write {}: {error}", target.display()))
    };
    match how {
        Write::Rename => {
            // Not `*.wasm`: the daemon ignores the file until it is renamed into place.
            let temporary = target.with_extension("wasm.partial");
            done(std::fs::write(&temporary, bytes));
            done(std::fs::rename(&temporary, &target));
        }
        Write::InPlace => done(std::fs::write(&target, bytes)),
        Write::InPieces => {
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            let mut file = std::fs::File::create(&target).expect("create the plugin file");
            done(file.write_all(first).and_then(|()| file.sync_data()));
            tokio::time::sleep(DEBOUNCE * 3).await;
            done(file.write_all(rest));
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Appends `n` `item` events, each in a stream of its own; returns their ids.
async fn append_items(store: &Store, n: usize) -> Vec<Uuid> {
    append(store, "item", n).await
}

async fn append(store: &Store, aggregate_type: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = StreamId::new(aggregate_type, Uuid::new_v4().simple().to_string());
        let event = NewEvent::new(format!("{aggregate_type}.added"), json!({}));
        let appended = store
            .append(&stream, ExpectedVersion::NoStream, &[event])
            .await
            .expect("append an event");
        ids.extend(appended.events.iter().map(|event| event.id));
    }
    ids
}

/// Appends `item` events until `stop`, one to three per transaction, with now and then a
/// `thing` event the subscription does not match; returns the ids of the `item` events.
async fn append_items_until(store: Store, stop: Arc<AtomicBool>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let size = rand::rng().random_range(1..=3);
        let events: Vec<NewEvent> = (0..size)
            .map(|i| NewEvent::new("item.added", json!({"n": n, "i": i})))
            .collect();
        let stream = StreamId::new("item", format!("i-{n}"));
        let appended = store
            .append(&stream, ExpectedVersion::NoStream, &events)
            .await
            .expect("append items");
        ids.extend(appended.events.iter().map(|event| event.id));
        if n.is_multiple_of(7) {
            append(&store, "thing", 1).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ids
}

async fn count(store: &Store) -> u64 {
    support::count_state(store, SUBSCRIPTION).await
}

/// The tag of the release that committed the last batch.
async fn last_tag(store: &Store) -> Option<String> {
    let value = store
        .state_get(SUBSCRIPTION, "tag")
        .await
        .expect("read the tag");
    value.map(|text| serde_json::from_str(&text).expect("the tag is a JSON string"))
}

/// Every `seen/<event id>` entry: which releases handled which event.
async fn seen(store: &Store) -> BTreeMap<Uuid, String> {
    let mut seen = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .state_scan(SUBSCRIPTION, "seen/", after.as_deref(), 1_000)
            .await
            .expect("scan the state");
        let Some((last, _)) = page.last() else {
            return seen;
        };
        after = Some(last.clone());
        for (key, value) in page {
            let id = key["seen/".len()..].parse().expect("seen/<uuid>");
            let tags: String = serde_json::from_str(&value).expect("tags are a JSON string");
            seen.insert(id, tags);
        }
    }
}

/// Waits until the plugin has counted `expected` events and none is left to handle.
async fn wait_handled(daemon: &mut Daemon, store: &Store, expected: u64, timeout: Duration) {
    let what = format!("count {expected} and lag 0");
    daemon
        .wait_until(&what, timeout, || async {
            let seen = (
                count(store).await,
                store.lag(SUBSCRIPTION).await.expect("lag"),
            );
            if seen == (expected, 0) {
                Ok(())
            } else {
                Err(format!("(count, lag) = {seen:?}"))
            }
        })
        .await;
}

/// Checks that every event of `ids` had its effect applied exactly once and that nothing else
/// was handled: one single-tag `seen` entry per id, no other entry, `count` their number.
/// Returns how many events each release handled.
async fn assert_each_handled_once(store: &Store, ids: &[Uuid]) -> BTreeMap<String, usize> {
    let seen = seen(store).await;
    let missing: Vec<&Uuid> = ids.iter().filter(|id| !seen.contains_key(id)).collect();
    let repeated: Vec<(&Uuid, &String)> = seen.iter().filter(|(_, tags)| tags.len() != 1).collect();
    let unexpected = seen.len() + missing.len() - ids.len();
    assert!(
        missing.is_empty() && repeated.is_empty() && unexpected == 0,
        "{} events appended: {} lost (e.g. {:?}), {} handled more than once (e.g. {:?}), \
         {unexpected} unexpected entries",
        ids.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        repeated.len(),
        &repeated[..repeated.len().min(5)],
    );
    assert_eq!(count(store).await, ids.len() as u64, "the count");
    let mut by_tag = BTreeMap::new();
    for tags in seen.values() {
        *by_tag.entry(tags.clone()).or_default() += 1;
    }
    by_tag
}

/// Checks that the events of `ids` were handled by `release` alone.
async fn assert_handled_by(store: &Store, ids: &[Uuid], release: Release, what: &str) {
    let seen = seen(store).await;
    let tags: Vec<Option<&String>> = ids.iter().map(|id| seen.get(id)).collect();
    assert!(
        tags.iter()
            .all(|tags| tags.is_some_and(|tags| tags == release.tag())),
        "{what}: expected each handled once by release {:?}, got tags {tags:?}",
        release
    );
}

/// The `plugins list --json` row of the plugin file.
async fn plugin_row(deployment: &Deployment) -> Option<Value> {
    deployment
        .plugins()
        .await
        .into_iter()
        .find(|(name, _)| name == PLUGIN_FILE)
        .map(|(_, row)| row)
}

/// Waits until `plugins list --json` shows the plugin file with `status`, holding `bytes`,
/// while `running` is the version that runs (or ran); returns the row.
async fn wait_for_row(
    daemon: &mut Daemon,
    deployment: &Deployment,
    status: &str,
    bytes: &[u8],
    running: Release,
) -> Value {
    let hash = sha256(bytes);
    let what = format!(
        "plugins list: {status}, {} running, hash {}",
        running.version(),
        &hash[..12]
    );
    daemon
        .wait_until(&what, RELOAD, || async {
            let row = plugin_row(deployment).await;
            match &row {
                Some(row)
                    if row["status"] == status
                        && row["version"] == running.version()
                        && row["name"] == "versioned"
                        && row["hash"] == hash.as_str() =>
                {
                    Ok(row.clone())
                }
                _ => Err(format!("{row:?}")),
            }
        })
        .await
}

/// The daemon's subscription as `subscriptions list --json` shows it.
async fn subscription_row(deployment: &Deployment) -> Option<Value> {
    deployment
        .subscriptions()
        .await
        .into_iter()
        .find(|row| row["name"] == SUBSCRIPTION)
}

/// Starts the daemon and waits until it has loaded its plugins folder.
async fn start(deployment: &mut Deployment) -> Daemon {
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("eventhost is running", 1, STARTUP)
        .await;
    daemon
}

// ---------------------------------------------------------------------------------------------
// 1. Fifty swaps under continuous appends.

const SWAPS: usize = 50;

/// One replacement of the plugin file, and how long it took to serve.
struct Swap {
    release: Release,
    how: Write,
    written_at: DateTime<Utc>,
    /// From the file written to `plugins list` showing the new version running.
    to_running: Duration,
    /// From the file written to the first batch committed by the new version.
    to_first_batch: Duration,
}

/// Writes `release` into place and waits until it runs and has committed a batch (events keep
/// coming); measures both delays.
async fn swap(
    daemon: &mut Daemon,
    deployment: &Deployment,
    store: &Store,
    release: Release,
    how: Write,
) -> Swap {
    let bytes = release.bytes();
    let written_at = Utc::now();
    let started = Instant::now();
    deploy(deployment, &bytes, how).await;
    let file = plugin_path(deployment).display().to_string();
    let (mut to_running, mut to_first_batch) = (None, None);
    loop {
        if to_running.is_none() {
            let records = store.plugin_records().await.expect("plugin records");
            if records.iter().any(|record| {
                record.file == file
                    && record.status == "running"
                    && record.version.as_deref() == Some(&release.version())
            }) {
                to_running = Some(started.elapsed());
            }
        }
        if to_first_batch.is_none() && last_tag(store).await.as_deref() == Some(release.tag()) {
            to_first_batch = Some(started.elapsed());
        }
        if let (Some(to_running), Some(to_first_batch)) = (to_running, to_first_batch) {
            return Swap {
                release,
                how,
                written_at,
                to_running,
                to_first_batch,
            };
        }
        daemon.assert_running();
        assert!(
            started.elapsed() < RELOAD,
            "release {release:?} written {how:?} was not serving after {RELOAD:?} \
             (running after {to_running:?}, first batch after {to_first_batch:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(min, median, p90, max)` in milliseconds.
fn summary(mut durations: Vec<Duration>) -> String {
    if durations.is_empty() {
        return "-".into();
    }
    durations.sort();
    let at = |q: f64| durations[((durations.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "min {:.0} / median {:.0} / p90 {:.0} / max {:.0} ms (n={})",
        ms(durations[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(durations[durations.len() - 1]),
        durations.len()
    )
}

/// From each file write to its "plugin running" line in the daemon's log (the first such line
/// is the initial load; each swap adds one).
fn logged_delays(log: &str, swaps: &[Swap]) -> Vec<(Write, Duration)> {
    let running: Vec<DateTime<Utc>> = log
        .lines()
        .filter(|line| line.contains("plugin running"))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    swaps
        .iter()
        .zip(running.iter().skip(1))
        .filter_map(|(swap, at)| Some((swap.how, (*at - swap.written_at).to_std().ok()?)))
        .collect()
}

fn print_latencies(kind: &str, swaps: &[Swap], log: &str) {
    let logged = logged_delays(log, swaps);
    for how in [Write::Rename, Write::InPlace, Write::InPieces] {
        let of = |pick: fn(&Swap) -> Duration| {
            swaps
                .iter()
                .filter(|swap| swap.how == how)
                .map(pick)
                .collect::<Vec<_>>()
        };
        let logged: Vec<Duration> = logged
            .iter()
            .filter(|(written, _)| *written == how)
            .map(|(_, delay)| *delay)
            .collect();
        eprintln!(
            "reload latency on {kind}, written {how:?}: to the daemon's \"plugin running\" log line \
             {}; to `plugins list` running {}; to the first batch by the new version {}",
            summary(logged),
            summary(of(|swap| swap.to_running)),
            summary(of(|swap| swap.to_first_batch)),
        );
    }
}

async fn plugin_swap_between_batches_loses_nothing(database: TestDatabase) {
    let started = Instant::now();
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    let mut daemon = start(&mut deployment).await;

    let stop = Arc::new(AtomicBool::new(false));
    let appending = tokio::spawn(append_items_until(store.clone(), Arc::clone(&stop)));
    let mut swaps = Vec::with_capacity(SWAPS);
    for n in 1..=SWAPS {
        let release = if n % 2 == 1 { Release::B } else { Release::A };
        let how = match n % 10 {
            3 => Write::InPlace,
            7 => Write::InPieces,
            _ => Write::Rename,
        };
        swaps.push(swap(&mut daemon, &deployment, &store, release, how).await);
        // Land the next swap at another point of a batch's life.
        let pause = rand::rng().random_range(0..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let ids = appending.await.expect("the appender finished");
    wait_handled(&mut daemon, &store, ids.len() as u64, SETTLE * 2).await;

    let by_tag = assert_each_handled_once(&store, &ids).await;
    let last = swaps.last().expect("swapped").release;
    eprintln!(
        "{SWAPS} swaps on {} ({} renamed, {} rewritten in place, {} in pieces) under appends: \
         {} item events, handled by release {by_tag:?}, {} files rejected on the way, {:.1}s",
        database.kind(),
        swaps
            .iter()
            .filter(|swap| swap.how == Write::Rename)
            .count(),
        swaps
            .iter()
            .filter(|swap| swap.how == Write::InPlace)
            .count(),
        swaps
            .iter()
            .filter(|swap| swap.how == Write::InPieces)
            .count(),
        ids.len(),
        daemon.log().matches("plugin file rejected").count(),
        started.elapsed().as_secs_f64(),
    );
    print_latencies(database.kind(), &swaps, &daemon.log());
    for release in [Release::A, Release::B] {
        assert!(
            by_tag.get(release.tag()).is_some_and(|n| *n > 0),
            "release {release:?} handled no event: {by_tag:?}"
        );
    }
    let row = plugin_row(&deployment).await.expect("a row for the plugin");
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["version"], last.version(), "{row}");
    assert_eq!(row["error"], Value::Null, "{row}");
    assert!(deployment.parked().await.is_empty(), "nothing is parked");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_swap_between_batches_loses_nothing_on_postgres() {
    plugin_swap_between_batches_loses_nothing(TestDatabase::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_swap_between_batches_loses_nothing_on_sqlite() {
    plugin_swap_between_batches_loses_nothing(TestDatabase::sqlite()).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid files.

async fn a_garbage_file_leaves_the_old_version_running(database: TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    let mut daemon = start(&mut deployment).await;
    let mut ids = append_items(&store, 10).await;
    wait_handled(&mut daemon, &store, 10, SETTLE).await;

    let garbage = b"this is not a WebAssembly component\n".repeat(100);
    let real = Release::B.bytes();
    let truncated = &real[..real.len() / 2];
    for (what, bytes) in [("garbage", &garbage[..]), ("half a component", truncated)] {
        deploy(&deployment, bytes, Write::InPlace).await;
        let row = wait_for_row(&mut daemon, &deployment, "rejected", bytes, Release::A).await;
        let error = row["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: the row says why: {row}");
        let more = append_items(&store, 5).await;
        ids.extend_from_slice(&more);
        wait_handled(&mut daemon, &store, ids.len() as u64, SETTLE).await;
        assert_handled_by(&store, &more, Release::A, &format!("after {what}")).await;
    }
    assert!(
        daemon.log().contains("keeps running"),
        "the log says the old version keeps running"
    );

    deploy(&deployment, &real, Write::InPlace).await;
    let row = wait_for_row(&mut daemon, &deployment, "running", &real, Release::B).await;
    assert_eq!(row["error"], Value::Null, "{row}");
    let more = append_items(&store, 5).await;
    ids.extend_from_slice(&more);
    wait_handled(&mut daemon, &store, ids.len() as u64, SETTLE).await;
    assert_handled_by(&store, &more, Release::B, "after a valid file").await;
    let by_tag = assert_each_handled_once(&store, &ids).await;
    assert_eq!(by_tag, BTreeMap::from([("a".into(), 20), ("b".into(), 5)]));
    daemon.stop().await;
}

#[tokio::test]
async fn a_garbage_file_leaves_the_old_version_running_on_postgres() {
    a_garbage_file_leaves_the_old_version_running(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn a_garbage_file_leaves_the_old_version_running_on_sqlite() {
    a_garbage_file_leaves_the_old_version_running(TestDatabase::sqlite()).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Removed files.

async fn deleting_then_re_adding_a_plugin_resumes_from_its_checkpoint(database: TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    let a = Release::A.bytes();
    deploy(&deployment, &a, Write::Rename).await;
    let mut daemon = start(&mut deployment).await;
    let before = append_items(&store, 10).await;
    wait_handled(&mut daemon, &store, 10, SETTLE).await;

    std::fs::remove_file(plugin_path(&deployment)).expect("delete the plugin file");
    wait_for_row(&mut daemon, &deployment, "removed", &a, Release::A).await;
    daemon
        .wait_until("the subscription stopped", SETTLE, || async {
            match subscription_row(&deployment).await {
                Some(row) if row["status"] == "stopped" => Ok(()),
                row => Err(format!("{row:?}")),
            }
        })
        .await;
    let meanwhile = append_items(&store, 7).await;
    tokio::time::sleep(QUIET).await;
    let row = subscription_row(&deployment)
        .await
        .expect("the subscription");
    assert_eq!(
        (row["status"].as_str(), row["lag"].as_u64()),
        (Some("stopped"), Some(7)),
        "nothing is handled while the file is gone: {row}"
    );
    assert_eq!(count(&store).await, 10);

    let b = Release::B.bytes();
    deploy(&deployment, &b, Write::Rename).await;
    wait_for_row(&mut daemon, &deployment, "running", &b, Release::B).await;
    wait_handled(&mut daemon, &store, 17, SETTLE).await;
    tokio::time::sleep(QUIET).await;
    let all: Vec<Uuid> = before.iter().chain(&meanwhile).copied().collect();
    assert_each_handled_once(&store, &all).await;
    assert_handled_by(&store, &before, Release::A, "before the delete").await;
    assert_handled_by(&store, &meanwhile, Release::B, "while the file was gone").await;
    let row = subscription_row(&deployment)
        .await
        .expect("the subscription");
    assert_eq!(row["status"], "running", "{row}");
    daemon.stop().await;
}

#[tokio::test]
async fn deleting_then_re_adding_a_plugin_resumes_from_its_checkpoint_on_postgres() {
    deleting_then_re_adding_a_plugin_resumes_from_its_checkpoint(TestDatabase::postgres().await)
        .await;
}

#[tokio::test]
async fn deleting_then_re_adding_a_plugin_resumes_from_its_checkpoint_on_sqlite() {
    deleting_then_re_adding_a_plugin_resumes_from_its_checkpoint(TestDatabase::sqlite()).await;
}

// ---------------------------------------------------------------------------------------------
// 4. New files.

async fn a_new_file_starts_its_subscriptions_live(database: TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let existing = append_items(&store, 12).await;
    append(&store, "thing", 3).await;
    let mut deployment = Deployment::new(database.url());
    let mut daemon = start(&mut deployment).await;
    assert!(
        daemon.log().contains("no plugin loaded yet"),
        "the daemon says its folder is empty"
    );
    assert!(deployment.subscriptions().await.is_empty());

    let a = Release::A.bytes();
    let dropped = Instant::now();
    deploy(&deployment, &a, Write::Rename).await;
    wait_for_row(&mut daemon, &deployment, "running", &a, Release::A).await;
    wait_handled(&mut daemon, &store, 12, SETTLE).await;
    eprintln!(
        "a new file on {} handled the 12 existing events {} ms after it landed",
        database.kind(),
        dropped.elapsed().as_millis()
    );
    let live = append_items(&store, 3).await;
    wait_handled(&mut daemon, &store, 15, SETTLE).await;
    let all: Vec<Uuid> = existing.iter().chain(&live).copied().collect();
    assert_each_handled_once(&store, &all).await;
    assert_handled_by(&store, &all, Release::A, "every event").await;
    let row = subscription_row(&deployment)
        .await
        .expect("the subscription");
    assert_eq!(row["status"], "running", "{row}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_new_file_starts_its_subscriptions_live_on_postgres() {
    a_new_file_starts_its_subscriptions_live(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn a_new_file_starts_its_subscriptions_live_on_sqlite() {
    a_new_file_starts_its_subscriptions_live(TestDatabase::sqlite()).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Changed filters.

/// Waits until `release` alone has handled exactly `expected` events and none is left.
async fn wait_rebuilt(daemon: &mut Daemon, store: &Store, release: Release, expected: u64) {
    let what = format!("count {expected} by release {release:?}, lag 0");
    daemon
        .wait_until(&what, SETTLE, || async {
            let seen = (
                count(store).await,
                last_tag(store).await,
                store.lag(SUBSCRIPTION).await.expect("lag"),
            );
            if seen == (expected, Some(release.tag().to_owned()), 0) {
                Ok(())
            } else {
                Err(format!("(count, tag, lag) = {seen:?}"))
            }
        })
        .await;
}

async fn a_changed_filter_restarts_the_subscription_fresh(database: TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    let mut daemon = start(&mut deployment).await;
    let things = append(&store, "thing", 4).await;
    let items = append_items(&store, 10).await;
    wait_handled(&mut daemon, &store, 10, SETTLE).await;

    // Release c also wants `thing` events: it starts over from the beginning, with empty state.
    deploy(&deployment, &Release::C.bytes(), Write::Rename).await;
    wait_rebuilt(&mut daemon, &store, Release::C, 14).await;
    let all: Vec<Uuid> = things.iter().chain(&items).copied().collect();
    assert_each_handled_once(&store, &all).await;
    assert_handled_by(&store, &all, Release::C, "after the filter grew").await;
    assert!(
        daemon.log().contains("filter changed"),
        "the daemon says why the subscription starts over"
    );

    // Back to `item` only: fresh again, the `thing` entries gone with the cleared state.
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    wait_rebuilt(&mut daemon, &store, Release::A, 10).await;
    assert_each_handled_once(&store, &items).await;
    assert_handled_by(&store, &items, Release::A, "after the filter shrank").await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_changed_filter_restarts_the_subscription_fresh_on_postgres() {
    a_changed_filter_restarts_the_subscription_fresh(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn a_changed_filter_restarts_the_subscription_fresh_on_sqlite() {
    a_changed_filter_restarts_the_subscription_fresh(TestDatabase::sqlite()).await;
}

/// How a plugin is out of the daemon's sight while its new release changes the filter.
#[derive(Debug, Clone, Copy)]
enum Away {
    /// Its file is deleted, then the new release is dropped in while the daemon runs.
    FileDeleted,
    /// The daemon is stopped, the file replaced, and the daemon started again.
    DaemonStopped,
}

/// The README's rule, "when a new version changes a subscription's filter, that subscription
/// starts fresh", does not depend on whether the daemon saw the old version run just before.
async fn a_filter_changed_while_the_plugin_was_away_restarts_fresh(
    database: TestDatabase,
    away: Away,
) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    let mut daemon = start(&mut deployment).await;
    let things = append(&store, "thing", 4).await;
    let items = append_items(&store, 10).await;
    wait_handled(&mut daemon, &store, 10, SETTLE).await;

    let c = Release::C.bytes();
    match away {
        Away::FileDeleted => {
            std::fs::remove_file(plugin_path(&deployment)).expect("delete the plugin file");
            daemon
                .wait_until("the subscription stopped", SETTLE, || async {
                    match subscription_row(&deployment).await {
                        Some(row) if row["status"] == "stopped" => Ok(()),
                        row => Err(format!("{row:?}")),
                    }
                })
                .await;
            deploy(&deployment, &c, Write::Rename).await;
        }
        Away::DaemonStopped => {
            daemon.stop().await;
            deploy(&deployment, &c, Write::Rename).await;
            daemon = start(&mut deployment).await;
        }
    }
    // `plugins list` shows c running once its subscription has (re)started: from then on the
    // lag counts what c has left under its own filter.
    wait_for_row(&mut daemon, &deployment, "running", &c, Release::C).await;
    daemon
        .wait_until("lag 0 under the new filter", SETTLE, || async {
            match store.lag(SUBSCRIPTION).await.expect("lag") {
                0 => Ok(()),
                lag => Err(format!("lag {lag}")),
            }
        })
        .await;
    tokio::time::sleep(QUIET).await;
    let seen = seen(&store).await;
    let tags = |ids: &[Uuid]| -> Vec<Option<String>> {
        ids.iter().map(|id| seen.get(id).cloned()).collect()
    };
    assert!(
        count(&store).await == 14 && seen.len() == 14 && seen.values().all(|tags| tags == "c"),
        "{away:?} while release c changed the filter from [item] to [item, thing]: the \
         subscription must start fresh (state cleared, every item and thing handled by c), \
         but count = {}, the things' tags are {:?} and the items' tags are {:?}",
        count(&store).await,
        tags(&things),
        tags(&items),
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_filter_changed_while_the_file_was_deleted_restarts_fresh_on_postgres() {
    a_filter_changed_while_the_plugin_was_away_restarts_fresh(
        TestDatabase::postgres().await,
        Away::FileDeleted,
    )
    .await;
}

#[tokio::test]
async fn a_filter_changed_while_the_daemon_was_stopped_restarts_fresh_on_sqlite() {
    a_filter_changed_while_the_plugin_was_away_restarts_fresh(
        TestDatabase::sqlite(),
        Away::DaemonStopped,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. The watcher and the daemon's signals.

/// An idle daemon, its plugin loaded, does not keep reopening (re-reading, re-hashing) the
/// plugin file: reading a file is not a change to it. Watches the folder as the daemon does
/// and counts the opens of the plugin file (inotify reports them; elsewhere none are seen).
#[tokio::test]
async fn an_idle_daemon_leaves_its_plugin_file_alone() {
    use notify::Watcher as _;
    use notify::event::{AccessKind, EventKind};

    let database = TestDatabase::postgres().await;
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deploy(&deployment, &Release::A.bytes(), Write::Rename).await;
    let mut daemon = start(&mut deployment).await;
    append_items(&store, 3).await;
    wait_handled(&mut daemon, &store, 3, SETTLE).await;
    tokio::time::sleep(DEBOUNCE * 5).await;

    let (sender, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = sender.send(event);
        }
    })
    .expect("watch the plugins folder");
    watcher
        .watch(
            &deployment.path("plugins"),
            notify::RecursiveMode::NonRecursive,
        )
        .expect("watch the plugins folder");
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    drop(watcher);
    let of_plugin: Vec<notify::Event> = events
        .try_iter()
        .filter(|event| event.paths.iter().any(|path| path.ends_with(PLUGIN_FILE)))
        .collect();
    let opens = of_plugin
        .iter()
        .filter(|event| matches!(event.kind, EventKind::Access(AccessKind::Open(_))))
        .count();
    daemon.assert_running();
    assert_eq!(
        opens,
        0,
        "nothing changed, yet the daemon opened its plugin file {opens} times in {window:?} \
         (its watcher takes its own reads for changes: open, re-read, re-hash, again): \
         {:?}",
        of_plugin.iter().map(|event| event.kind).collect::<Vec<_>>()
    );
    daemon.stop().await;
}

/// `bytes` with a custom section appended: the same plugin, in a file the compile cache has
/// never seen, so loading it compiles.
fn uncached(bytes: &[u8]) -> Vec<u8> {
    let unique = Uuid::new_v4();
    let section = wasm_encoder::CustomSection {
        name: "eventhost-test".into(),
        data: unique.as_bytes().as_slice().into(),
    };
    let mut out = bytes.to_vec();
    wasm_encoder::ComponentSection::append_to_component(&section, &mut out);
    out
}

/// Deletes the compile cache's artifacts of `files`, so this test leaves the shared cache as
/// it found it.
fn forget_compiled(files: &[Vec<u8>]) {
    let cache = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("daemon-e2e-cache"));
    let Some(Ok(entries)) = cache.map(std::fs::read_dir) else {
        return;
    };
    let hashes: Vec<String> = files.iter().map(|bytes| sha256(bytes)).collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if hashes.iter().any(|hash| name.starts_with(hash.as_str())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// SIGTERM stops the daemon even when it arrives while the daemon loads new plugin files
/// (a large component takes seconds to compile): the signal is not lost.
#[tokio::test]
async fn a_sigterm_during_a_reload_still_stops_the_daemon() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let a = Release::A.bytes();
    deploy(&deployment, &a, Write::Rename).await;
    let mut daemon = start(&mut deployment).await;

    // Six new files at once, each compiled from scratch: several seconds of loading.
    let files: Vec<Vec<u8>> = (0..6).map(|_| uncached(&a)).collect();
    for (n, bytes) in files.iter().enumerate() {
        let target = deployment.path("plugins").join(format!("cold-{n}.wasm"));
        let temporary = target.with_extension("partial");
        std::fs::write(&temporary, bytes).expect("write a plugin file");
        std::fs::rename(&temporary, &target).expect("rename it into place");
    }
    tokio::time::sleep(DEBOUNCE + Duration::from_millis(400)).await;
    let loading = !daemon.log().contains("cold-5.wasm");
    let timeout = Duration::from_secs(20);
    let sent = Instant::now();
    daemon.signal("TERM");
    let stopped = async {
        while sent.elapsed() < timeout {
            if daemon.log().contains("INFO eventhost::cli::run: stopped") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
    .await;
    forget_compiled(&files);
    assert!(
        stopped,
        "SIGTERM sent while the daemon was loading new plugin files (still loading: {loading}) \
         did not stop it within {timeout:?}: the signal was lost"
    );
    let status = daemon.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "the daemon exited with {status}");
    eprintln!(
        "SIGTERM during a reload: stopped {} ms after the signal",
        sent.elapsed().as_millis()
    );
}
