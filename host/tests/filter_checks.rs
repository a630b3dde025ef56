//! Filters that cannot silently miss. A name in a subscription's filter that no stored event
//! has (a typo: `order.paid` where the events say `order.payed`) receives nothing and shows
//! lag 0; a redeploy that changes a running subscription's filter starts it again with its
//! state cleared. `plugins check --database-url` says both before the deploy, and the daemon
//! says both in a warning when it installs the plugin.
//!
//! Uses `dist/plugins/shipping-policy.wasm` (its subscription `shipments` takes event type
//! `order.paid`), built by `bash scripts/build-plugins.sh`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use daemon::{Deployment, TestDatabase, compile_cache, dist};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{
    self as store, Checkpoint, EventStore, Filter, SubscriptionDefinition, SubscriptionStore,
};
use serde_json::json;

const SHIPMENTS: &str = "shipping-policy.shipments";

/// A database whose orders were paid as `order.payed`, and where `shipping-policy.shipments`
/// runs with another filter (event type `order.created`) than the file's.
async fn misspelled(database: &TestDatabase) {
    let store = store::connect(database.url()).await.expect("connect");
    for n in 0..3 {
        let events = [
            NewEvent::new("order.created", json!({ "customer": "ada" })),
            NewEvent::new("order.payed", json!({})),
        ];
        store
            .append(
                &StreamId::new("order", format!("o-{n}")),
                ExpectedVersion::NoStream,
                &events,
            )
            .await
            .expect("append");
    }
    let running = SubscriptionDefinition {
        name: SHIPMENTS.to_owned(),
        filter: Filter {
            aggregate_types: Vec::new(),
            event_types: vec!["order.created".to_owned()],
        },
        start: Checkpoint::ORIGIN,
    };
    store
        .define_subscriptions("shipping-policy", &[running])
        .await
        .expect("define the running subscription");
}

async fn check_warns_before_the_deploy(database: TestDatabase) {
    misspelled(&database).await;
    let deployment = Deployment::new(database.url());
    let wasm = dist("plugins/shipping-policy.wasm");
    let wasm = wasm.to_str().expect("a UTF-8 path");
    let cache = compile_cache();
    let cache = cache.to_str().expect("a UTF-8 path");
    let checked = deployment
        .cli_ok(&["plugins", "check", wasm, "--cache-dir", cache])
        .await;
    let warnings: Vec<&str> = checked
        .stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("warning: "))
        .collect();
    assert_eq!(
        warnings,
        [
            "shipping-policy.shipments: its filter differs from the running subscription's: \
             deploying it starts the subscription again from its beginning, clears its state \
             and handles the 0 stored events the new filter matches again",
            "shipping-policy.shipments: no stored event has event type `order.paid` (closest \
             stored: `order.payed`): the subscription would receive nothing of that name (a \
             typo?)",
        ],
        "{checked}"
    );
    let json = deployment
        .cli_ok(&["plugins", "check", wasm, "--json", "--cache-dir", cache])
        .await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );

    // Without --database-url, check reads no database, even with DATABASE_URL set.
    let alone = std::process::Command::new(daemon::EVENTHOST)
        .args(["plugins", "check", wasm, "--cache-dir", cache])
        .env("DATABASE_URL", database.url())
        .output()
        .expect("run eventhost plugins check");
    let stdout = String::from_utf8_lossy(&alone.stdout);
    assert!(alone.status.success(), "{alone:?}");
    assert!(!stdout.contains("warning"), "{stdout}");
}

async fn the_daemon_warns_when_it_installs_the_plugin(database: TestDatabase) {
    misspelled(&database).await;
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/shipping-policy.wasm", "shipping-policy.wasm");
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log(
            "filter changed: the subscription starts again from its beginning with its state \
             cleared; 0 stored events match the new filter",
            1,
            Duration::from_secs(60),
        )
        .await;
    daemon
        .wait_for_log(
            "no stored event has event type `order.paid` (closest stored: `order.payed`): the \
             subscription receives nothing of that name until one is appended",
            1,
            Duration::from_secs(10),
        )
        .await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("no stored event has"))
        .unwrap_or_default();
    assert!(
        line.contains("WARN") && line.contains(SHIPMENTS),
        "a warning naming the subscription: {line}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn plugins_check_with_a_database_warns_of_a_restart_and_a_name_no_event_has_on_postgres() {
    check_warns_before_the_deploy(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn plugins_check_with_a_database_warns_of_a_restart_and_a_name_no_event_has_on_sqlite() {
    check_warns_before_the_deploy(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn the_daemon_warns_of_a_restart_and_a_name_no_event_has_on_postgres() {
    the_daemon_warns_when_it_installs_the_plugin(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn the_daemon_warns_of_a_restart_and_a_name_no_event_has_on_sqlite() {
    the_daemon_warns_when_it_installs_the_plugin(TestDatabase::sqlite()).await;
}
