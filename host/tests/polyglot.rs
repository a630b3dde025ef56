//! The order-totals projection written in Rust, Python and JavaScript has identical effects.
//!
//! - `eventhost test` passes the shared expectations (`examples/orders.expect.json`) for each;
//! - on the edge cases (`examples/orders-edge.jsonl`) and on bad payloads
//!   (`tests/fixtures/order-totals-payloads.jsonl`) the three reports are the same but for the
//!   plugin's name and the wording of decode errors: same state, logs, emitted events, and
//!   the same events failing, non-retryably;
//! - the daemon running the three side by side on PostgreSQL ends with byte-identical state
//!   and the same parked events, and that state is what the harness computes.
//!
//! The components are built by `bash scripts/build-plugins.sh`; a missing one fails the test.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon::{Deployment, EVENTHOST, TestDatabase, compile_cache, dist};
use eventhost_store::{self as store, SubscriptionStore};
use serde_json::Value;

/// Each language's build: the plugin's name and its component under `dist/`.
const PLUGINS: [(&str, &str); 3] = [
    ("order-totals", "plugins/order-totals.wasm"),
    ("order-totals-py", "plugins/order-totals-py.wasm"),
    ("order-totals-js", "plugins/order-totals-js.wasm"),
];

/// Compiling a Python or JavaScript component takes tens of seconds in a debug build.
const STARTUP: Duration = Duration::from_secs(600);
const SETTLE: Duration = Duration::from_secs(60);

fn workspace(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Runs `eventhost test` and returns its exit code and its JSON report.
fn harness(plugin: &Path, events: &Path, expect: Option<&Path>) -> (Option<i32>, Value) {
    let mut command = Command::new(EVENTHOST);
    command
        .arg("test")
        .arg(plugin)
        .arg("--events")
        .arg(events)
        .arg("--cache-dir")
        .arg(compile_cache());
    if let Some(expect) = expect {
        command.arg("--expect").arg(expect);
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {EVENTHOST}: {error}"));
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "eventhost test {} printed no report ({error}); stderr:\n{}",
            plugin.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// A report with what may differ between languages taken out: the plugin's name, and each
/// error's wording (its subscription, events and retryability stay).
fn comparable(mut report: Value) -> Value {
    report["plugin"]["name"] = Value::Null;
    if let Some(errors) = report["errors"].as_array_mut() {
        for error in errors {
            let message = error["error"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "every failure says why: {error}");
            error["error"] = Value::Null;
        }
    }
    report
}

/// The three reports on `events`, checked equal to the Rust one; returns the Rust one.
fn identical_reports(events: &Path) -> Value {
    let reports: Vec<(&str, Value)> = PLUGINS
        .iter()
        .map(|(name, wasm)| (*name, harness(&dist(wasm), events, None).1))
        .collect();
    let (_, rust) = &reports[0];
    for (name, report) in &reports {
        assert_eq!(
            report["plugin"]["name"], *name,
            "the plugin describes itself"
        );
        assert_eq!(
            comparable(report.clone()),
            comparable(rust.clone()),
            "{name} on {} differs from the Rust plugin",
            events.display()
        );
    }
    rust.clone()
}

#[test]
fn each_language_meets_the_shared_expectations() {
    for (name, wasm) in PLUGINS {
        let (code, report) = harness(
            &dist(wasm),
            &workspace("examples/orders.jsonl"),
            Some(&workspace("examples/orders.expect.json")),
        );
        assert_eq!(code, Some(0), "{name}: {report:#}");
    }
}

#[test]
fn edge_cases_give_identical_state_logs_and_events_in_every_language() {
    let rust = identical_reports(&workspace("examples/orders-edge.jsonl"));
    // The fixture exercises what it should: several batches, warnings, no failure.
    assert!(rust["batches"].as_u64() > Some(1), "{rust:#}");
    assert!(rust["state"]["totals"].as_object().map(|state| state.len()) > Some(10));
    let logs = rust["logs"].as_array().expect("logs");
    assert!(
        logs.iter().any(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message == "order.paid for unknown order o-405 ignored")
        }),
        "{logs:#?}"
    );
    assert_eq!(rust["errors"], Value::Array(Vec::new()));
}

#[test]
fn bad_payloads_fail_the_same_events_non_retryably_in_every_language() {
    let rust = identical_reports(&workspace(
        "host/tests/fixtures/order-totals-payloads.jsonl",
    ));
    let errors = rust["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 32, "{errors:#?}");
    assert!(errors.iter().all(|error| error["retryable"] == false));
    // The good events around them still count, exactly, up to the 64-bit limit.
    let state = &rust["state"]["totals"];
    assert_eq!(state["order/o-9"]["total_cents"], 602, "{rust:#}");
    assert_eq!(
        state["customer/huge"]["paid_cents"].as_u64(),
        Some(9_223_372_036_854_775_806),
        "{rust:#}"
    );
}

#[tokio::test]
async fn the_three_languages_side_by_side_in_the_daemon_end_with_the_same_state() {
    let database = TestDatabase::postgres().await;
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    for (name, wasm) in PLUGINS {
        deployment.install(wasm, &format!("{name}.wasm"));
    }
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("subscription started", PLUGINS.len(), STARTUP)
        .await;

    let fixtures = [
        workspace("examples/orders-edge.jsonl"),
        workspace("host/tests/fixtures/order-totals-payloads.jsonl"),
    ];
    let mut all = String::new();
    for fixture in &fixtures {
        all.push_str(&std::fs::read_to_string(fixture).expect("read a fixture"));
        deployment
            .cli_ok(&["append", "--file", fixture.to_str().expect("a UTF-8 path")])
            .await;
    }
    let names: Vec<String> = PLUGINS
        .iter()
        .map(|(name, _)| format!("{name}.totals"))
        .collect();
    daemon
        .wait_until("lag 0 on the three subscriptions", SETTLE, || async {
            let mut lags = Vec::new();
            for name in &names {
                lags.push(store.lag(name).await.map_err(|error| error.to_string())?);
            }
            if lags.iter().all(|lag| *lag == 0) {
                Ok(())
            } else {
                Err(format!("lags {lags:?}"))
            }
        })
        .await;

    let mut states = Vec::new();
    for name in &names {
        let entries = store
            .state_scan(name, "", None, 10_000)
            .await
            .expect("scan the state");
        states.push(entries.into_iter().collect::<BTreeMap<String, String>>());
    }
    for (name, state) in names.iter().zip(&states) {
        assert_eq!(state, &states[0], "{name}'s state, byte for byte");
    }

    let mut parked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in deployment.parked().await {
        parked
            .entry(
                entry["subscription"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .insert(entry["event_id"].to_string());
    }
    assert_eq!(parked.len(), PLUGINS.len(), "{parked:#?}");
    for (name, events) in &parked {
        assert_eq!(events.len(), 32, "{name}");
        assert_eq!(events, &parked[&names[0]], "{name} parked other events");
    }
    daemon.stop().await;

    // What the daemon stored is what the harness computes from the same events.
    let combined = deployment.path("all.jsonl");
    std::fs::write(&combined, all).expect("write the combined fixture");
    let (_, report) = harness(&dist(PLUGINS[0].1), &combined, None);
    let stored: BTreeMap<String, Value> = states[0]
        .iter()
        .map(|(key, value)| {
            let value = serde_json::from_str(value).expect("state values are JSON");
            (key.clone(), value)
        })
        .collect();
    let computed: BTreeMap<String, Value> =
        serde_json::from_value(report["state"]["totals"].clone()).expect("the report's state");
    assert_eq!(stored, computed);
}
