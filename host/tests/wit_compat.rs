//! Plugins built against `eventhost:plugin@0.1.0` keep loading and running on this daemon:
//! the WIT contract only adds within 0.1.x. The `.wasm` files in `fixtures/wit-0.1.0/` were
//! built from the 0.1.0 contract and are never rebuilt (see the README there); the daemon's
//! linker matches their `@0.1.0` imports to the host's newer 0.1.x interfaces.

#[macro_use]
mod support;
#[path = "support/daemon.rs"]
mod daemon;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::{Deployment, TestDatabase};
use eventhost_harness::{TestPlugin, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wit-0.1.0")
        .join(name)
}

/// The fixture imports the 0.1.0 interfaces, not a later version: it proves what it claims.
fn assert_built_for_0_1_0(name: &str) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("eventhost:plugin/host@0.1.0"),
        "{name} imports host@0.1.0"
    );
    assert!(!text.contains("@0.1.1"), "{name} names no later version");
}

#[test]
fn a_0_1_0_projection_and_policy_run_unchanged_in_the_harness() {
    assert_built_for_0_1_0("order-totals.wasm");
    assert_built_for_0_1_0("shipping-policy.wasm");
    let mut totals = TestPlugin::load(&fixture("order-totals.wasm"));
    totals.append(
        "order",
        "o-1",
        "order.created",
        json!({"customer": "ada", "lines": [{"sku": "book", "quantity": 2, "unit_price_cents": 1500}]}),
    );
    totals.append("order", "o-1", "order.paid", json!({}));
    totals.run();
    totals.assert_meets(json!({
        "state": {"totals": {
            "order/o-1": {"customer": "ada", "status": "paid", "lines": 1, "total_cents": 3000},
            "customer/ada": {"orders": 1, "paid_cents": 3000},
        }},
        "errors": [],
    }));

    let mut policy = TestPlugin::load(&fixture("shipping-policy.wasm"));
    policy.append(
        "order",
        "o-1",
        "order.created",
        json!({"customer": "ada", "lines": []}),
    );
    policy.append("order", "o-1", "order.paid", json!({}));
    policy.run();
    policy.assert_meets(json!({
        "emitted": [{"aggregate_type": "shipment", "aggregate_id": "o-1",
                     "event_type": "shipment.requested",
                     "payload": {"order_id": "o-1", "customer": "ada"}}],
        "errors": [],
    }));
}

#[tokio::test]
async fn a_daemon_runs_0_1_0_plugins_beside_today_s() {
    assert_built_for_0_1_0("counter.wasm");
    assert_built_for_0_1_0("hostile-fail-on.wasm");
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    std::fs::copy(
        fixture("counter.wasm"),
        deployment.plugin_path("counter.wasm"),
    )
    .unwrap();
    std::fs::copy(
        fixture("hostile-fail-on.wasm"),
        deployment.plugin_path("fail-on.wasm"),
    )
    .unwrap();
    deployment.install("plugins/order-totals.wasm", "order-totals.wasm");
    let mut daemon = deployment.start(&[]);
    deployment.append_items(20).await;
    daemon.until_counted(&deployment, 20).await;
    daemon
        .wait_until(
            "the 0.1.0 fail-on plugin's count",
            Duration::from_secs(30),
            || async {
                let state = deployment.cli(&["state", "hostile-fail-on.all"]).await;
                if !state.status.success() {
                    return Err(state.stderr);
                }
                let count = state
                    .json_lines()
                    .iter()
                    .find(|entry| entry["key"] == "count")
                    .and_then(|entry| entry["value"].as_u64());
                match count {
                    Some(20) => Ok(()),
                    other => Err(format!("count {other:?}")),
                }
            },
        )
        .await;
    let plugins = deployment.cli_ok(&["plugins", "list", "--json"]).await;
    let loaded = plugins
        .json_lines()
        .iter()
        .filter(|record| record["status"] == "running")
        .count();
    assert_eq!(loaded, 3, "{plugins}");
    daemon.stop().await;
}
