//! {{name}} in the harness: the daemon's runtime over an in-memory store, no database.
//! Build the component first: `bash build.sh` (or `cargo build --release --target wasm32-wasip2`).

use eventhost_harness::{TestPlugin, Value, json};

fn plugin() -> TestPlugin {
    TestPlugin::workspace("{{name}}")
}

fn expectations(text: &str) -> Value {
    eventhost_sdk::serde_json::from_str(text).expect("the expectations file is JSON")
}

#[test]
fn the_fixture_meets_its_expectations() {
    let mut plugin = plugin();
    plugin.append_jsonl(include_str!("../events.jsonl"));
    plugin.run();
    plugin.assert_meets(expectations(include_str!("../expect.json")));
}

#[test]
fn a_bad_payload_fails_its_event_alone() {
    let mut plugin = plugin();
    plugin.append_jsonl(include_str!("../bad.jsonl"));
    plugin.run();
    plugin.assert_meets(expectations(include_str!("../bad.expect.json")));
}

#[test]
fn a_sale_that_stays_low_raises_no_second_alert() {
    let mut plugin = plugin();
    plugin.append("sku", "mug", "stock.received", json!({"quantity": 6}));
    plugin.append("sku", "mug", "stock.sold", json!({"quantity": 2}));
    plugin.append("sku", "mug", "stock.sold", json!({"quantity": 1}));
    plugin.run();
    assert_eq!(plugin.state_value("stock", "on-hand/mug"), Some(json!(3)));
    assert_eq!(plugin.emitted().len(), 1, "{:?}", plugin.emitted());
    assert!(plugin.errors().is_empty(), "{:?}", plugin.errors());
}
