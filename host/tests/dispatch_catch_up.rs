//! A subscription catching up on a backlog in many full batches (so every batch's read of
//! the next one runs ahead of its commit), with operators' resets landing while it works: at
//! the end each event was counted exactly once since the last reset, in position order, with
//! no gap and no repeat. On PostgreSQL and on SQLite, through `dispatch::run` with a native
//! handler.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhost_dispatch::shutdown::ShutdownTrigger;
use eventhost_dispatch::{self as dispatch, DispatchConfig, Dispatchable, Handler};
use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};
use eventhost_runtime::{Effects, HandleError, PluginInfo, Reads, StartFrom, SubscriptionSpec};
use eventhost_store::{self as store, EventStore, Store, SubscriptionStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;

use support::{PgDatabase, SqliteFile};

const EVENTS: u64 = 3_000;
const BATCH: u32 = 50;
const NAME: &str = "tally.all";

/// Counts events and checks that each batch starts where the last one ended: `next` is the
/// position it expects, `gaps` how many times a batch started elsewhere.
struct Tally {
    info: PluginInfo,
}

impl Tally {
    fn new() -> Self {
        Self {
            info: PluginInfo {
                name: "tally".to_owned(),
                version: "1.0.0".to_owned(),
                subscriptions: vec![SubscriptionSpec {
                    name: "all".to_owned(),
                    aggregate_types: Vec::new(),
                    event_types: Vec::new(),
                    batch_size: BATCH,
                    start_from: StartFrom::Beginning,
                }],
            },
        }
    }

    async fn tally(&self, batch: &[Event], reads: Arc<dyn Reads>) -> Result<Effects, HandleError> {
        let read = |key: &'static str| {
            let reads = Arc::clone(&reads);
            async move {
                let value =
                    reads
                        .state_get(NAME, key)
                        .await
                        .map_err(|error| HandleError::Host {
                            message: error.to_string(),
                        })?;
                Ok::<u64, HandleError>(value.map_or(0, |value| value.parse().unwrap_or(0)))
            }
        };
        let mut count = read("count").await?;
        let mut next = read("next").await?.max(1);
        let mut gaps = read("gaps").await?;
        for event in batch {
            if event.position != next {
                gaps += 1;
            }
            next = event.position + 1;
            count += 1;
        }
        // A little work per batch, so resets land while batches are in flight.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut effects = Effects::default();
        for (key, value) in [("count", count), ("next", next), ("gaps", gaps)] {
            effects
                .state
                .insert(key.to_owned(), Some(value.to_string()));
        }
        Ok(effects)
    }
}

impl Handler for Tally {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle<'a>(
        &'a self,
        _subscription: &'a str,
        batch: &'a [Event],
        reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        self.tally(batch, reads).boxed()
    }
}

async fn state(store: &Store, key: &str) -> Option<String> {
    store.state_get(NAME, key).await.expect("read the state")
}

async fn checkpoint_position(store: &Store) -> u64 {
    store
        .subscription(NAME)
        .await
        .expect("read the subscription")
        .map_or(0, |record| record.checkpoint.position())
}

async fn resets_during_a_catch_up_count_every_event_once_in_order(url: &str) {
    let store = store::connect(url).await.expect("connect");
    let stream = StreamId::new("counter", "c-1");
    for chunk in 0..EVENTS / 100 {
        let events: Vec<NewEvent> = (0..100)
            .map(|index| NewEvent::new("Incremented", json!({ "n": chunk * 100 + index })))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, &events)
            .await
            .expect("append");
    }

    let (trigger, shutdown) = ShutdownTrigger::new();
    let mut config = DispatchConfig::for_store(&store);
    config.poll_interval = Duration::from_millis(20);
    let plugins = vec![Dispatchable {
        handler: Arc::new(Tally::new()),
        max_batch_size: None,
    }];
    let dispatcher = tokio::spawn(dispatch::run(store.clone(), plugins, config, shutdown));

    // Reset to the origin, clearing the tally, three times while the backlog is worked off.
    let deadline = Instant::now() + Duration::from_secs(60);
    for threshold in [EVENTS / 5, EVENTS / 3, EVENTS / 2] {
        while checkpoint_position(&store).await < threshold {
            assert!(
                Instant::now() < deadline,
                "the catch-up stalled before {threshold}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store.reset(NAME, 0, true).await.expect("reset");
    }
    while state(&store, "count").await.as_deref() != Some(&EVENTS.to_string())
        || checkpoint_position(&store).await != EVENTS
    {
        assert!(
            Instant::now() < deadline,
            "the catch-up did not end: count {:?}, checkpoint {}",
            state(&store, "count").await,
            checkpoint_position(&store).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    trigger.trigger();
    dispatcher
        .await
        .expect("the dispatcher panicked")
        .expect("the dispatcher failed");

    assert_eq!(state(&store, "count").await, Some(EVENTS.to_string()));
    assert_eq!(state(&store, "next").await, Some((EVENTS + 1).to_string()));
    assert_eq!(state(&store, "gaps").await, Some("0".to_owned()));
    assert!(store.parked(Some(NAME)).await.expect("parked").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_during_a_catch_up_count_every_event_once_in_order_on_postgres() {
    let database = PgDatabase::create().await;
    resets_during_a_catch_up_count_every_event_once_in_order(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_during_a_catch_up_count_every_event_once_in_order_on_sqlite() {
    let file = SqliteFile::create();
    resets_during_a_catch_up_count_every_event_once_in_order(&file.url).await;
}
