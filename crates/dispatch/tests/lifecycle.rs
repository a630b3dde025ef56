//! The dispatcher in process, on a SQLite file, with a native handler whose failures the test
//! controls: retries, splitting a batch to park its poison event, replays, resets while a
//! subscription catches up, and installs and replacements that fail part-way (a trigger makes
//! SQLite refuse one subscription's row) and must change nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventhost_dispatch::{DispatchConfig, Dispatchable, Dispatcher, Handler};
use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};
use eventhost_runtime::{Effects, HandleError, PluginInfo, Reads, StartFrom, SubscriptionSpec};
use eventhost_store::{self as store, EventStore, ParkedSelection, Store, SubscriptionStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::Notify;

const PLUGIN: &str = "probe";

/// A subscription of the probe: its name and the aggregate types it takes.
fn spec(name: &str, aggregate_types: &[&str], batch_size: u32) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.to_owned(),
        aggregate_types: aggregate_types.iter().map(|t| (*t).to_owned()).collect(),
        event_types: Vec::new(),
        batch_size,
        start_from: StartFrom::Beginning,
    }
}

/// Counts the events of each batch into state key `count` (read, then written: a batch
/// committed twice or a lost one shows in the count) and writes `seen/<position>` = its
/// version, failing on the positions it is told to.
struct Probe {
    info: PluginInfo,
    /// Positions that fail, and whether the failure is worth retrying.
    poison: Mutex<HashSet<u64>>,
    retryable: bool,
    /// Fails this many calls first, whatever the batch.
    fail_first: AtomicUsize,
    calls: AtomicUsize,
    /// While set, a call waits for `release` after its state read (and says so on
    /// `entered`): a batch held in flight.
    hold: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Probe {
    fn new(version: &str, subscriptions: Vec<SubscriptionSpec>) -> Self {
        Self {
            info: PluginInfo {
                name: PLUGIN.to_owned(),
                version: version.to_owned(),
                subscriptions,
            },
            poison: Mutex::new(HashSet::new()),
            retryable: true,
            fail_first: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            hold: AtomicBool::new(false),
            entered: Notify::new(),
            release: Notify::new(),
        }
    }

    fn poisoned(self, positions: &[u64], retryable: bool) -> Self {
        self.poison.lock().unwrap().extend(positions);
        Self { retryable, ..self }
    }

    fn cure(&self) {
        self.poison.lock().unwrap().clear();
    }

    async fn count(
        &self,
        subscription: &str,
        batch: &[Event],
        reads: Arc<dyn Reads>,
    ) -> Result<Effects, HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let poisoned = {
            let poison = self.poison.lock().unwrap();
            batch.iter().any(|event| poison.contains(&event.position))
        };
        if failing || poisoned {
            return Err(HandleError::Handler {
                message: "probe refuses this batch".to_owned(),
                retryable: self.retryable,
            });
        }
        let namespace = format!("{PLUGIN}.{subscription}");
        let stored = reads
            .state_get(&namespace, "count")
            .await
            .map_err(|error| HandleError::Host {
                message: error.to_string(),
            })?;
        let count: u64 = stored.map_or(0, |value| value.parse().unwrap());
        if self.hold.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        let mut effects = Effects::default();
        effects.state.insert(
            "count".to_owned(),
            Some((count + batch.len() as u64).to_string()),
        );
        for event in batch {
            effects.state.insert(
                format!("seen/{:08}", event.position),
                Some(self.info.version.clone()),
            );
        }
        Ok(effects)
    }
}

