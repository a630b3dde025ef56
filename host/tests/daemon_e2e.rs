//! The daemon end to end: the real `eventhost` binary, the example plugins from `dist/` and a
//! real database. Events appended with `eventhost append --file` and (PostgreSQL) with
//! `eventhost.append(...)` inside application transactions produce exactly the state and the
//! events the plugins' specifications describe; a reset of an idle subscription makes the
//! running daemon rebuild the projection; the daemon exits 0 on SIGTERM and SIGINT;
//! operator commands on unknown names fail with one clear error line.
//!
//! The plugins are built by `bash scripts/build-plugins.sh`; a missing one fails the test.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use daemon::{Deployment, TestDatabase};
use eventhost_store::{self as store, Store, SubscriptionStore};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

const STARTUP: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(30);

/// Orders o-1001 (paid), o-1002 (cancelled) and o-1003 (paid twice), as an operator's file.
const ORDERS_JSONL: &str = r#"{"aggregate_type":"order","aggregate_id":"o-1001","event_type":"order.created","payload":{"customer":"ada","lines":[{"sku":"book","quantity":2,"unit_price_cents":1250},{"sku":"pen","quantity":1,"unit_price_cents":500}]},"expected_version":"no-stream"}
{"aggregate_type":"order","aggregate_id":"o-1001","event_type":"order.line-added","payload":{"sku":"ink","quantity":3,"unit_price_cents":200},"expected_version":1}
{"aggregate_type":"order","aggregate_id":"o-1002","event_type":"order.created","payload":{"customer":"bob","lines":[{"sku":"lamp","quantity":1,"unit_price_cents":999}]}}
{"aggregate_type":"order","aggregate_id":"o-1001","event_type":"order.paid","payload":{"amount_cents":3600}}
{"aggregate_type":"order","aggregate_id":"o-1002","event_type":"order.cancelled","payload":{"reason":"changed mind"}}
{"aggregate_type":"order","aggregate_id":"o-1003","event_type":"order.created","payload":{"customer":"ada","lines":[{"sku":"mug","quantity":4,"unit_price_cents":250}]}}
{"aggregate_type":"order","aggregate_id":"o-1003","event_type":"order.paid","payload":{}}
{"aggregate_type":"order","aggregate_id":"o-1003","event_type":"order.paid","payload":{}}
"#;

const TOTALS: &str = "order-totals.totals";
const SHIPMENTS: &str = "shipping-policy.shipments";

fn order(customer: &str, status: &str, lines: u64, total_cents: i64) -> String {
    format!(
        r#"{{"customer":"{customer}","status":"{status}","lines":{lines},"total_cents":{total_cents}}}"#
    )
}

