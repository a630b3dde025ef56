//! Poison events through the real daemon: a plugin that fails on one event gets that event
//! parked (with its error, visible from the CLI) while every other event is handled; after the
//! operator deploys a fixed plugin of the same name and asks for a replay, the event is
//! applied exactly once, and later restarts do not apply it again. A graceful shutdown while
//! the daemon isolates a failing event skips nothing.
//!
//! Uses `dist/hostile/hostile-fail-on.wasm`, `hostile-fail-on-fixed.wasm` and
//! `dist/plugins/shipping-policy.wasm`, built by `bash scripts/build-plugins.sh`; a missing
//! one fails the test.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use daemon::{Daemon, Deployment, TestDatabase};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{self as store, EventStore, Store, SubscriptionStore};
use serde_json::json;
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

const STARTUP: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(30);

/// The durable subscription both releases of the plugin share, and its state namespace.
const SUBSCRIPTION: &str = "hostile-fail-on.all";
const PLUGIN_FILE: &str = "hostile-fail-on.wasm";

/// Ten events of `item/i-<n>`; the fifth (`n` = 4) is the poison one, with id `poison`.
fn events_with_one_poison(poison: Uuid) -> String {
    (0..10)
        .map(|n| {
            let mut line = json!({
                "aggregate_type": "item",
                "aggregate_id": format!("i-{n}"),
                "event_type": "item.added",
                "payload": {"n": n},
            });
            if n == 4 {
                line["id"] = json!(poison);
                line["payload"]["poison"] = json!(true);
            }
            format!("{line}\n")
        })
        .collect()
}

async fn count(store: &Store) -> u64 {
    support::count_state(store, SUBSCRIPTION).await
}

/// Waits until the plugin has counted `expected` events, nothing is left to handle, and
/// `parked` events are parked.
async fn wait_for(daemon: &mut Daemon, store: &Store, expected: u64, parked: usize) {
    let what = format!("count {expected}, lag 0 and {parked} parked event(s)");
    daemon
        .wait_until(&what, SETTLE, || async {
            let seen = (
                count(store).await,
                store.lag(SUBSCRIPTION).await.expect("lag"),
                store.parked(None).await.expect("parked").len(),
            );
            if seen == (expected, 0, parked) {
                Ok(())
            } else {
                Err(format!("(count, lag, parked) = {seen:?}"))
            }
        })
        .await;
}