impl Handler for Probe {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        self.count(subscription, batch, reads).boxed()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    url: String,
    store: Store,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let store = store::connect(&url).await.unwrap();
        Self {
            _dir: dir,
            url,
            store,
        }
    }

    fn config(&self) -> DispatchConfig {
        DispatchConfig {
            poll_interval: Duration::from_millis(20),
            max_attempts: 3,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            progress_interval: Duration::from_secs(60),
            max_subscriptions: 1000,
            batch_bytes: 16 << 20,
            state_cache_bytes: eventhost_dispatch::STATE_CACHE_BYTES,
            held_back_warning: eventhost_dispatch::HELD_BACK_WARNING,
            lease_ttl: eventhost_dispatch::LEASE_TTL,
        }
    }

    async fn dispatcher(&self) -> Dispatcher {
        Dispatcher::start(self.store.clone(), self.config())
            .await
            .unwrap()
    }

    /// Appends `n` events to streams of `aggregate_type`, one per stream.
    async fn append(&self, aggregate_type: &str, n: u64) {
        for i in 0..n {
            let stream = StreamId::new(aggregate_type, format!("{aggregate_type}-{i}"));
            let event = NewEvent::new("happened", json!({ "i": i }));
            self.store
                .append(&stream, ExpectedVersion::Any, &[event])
                .await
                .unwrap();
        }
    }

    async fn state(&self, subscription: &str) -> Vec<(String, String)> {
        self.store
            .state_scan(&format!("{PLUGIN}.{subscription}"), "", None, 100_000)
            .await
            .unwrap()
    }

    async fn count(&self, subscription: &str) -> u64 {
        self.store
            .state_get(&format!("{PLUGIN}.{subscription}"), "count")
            .await
            .unwrap()
            .map_or(0, |value| value.parse().unwrap())
    }

    /// Waits until `subscription` has counted `n` events; fails after 10 s.
    async fn until_counted(&self, subscription: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = self.count(subscription).await;
            if count == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{subscription} counted {count} events, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes SQLite refuse to store the subscription `name` (new or updated).
    async fn refuse_subscription(&self, name: &str) {
        let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
        for event in ["INSERT", "UPDATE"] {
            // The name is the test's own constant; DDL takes no bound parameters.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TRIGGER refuse_{event} BEFORE {event} ON subscriptions
                 WHEN NEW.name = '{name}'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
}

/// Version 1 of the probe, with subscription `a` (everything) and `b` (items), installed
/// over 3 items and 2 things and caught up.
async fn version_one_caught_up(fixture: &Fixture) -> Dispatcher {
    fixture.append("item", 3).await;
    fixture.append("thing", 2).await;
    let old = Arc::new(Probe::new(
        "1",
        vec![spec("a", &[], 100), spec("b", &["item"], 100)],
    ));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&old)).await.unwrap();
    fixture.until_counted("a", 5).await;
    fixture.until_counted("b", 3).await;
    dispatcher
}

fn dispatchable(probe: &Arc<Probe>) -> Dispatchable {
    Dispatchable {
        handler: Arc::clone(probe) as Arc<dyn Handler>,
        max_batch_size: None,
    }
}

#[tokio::test]
async fn a_failing_batch_is_retried_until_it_commits_once() {
    let fixture = Fixture::new().await;
    fixture.append("item", 5).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]));
    probe.fail_first.store(2, Ordering::SeqCst);
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 5).await;
    dispatcher.stop().await;
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    assert!(fixture.store.parked(None).await.unwrap().is_empty());
    assert_eq!(fixture.count("all").await, 5);
}

#[tokio::test]
async fn a_poison_event_is_split_out_and_parked_while_the_others_commit() {
    let fixture = Fixture::new().await;
    fixture.append("item", 10).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]).poisoned(&[7], true));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 9).await;
    let parked = fixture.store.parked(Some("probe.all")).await.unwrap();
    dispatcher.stop().await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position, 7);
    assert_eq!(
        parked[0].attempts, 3,
        "the event alone gets the full attempt budget"
    );
    assert!(
        parked[0].error.contains("probe refuses"),
        "{}",
        parked[0].error
    );
    let seen: Vec<String> = fixture
        .state("all")
        .await
        .into_iter()
        .filter_map(|(key, _)| key.strip_prefix("seen/").map(str::to_owned))
        .collect();
    assert_eq!(seen.len(), 9);
    assert!(!seen.contains(&format!("{:08}", 7)));
    let record = fixture
        .store
        .subscription("probe.all")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.checkpoint.position(),
        10,
        "the subscription went past the poison"
    );
}

#[tokio::test]
async fn a_failure_retrying_cannot_help_is_isolated_without_retries() {
    let fixture = Fixture::new().await;
    fixture.append("item", 4).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]).poisoned(&[2], false));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 3).await;
    dispatcher.stop().await;
    let parked = fixture.store.parked(None).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 1);
    // The whole batch once, then halves [1,2] and [3,4], then [1] and [2]: no retries.
    assert_eq!(probe.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_replayed_event_applies_once_after_the_fix() {
    let fixture = Fixture::new().await;
    fixture.append("item", 3).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]).poisoned(&[2], false));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 2).await;
    let parked = fixture.store.parked(None).await.unwrap();
    assert_eq!(parked.len(), 1);
    probe.cure();
    let marked = fixture
        .store
        .request_replay(ParkedSelection::One(parked[0].id))
        .await
        .unwrap();
    assert_eq!(marked, 1);
    fixture.until_counted("all", 3).await;
    // Later polls find no request: the replay does not apply twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    dispatcher.stop().await;
    assert_eq!(fixture.count("all").await, 3);
    assert!(fixture.store.parked(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reset_during_catch_up_recounts_every_event_once() {
    let fixture = Fixture::new().await;
    fixture.append("item", 400).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 10)]));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fixture.count("all").await < 100 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fixture.store.reset("probe.all", 0, true).await.unwrap();
    fixture.until_counted("all", 400).await;
    dispatcher.stop().await;
    let seen = fixture.state("all").await.len() - 1;
    assert_eq!(seen, 400, "every event seen after the reset");
}