fn customer(orders: u64, paid_cents: i64) -> String {
    format!(r#"{{"orders":{orders},"paid_cents":{paid_cents}}}"#)
}

/// A deployment of order-totals and shipping-policy, its daemon started and subscribed.
async fn start_orders_daemon(database: &TestDatabase) -> (Deployment, daemon::Daemon) {
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/order-totals.wasm", "order-totals.wasm");
    deployment.install("plugins/shipping-policy.wasm", "shipping-policy.wasm");
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("subscription started", 2, STARTUP)
        .await;
    (deployment, daemon)
}

async fn appended_events_produce_the_exact_projection_and_one_shipment_per_paid_order(
    database: TestDatabase,
) {
    // The test's own connection creates the schema before the daemon and the CLI race to.
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let (deployment, mut daemon) = start_orders_daemon(&database).await;

    let file = deployment.path("orders.jsonl");
    std::fs::write(&file, ORDERS_JSONL).expect("write the orders file");
    let appended = deployment
        .cli_ok(&["append", "--file", file.to_str().unwrap()])
        .await;
    assert_eq!(appended.json_lines().len(), 8, "{appended}");

    let mut expected = BTreeMap::from([
        ("order/o-1001".to_owned(), order("ada", "paid", 3, 3600)),
        ("order/o-1002".to_owned(), order("bob", "cancelled", 1, 999)),
        ("order/o-1003".to_owned(), order("ada", "paid", 1, 1000)),
        ("customer/ada".to_owned(), customer(2, 4600)),
        ("customer/bob".to_owned(), customer(1, 0)),
    ]);
    let mut paid_orders = vec![("o-1001", "ada"), ("o-1003", "ada")];
    if matches!(database, TestDatabase::Postgres(_)) {
        append_in_application_transactions(database.url()).await;
        expected.insert("order/o-2001".into(), order("carol", "paid", 2, 4700));
        expected.insert("customer/carol".into(), customer(1, 4700));
        paid_orders.push(("o-2001", "carol"));
    }

    wait_for_lag_zero(&deployment, &mut daemon, &[TOTALS, SHIPMENTS]).await;
    assert_eq!(projection(&store).await, expected, "the order-totals state");
    assert_one_shipment_per_paid_order(&deployment, &paid_orders).await;
    for subscription in deployment.subscriptions().await {
        assert_eq!(
            subscription["lag"], 0,
            "subscriptions list --json: {subscription}"
        );
    }

    // The operator rebuilds the projection while the daemon idles: no new event arrives, the
    // running daemon notices the reset and handles everything again, from a cleared state.
    deployment
        .cli_ok(&[
            "subscriptions",
            "reset",
            TOTALS,
            "--to",
            "0",
            "--clear-state",
        ])
        .await;
    daemon
        .wait_until(
            "the projection rebuilt after the reset",
            CATCH_UP,
            || async {
                let rebuilt = projection(&store).await;
                if rebuilt == expected {
                    Ok(())
                } else {
                    Err(format!("{} of {} keys", rebuilt.len(), expected.len()))
                }
            },
        )
        .await;
    assert_one_shipment_per_paid_order(&deployment, &paid_orders).await;
    daemon.stop().await;
    for subscription in deployment.subscriptions().await {
        assert_eq!(
            subscription["status"], "stopped",
            "after a graceful stop: {subscription}"
        );
    }
}

/// Appends o-2001 (created, line added, paid) in a committed application transaction while
/// another one, which appended o-2002 and an application row, stays open and then rolls back.
async fn append_in_application_transactions(url: &str) {
    let mut committed = PgConnection::connect(url).await.expect("connect");
    let mut rolled_back = PgConnection::connect(url).await.expect("connect");
    sqlx::query("CREATE TABLE app_orders (id text PRIMARY KEY, customer text NOT NULL)")
        .execute(&mut committed)
        .await
        .expect("create the application's table");

    let mut abandoned = rolled_back.begin().await.expect("begin");
    sqlx::query("INSERT INTO app_orders VALUES ('o-2002', 'dave')")
        .execute(&mut *abandoned)
        .await
        .expect("insert");
    let events = json!([
        {"event_type": "order.created", "payload": {"customer": "dave", "lines": [{"sku": "x", "quantity": 1, "unit_price_cents": 100}]}},
        {"event_type": "order.paid", "payload": {}},
    ]);
    app_append(&mut abandoned, "o-2002", Some(0), events).await;

    let mut transaction = committed.begin().await.expect("begin");
    sqlx::query("INSERT INTO app_orders VALUES ('o-2001', 'carol')")
        .execute(&mut *transaction)
        .await
        .expect("insert");
    let created = json!([{"event_type": "order.created", "payload": {"customer": "carol", "lines": [{"sku": "tea", "quantity": 3, "unit_price_cents": 1400}]}}]);
    app_append(&mut transaction, "o-2001", Some(0), created).await;
    let more = json!([
        {"event_type": "order.line-added", "payload": {"sku": "cup", "quantity": 1, "unit_price_cents": 500}},
        {"event_type": "order.paid", "payload": {}, "metadata": {"correlation-id": "checkout-7"}},
    ]);
    app_append(&mut transaction, "o-2001", Some(1), more).await;
    transaction.commit().await.expect("commit");

    abandoned.rollback().await.expect("roll back");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM app_orders")
        .fetch_one(&mut committed)
        .await
        .expect("count");
    assert_eq!(rows, 1, "only the committed application row exists");
}

async fn app_append(
    connection: &mut PgConnection,
    order_id: &str,
    expected_version: Option<i64>,
    events: Value,
) {
    sqlx::query("SELECT * FROM eventhost.append('order', $1, $2, $3)")
        .bind(order_id)
        .bind(expected_version)
        .bind(events)
        .fetch_all(connection)
        .await
        .unwrap_or_else(|error| panic!("eventhost.append for {order_id}: {error}"));
}

/// Waits until every named subscription exists and has nothing left to handle.
async fn wait_for_lag_zero(deployment: &Deployment, daemon: &mut daemon::Daemon, names: &[&str]) {
    daemon
        .wait_until("lag 0 on every subscription", CATCH_UP, || async {
            let listed = deployment.subscriptions().await;
            let lags: Vec<(String, Value)> = names
                .iter()
                .map(|name| {
                    let lag = listed
                        .iter()
                        .find(|entry| entry["name"] == *name)
                        .map(|entry| entry["lag"].clone());
                    ((*name).to_owned(), lag.unwrap_or(Value::Null))
                })
                .collect();
            if lags.iter().all(|(_, lag)| *lag == 0) {
                Ok(())
            } else {
                Err(format!("{lags:?}"))
            }
        })
        .await;
}

/// The whole state of order-totals, key by key.
async fn projection(store: &Store) -> BTreeMap<String, String> {
    let entries = store
        .state_scan(TOTALS, "", None, 10_000)
        .await
        .expect("scan the state");
    entries.into_iter().collect()
}

/// Exactly one `shipment.requested` per paid order, caused by the order's first `order.paid`.
async fn assert_one_shipment_per_paid_order(deployment: &Deployment, paid_orders: &[(&str, &str)]) {
    let shipments = deployment
        .cli_ok(&["read", "category", "shipment"])
        .await
        .json_lines();
    assert_eq!(
        shipments.len(),
        paid_orders.len(),
        "one shipment per paid order: {shipments:#?}"
    );
    for (order_id, customer) in paid_orders {
        let stream = deployment
            .cli_ok(&["read", "stream", "order", order_id])
            .await
            .json_lines();
        let first_paid = stream
            .iter()
            .find(|event| event["event_type"] == "order.paid")
            .expect("the order was paid");
        let shipment = shipments
            .iter()
            .find(|event| event["aggregate_id"] == *order_id)
            .unwrap_or_else(|| panic!("no shipment for {order_id}: {shipments:#?}"));
        assert_eq!(shipment["event_type"], "shipment.requested");
        assert_eq!(shipment["version"], 1);
        assert_eq!(
            shipment["payload"],
            json!({"order_id": order_id, "customer": customer})
        );
        assert_eq!(
            shipment["metadata"]["causation-id"], first_paid["id"],
            "{shipment}"
        );
    }
}

#[tokio::test]
async fn cli_and_transactional_sql_appends_produce_the_exact_projection_and_one_shipment_per_paid_order_on_postgres()
 {
    appended_events_produce_the_exact_projection_and_one_shipment_per_paid_order(
        TestDatabase::postgres().await,
    )
    .await;
}

#[tokio::test]
async fn cli_appends_produce_the_exact_projection_and_one_shipment_per_paid_order_on_sqlite() {
    appended_events_produce_the_exact_projection_and_one_shipment_per_paid_order(
        TestDatabase::sqlite(),
    )
    .await;
}

/// SIGTERM and SIGINT, four times each, to an idle daemon whose fallback poll is a minute away:
/// each time it exits 0 at once, saying it stopped. (Several rounds, because whether the
/// subscription or the NOTIFY listener sees the shutdown first varies from run to run.)
async fn termination_signals_while_idle_exit_zero_promptly(database: TestDatabase) {
    store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    for signal in ["TERM", "INT"].repeat(4) {
        let mut daemon = deployment.start_polling_every(60_000, &[]);
        daemon
            .wait_for_log("subscription started", 1, STARTUP)
            .await;
        // Let the subscription settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        daemon.assert_running();
        eprintln!(
            "SIG{signal} to the idle daemon of run {}",
            deployment.runs()
        );
        let (status, took) = daemon.stop_with(signal, Duration::from_secs(5)).await;
        eprintln!("SIG{signal}: exited with {status} after {took:?}");
        assert!(
            status.success(),
            "SIG{signal} while idle: the daemon exited with {status}"
        );
        assert!(
            took < Duration::from_secs(2),
            "SIG{signal} while idle: the daemon took {took:?} to exit"
        );
        let log = daemon.log();
        assert!(
            log.contains("stopping") && log.contains("stopped"),
            "SIG{signal}: the log says nothing of stopping:\n{log}"
        );
        let plugins = deployment
            .cli_ok(&["plugins", "list", "--json"])
            .await
            .json_lines();
        assert_eq!(plugins.len(), 1, "{plugins:?}");
        assert_eq!(plugins[0]["status"], "stopped", "SIG{signal}: {plugins:?}");
        assert_eq!(plugins[0]["name"], "counter", "{plugins:?}");
    }
}

#[tokio::test]
async fn sigterm_and_sigint_while_idle_exit_zero_promptly_on_postgres() {
    termination_signals_while_idle_exit_zero_promptly(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sigterm_and_sigint_while_idle_exit_zero_promptly_on_sqlite() {
    termination_signals_while_idle_exit_zero_promptly(TestDatabase::sqlite()).await;
}

/// `subscriptions reset` and `parked list` of an unknown name and `parked skip`/`replay` of an
/// unknown id exit 1 with one `error: ...` line naming what was not found.
async fn unknown_names_fail_with_one_error_line(database: TestDatabase) {
    store::connect(database.url())
        .await
        .expect("connect to the test database");
    let deployment = Deployment::new(database.url());
    let cases: [(&[&str], &str); 4] = [
        (&["subscriptions", "reset", "nope.none"], "nope.none"),
        (
            &["parked", "list", "nope.none"],
            "subscription \"nope.none\" not found",
        ),
        (
            &["parked", "skip", "424242"],
            "parked event 424242 not found",
        ),
        (
            &["parked", "replay", "424242"],
            "parked event 424242 not found",
        ),
    ];
    for (args, named) in cases {
        let output = deployment.cli(args).await;
        assert_eq!(output.status.code(), Some(1), "{output}");
        let lines: Vec<&str> = output.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line expected: {output}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(named),
            "unclear error: {output}"
        );
        assert!(
            output.stdout.is_empty(),
            "nothing on stdout expected: {output}"
        );
    }
}

#[tokio::test]
async fn resetting_an_unknown_subscription_or_skipping_an_unknown_parked_event_fails_with_one_error_line_on_postgres()
 {
    unknown_names_fail_with_one_error_line(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn resetting_an_unknown_subscription_or_skipping_an_unknown_parked_event_fails_with_one_error_line_on_sqlite()
 {
    unknown_names_fail_with_one_error_line(TestDatabase::sqlite()).await;
}