async fn a_poison_event_is_parked_then_replayed_exactly_once_by_the_fixed_plugin(
    database: TestDatabase,
    replay_all: bool,
) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deployment.install("hostile/hostile-fail-on.wasm", PLUGIN_FILE);
    let poison = Uuid::new_v4();
    let file = deployment.path("items.jsonl");
    std::fs::write(&file, events_with_one_poison(poison)).expect("write the events file");
    deployment
        .cli_ok(&["append", "--file", file.to_str().unwrap()])
        .await;

    // The failing release: the poison event is parked, the nine others are counted.
    let mut daemon = deployment.start(&["--max-attempts", "2"]);
    wait_for(&mut daemon, &store, 9, 1).await;
    let parked = deployment.parked().await;
    let [entry] = parked.as_slice() else {
        panic!("one parked event expected: {parked:#?}")
    };
    assert_eq!(entry["subscription"], SUBSCRIPTION);
    assert_eq!(entry["event_id"], json!(poison));
    assert_eq!(entry["replay_requested"], false);
    assert_eq!(
        entry["attempts"], 1,
        "a non-retryable failure is tried once alone before it is parked"
    );
    let error = entry["error"]
        .as_str()
        .expect("the parked event carries its error");
    assert!(
        error.contains(&format!("poison event {poison}")),
        "the parked error names the failure: {error}"
    );
    daemon.stop().await;

    // The operator deploys the fix (same plugin name) and asks for the replay.
    deployment.install("hostile/hostile-fail-on-fixed.wasm", PLUGIN_FILE);
    let id = entry["id"]
        .as_i64()
        .expect("the parked entry's id")
        .to_string();
    let replay: Vec<&str> = if replay_all {
        vec!["parked", "replay", "--all"]
    } else {
        vec!["parked", "replay", &id]
    };
    let marked = deployment.cli_ok(&replay).await;
    assert!(
        marked
            .stdout
            .contains("1 parked event(s) marked for replay"),
        "{marked}"
    );
    assert_eq!(deployment.parked().await[0]["replay_requested"], true);
    assert_eq!(
        count(&store).await,
        9,
        "no daemon runs: nothing is replayed yet"
    );

    let mut daemon = deployment.start(&[]);
    wait_for(&mut daemon, &store, 10, 0).await;
    assert!(
        daemon.log().contains("replayed a parked event"),
        "the daemon says it replayed:\n{}",
        daemon.log()
    );
    daemon.stop().await;

    // A restart does not replay again: one new event brings the count to exactly 11.
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("subscription started", 1, STARTUP)
        .await;
    deployment
        .cli_ok(&[
            "append",
            "--aggregate-type",
            "item",
            "--aggregate-id",
            "i-10",
            "--event-type",
            "item.added",
            "--payload",
            r#"{"n":10}"#,
        ])
        .await;
    wait_for(&mut daemon, &store, 11, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&store).await,
        11,
        "the replayed event was applied again"
    );
    assert!(deployment.parked().await.is_empty());
    assert!(
        !daemon.log().contains("replayed a parked event"),
        "replayed again after a restart:\n{}",
        daemon.log()
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_poison_event_is_parked_then_replayed_exactly_once_by_the_fixed_plugin_on_postgres() {
    a_poison_event_is_parked_then_replayed_exactly_once_by_the_fixed_plugin(
        TestDatabase::postgres().await,
        false,
    )
    .await;
}

#[tokio::test]
async fn a_poison_event_is_parked_then_replayed_exactly_once_by_the_fixed_plugin_on_sqlite() {
    a_poison_event_is_parked_then_replayed_exactly_once_by_the_fixed_plugin(
        TestDatabase::sqlite(),
        true,
    )
    .await;
}

const SHIPMENTS: &str = "shipping-policy.shipments";

/// Overwrites the metadata of the first event of order `order_id`'s stream, bypassing the
/// store's checks: with a non-string value the stream can no longer be read.
async fn set_created_metadata(database: &TestDatabase, order_id: &str, metadata: &str) {
    let updated = match database {
        TestDatabase::Postgres(db) => {
            let mut connection = PgConnection::connect(&db.url).await.expect("connect");
            sqlx::query(
                "UPDATE eventhost.events SET metadata = $2::jsonb
                 WHERE aggregate_type = 'order' AND aggregate_id = $1 AND version = 1",
            )
            .bind(order_id)
            .bind(metadata)
            .execute(&mut connection)
            .await
            .expect("update the event")
            .rows_affected()
        }
        TestDatabase::Sqlite(file) => {
            let mut connection = SqliteConnection::connect(&file.url).await.expect("connect");
            sqlx::query(
                "UPDATE events SET metadata = ?2
                 WHERE aggregate_type = 'order' AND aggregate_id = ?1 AND version = 1",
            )
            .bind(order_id)
            .bind(metadata)
            .execute(&mut connection)
            .await
            .expect("update the event")
            .rows_affected()
        }
    };
    assert_eq!(updated, 1, "the order.created event of {order_id}");
}

/// Orders o-a, o-x and o-b, created then paid in that order, so the policy's first batch is
/// their three `order.paid` events. Returns the position of o-x's `order.paid`.
async fn three_paid_orders(store: &Store) -> u64 {
    for order_id in ["o-a", "o-x", "o-b"] {
        let created = NewEvent::new(
            "order.created",
            json!({"customer": "ada", "lines": [{"sku": "s", "quantity": 1, "unit_price_cents": 100}]}),
        );
        let stream = StreamId::new("order", order_id);
        store
            .append(&stream, ExpectedVersion::NoStream, &[created])
            .await
            .expect("append");
    }
    let mut x_position = 0;
    for order_id in ["o-a", "o-x", "o-b"] {
        let paid = NewEvent::new("order.paid", json!({}));
        let stream = StreamId::new("order", order_id);
        let appended = store
            .append(&stream, ExpectedVersion::Exact(1), &[paid])
            .await
            .expect("append");
        if order_id == "o-x" {
            x_position = appended.events[0].position;
        }
    }
    x_position
}

/// The policy cannot read o-x's stream (its `order.created` carries unreadable metadata), so
/// it fails retryably on o-x's `order.paid` alone, as it would while that read keeps timing
/// out. SIGTERM arrives while the daemon retries that single event, after splitting the
/// batch: o-x's `order.paid` must stay either parked or after the checkpoint, never be
/// passed over; once the stream is readable again, every paid order gets its shipment.
async fn a_shutdown_while_isolating_a_failing_event_skips_nothing(database: TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let x_position = three_paid_orders(&store).await;
    set_created_metadata(&database, "o-x", r#"{"broken": 1}"#).await;
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/shipping-policy.wasm", "shipping-policy.wasm");

    let mut daemon = deployment.start(&[]);
    let retrying_x = format!("size=1 first_position={x_position}");
    daemon.wait_for_log(&retrying_x, 1, SETTLE).await;
    daemon.stop().await;

    let parked = store.parked(Some(SHIPMENTS)).await.expect("parked");
    let subscription = store
        .subscription(SHIPMENTS)
        .await
        .expect("read the subscription");
    let checkpoint = subscription
        .expect("the subscription exists")
        .checkpoint
        .position();
    let shipments = store
        .read_positions(Some("shipment"), 0, 100)
        .await
        .expect("read");
    // Each event was appended in a transaction of its own, one after the other: the
    // subscription order is the position order.
    let skipped =
        checkpoint >= x_position && !parked.iter().any(|entry| entry.position == x_position);
    let shipped: Vec<&str> = shipments
        .iter()
        .map(|event| event.aggregate_id.as_str())
        .collect();
    assert!(
        !skipped,
        "the order.paid of o-x (position {x_position}) failed on every try, yet after the \
         graceful shutdown it is neither parked nor after the checkpoint (at position \
         {checkpoint}; parked {parked:?}; shipments for {shipped:?}): the shutdown skipped it"
    );

    set_created_metadata(&database, "o-x", "{}").await;
    deployment.cli_ok(&["parked", "replay", "--all"]).await;
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_until(
            "a shipment for each of the three paid orders",
            SETTLE,
            || async {
                let shipments = store
                    .read_positions(Some("shipment"), 0, 100)
                    .await
                    .expect("read");
                let ids: Vec<String> = shipments
                    .into_iter()
                    .map(|event| event.aggregate_id)
                    .collect();
                let lag = store.lag(SHIPMENTS).await.expect("lag");
                let parked = store.parked(None).await.expect("parked").len();
                if ids.len() == 3 && lag == 0 && parked == 0 {
                    Ok(())
                } else {
                    Err(format!("shipments for {ids:?}, lag {lag}, {parked} parked"))
                }
            },
        )
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_shutdown_while_isolating_a_failing_event_skips_nothing_on_postgres() {
    a_shutdown_while_isolating_a_failing_event_skips_nothing(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn a_shutdown_while_isolating_a_failing_event_skips_nothing_on_sqlite() {
    a_shutdown_while_isolating_a_failing_event_skips_nothing(TestDatabase::sqlite()).await;
}