/// An operator's rebuild from where the subscription stands (the checkpoint does not move)
/// while a batch is in flight: the batch's effects, computed from the state before the
/// clear, must not commit, whatever the worker knew of that state.
#[tokio::test]
async fn a_rebuild_while_a_batch_is_in_flight_drops_the_batch() {
    let fixture = Fixture::new().await;
    fixture.append("item", 2).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 2).await;
    let standing = fixture
        .store
        .subscription("probe.all")
        .await
        .unwrap()
        .unwrap()
        .checkpoint;

    probe.hold.store(true, Ordering::SeqCst);
    let entered = probe.entered.notified();
    fixture.append("thing", 1).await;
    tokio::time::timeout(Duration::from_secs(10), entered)
        .await
        .expect("the batch reached the plugin");
    let rebuilt = fixture
        .store
        .reset("probe.all", standing.position(), true)
        .await
        .unwrap();
    assert_eq!(rebuilt.checkpoint, standing);
    probe.release.notify_one();

    // The rebuilt subscription counts the one event after its checkpoint, from nothing.
    fixture.until_counted("all", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    dispatcher.stop().await;
    assert_eq!(
        fixture.count("all").await,
        1,
        "the stale batch did not commit"
    );
}

#[tokio::test]
async fn a_failed_install_leaves_nothing_running_and_nothing_stored() {
    let fixture = Fixture::new().await;
    fixture.append("item", 3).await;
    fixture.refuse_subscription("probe.b").await;
    let probe = Arc::new(Probe::new(
        "1",
        vec![spec("a", &[], 100), spec("b", &[], 100)],
    ));
    let mut dispatcher = fixture.dispatcher().await;
    let error = dispatcher.install(dispatchable(&probe)).await.unwrap_err();
    assert!(error.to_string().contains("refused by the test"), "{error}");
    assert_eq!(dispatcher.plugins().count(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 0, "no worker ran");
    assert!(
        fixture.store.subscriptions().await.unwrap().is_empty(),
        "subscription a was rolled back with b"
    );
    dispatcher.stop().await;
}

#[tokio::test]
async fn a_failed_replacement_keeps_the_old_version_running_everything() {
    let fixture = Fixture::new().await;
    let mut dispatcher = version_one_caught_up(&fixture).await;

    // Version 2 widens b's filter and adds c, whose row SQLite refuses.
    fixture.refuse_subscription("probe.c").await;
    let new = Arc::new(Probe::new(
        "2",
        vec![
            spec("a", &[], 100),
            spec("b", &["item", "thing"], 100),
            spec("c", &[], 100),
        ],
    ));
    let error = dispatcher.install(dispatchable(&new)).await.unwrap_err();
    assert!(error.to_string().contains("refused by the test"), "{error}");

    let b = fixture
        .store
        .subscription("probe.b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.filter.aggregate_types, vec!["item".to_owned()]);
    assert_eq!(
        fixture.count("b").await,
        3,
        "b was neither reset nor cleared"
    );
    fixture.append("item", 1).await;
    fixture.until_counted("a", 6).await;
    fixture.until_counted("b", 4).await;
    dispatcher.stop().await;
    assert_eq!(new.calls.load(Ordering::SeqCst), 0, "version 2 never ran");
    for subscription in ["a", "b"] {
        assert!(
            fixture
                .state(subscription)
                .await
                .iter()
                .all(|(key, value)| key == "count" || value == "1"),
            "{subscription} ran only version 1"
        );
    }
}

#[tokio::test]
async fn a_changed_filter_restarts_its_subscription_in_the_replacing_transaction() {
    let fixture = Fixture::new().await;
    let mut dispatcher = version_one_caught_up(&fixture).await;
    let new = Arc::new(Probe::new(
        "2",
        vec![spec("a", &[], 100), spec("b", &["item", "thing"], 100)],
    ));
    dispatcher.install(dispatchable(&new)).await.unwrap();
    fixture.until_counted("b", 5).await;
    fixture.append("item", 1).await;
    fixture.until_counted("a", 6).await;
    fixture.until_counted("b", 6).await;
    dispatcher.stop().await;
    let b = fixture.state("b").await;
    assert_eq!(b.len(), 7, "count and six events: {b:?}");
    assert!(
        b.iter().all(|(key, value)| key == "count" || value == "2"),
        "b was rebuilt by version 2 alone: {b:?}"
    );
    assert_eq!(
        fixture.count("a").await,
        6,
        "a kept its checkpoint and state"
    );
}

#[tokio::test]
async fn installing_the_same_plugin_again_never_runs_two_workers() {
    let fixture = Fixture::new().await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 1)]));
    let mut dispatcher = fixture.dispatcher().await;
    for _ in 0..3 {
        dispatcher.install(dispatchable(&probe)).await.unwrap();
    }
    fixture.append("item", 50).await;
    fixture.until_counted("all", 50).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    dispatcher.stop().await;
    assert_eq!(fixture.count("all").await, 50);
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        50,
        "one worker: each batch of one event handled once"
    );
}

#[tokio::test]
async fn a_stored_event_that_cannot_be_read_is_parked_and_the_subscription_goes_on() {
    let fixture = Fixture::new().await;
    fixture.append("item", 2).await;
    // A row written around the store's checks (an older schema, a hand-made fix): its
    // metadata value is a number, not a string.
    let pool = sqlx::SqlitePool::connect(&fixture.url).await.unwrap();
    sqlx::query(
        "INSERT INTO events
             (id, aggregate_type, aggregate_id, version, event_type, payload, metadata, recorded_at)
         VALUES (?1, 'odd', 'o-1', 1, 'happened', '{}', '{\"k\": 1}', '2026-01-01T00:00:00Z')",
    )
    .bind(uuid_text())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    fixture.append("thing", 2).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 4).await;
    let parked = fixture.store.parked(None).await.unwrap();
    dispatcher.stop().await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position, 3);
    assert_eq!(parked[0].attempts, 0, "never given to the plugin");
    assert!(
        parked[0].error.contains("cannot be read") && parked[0].error.contains("metadata"),
        "{}",
        parked[0].error
    );
    let record = fixture
        .store
        .subscription("probe.all")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.checkpoint.position(), 5);
}

#[tokio::test]
async fn a_batch_whose_content_the_store_cannot_keep_is_parked_not_retried_for_ever() {
    let fixture = Fixture::new().await;
    fixture.append("item", 3).await;
    let probe = Arc::new(NulWriter(Probe::new("1", vec![spec("all", &[], 100)])));
    let mut dispatcher = fixture.dispatcher().await;
    dispatcher
        .install(Dispatchable {
            handler: Arc::clone(&probe) as Arc<dyn Handler>,
            max_batch_size: None,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let parked = loop {
        let parked = fixture.store.parked(None).await.unwrap();
        if parked.len() == 3 {
            break parked;
        }
        assert!(Instant::now() < deadline, "parked so far: {parked:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    dispatcher.stop().await;
    for event in &parked {
        if event.position == 2 {
            assert!(
                event.error.contains("bad\u{fffd}x"),
                "{}",
                &event.error[..40]
            );
            assert!(event.error.ends_with("(cut)") && event.error.len() < 4200);
        } else {
            assert!(event.error.contains("NUL"), "{}", event.error);
        }
    }
    let record = fixture
        .store
        .subscription("probe.all")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.checkpoint.position(), 3);
}

/// Writes a state key holding a NUL character, which no store can keep; fails the event at
/// position 2 with a long error message holding one too.
struct NulWriter(Probe);

impl Handler for NulWriter {
    fn info(&self) -> &PluginInfo {
        &self.0.info
    }

    fn handle<'a>(
        &'a self,
        _subscription: &'a str,
        batch: &'a [Event],
        _reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        async move {
            if batch.iter().any(|event| event.position == 2) {
                return Err(HandleError::Handler {
                    message: format!("bad\0{}", "x".repeat(20_000)),
                    retryable: false,
                });
            }
            let mut effects = Effects::default();
            effects
                .state
                .insert("bad\0key".to_owned(), Some("v".to_owned()));
            Ok(effects)
        }
        .boxed()
    }
}

fn uuid_text() -> String {
    format!("00000000-0000-7000-8000-{:012x}", std::process::id())
}

#[tokio::test]
async fn a_batch_cut_short_by_its_bytes_is_followed_at_once_by_the_rest() {
    let fixture = Fixture::new().await;
    fixture.append("item", 5).await;
    let probe = Arc::new(Probe::new("1", vec![spec("all", &[], 100)]));
    let mut config = fixture.config();
    // Every event reaches the bound; and no poll comes to move the subscription on.
    config.batch_bytes = 1;
    config.poll_interval = Duration::from_secs(3600);
    let mut dispatcher = Dispatcher::start(fixture.store.clone(), config)
        .await
        .unwrap();
    dispatcher.install(dispatchable(&probe)).await.unwrap();
    fixture.until_counted("all", 5).await;
    dispatcher.stop().await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 5, "one event per batch");
}
