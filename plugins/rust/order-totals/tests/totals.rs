//! The order-totals projection in the harness: order totals and status, customer totals,
//! and what it ignores.

use eventhost_harness::{TestPlugin, json};

fn order_totals() -> TestPlugin {
    TestPlugin::workspace("order-totals")
}

fn created(plugin: &mut TestPlugin, order: &str, customer: &str) {
    let lines = json!([
        {"sku": "book", "quantity": 2, "unit_price_cents": 1250},
        {"sku": "pen", "quantity": 3, "unit_price_cents": 100}
    ]);
    plugin.append(
        "order",
        order,
        "order.created",
        json!({ "customer": customer, "lines": lines }),
    );
}

#[test]
fn an_order_totals_its_lines_and_follows_its_status() {
    let mut plugin = order_totals();
    created(&mut plugin, "o-1", "c-1");
    plugin.append(
        "order",
        "o-1",
        "order.line-added",
        json!({"sku": "ink", "quantity": 1, "unit_price_cents": 400}),
    );
    plugin.run();
    assert_eq!(
        plugin.state_value("totals", "order/o-1"),
        Some(json!({"customer": "c-1", "status": "open", "lines": 3, "total_cents": 3200}))
    );
    plugin.append("order", "o-1", "order.paid", json!({}));
    plugin.run();
    assert_eq!(
        plugin.state_value("totals", "order/o-1").unwrap()["status"],
        "paid"
    );
}

#[test]
fn a_customer_accumulates_orders_and_paid_amounts_once_per_order() {
    let mut plugin = order_totals();
    created(&mut plugin, "o-1", "c-1");
    created(&mut plugin, "o-2", "c-1");
    plugin.append("order", "o-1", "order.paid", json!({}));
    plugin.append("order", "o-1", "order.paid", json!({}));
    plugin.append("order", "o-2", "order.cancelled", json!({}));
    plugin.run();
    assert_eq!(
        plugin.state_value("totals", "customer/c-1"),
        Some(json!({"orders": 2, "paid_cents": 2800}))
    );
    assert_eq!(
        plugin.state_value("totals", "order/o-2").unwrap()["status"],
        "cancelled"
    );
}

#[test]
fn events_of_unknown_orders_are_logged_and_ignored() {
    let mut plugin = order_totals();
    plugin.append("order", "o-9", "order.paid", json!({}));
    plugin.append("customer", "c-1", "customer.registered", json!({}));
    plugin.run();
    assert!(plugin.state("totals").is_empty());
    let messages: Vec<&str> = plugin
        .logs()
        .iter()
        .map(|log| log.line.message.as_str())
        .collect();
    assert_eq!(messages, ["order.paid for unknown order o-9 ignored"]);
}

#[test]
fn a_malformed_payload_fails_only_its_own_event() {
    let mut plugin = order_totals();
    plugin.append("order", "o-1", "order.created", json!({"customer": 42}));
    created(&mut plugin, "o-2", "c-2");
    plugin.run();
    assert_eq!(plugin.errors().len(), 1, "{:?}", plugin.errors());
    assert!(!plugin.errors()[0].retryable);
    assert!(plugin.state_value("totals", "order/o-2").is_some());
}

#[test]
fn the_same_events_from_a_jsonl_fixture_give_the_same_state() {
    let mut plugin = order_totals();
    plugin.append_jsonl(concat!(
        r#"{"aggregate_type":"order","aggregate_id":"o-1","event_type":"order.created","payload":{"customer":"c-1","lines":[{"sku":"a","quantity":1,"unit_price_cents":999}]},"expected_version":"no-stream"}"#,
        "\n",
        r#"{"aggregate_type":"order","aggregate_id":"o-1","event_type":"order.paid","payload":{},"expected_version":1}"#,
    ));
    plugin.run();
    plugin.assert_meets(json!({
        "state": {"totals": {
            "order/o-1": {"customer": "c-1", "status": "paid", "lines": 1, "total_cents": 999},
            "customer/c-1": {"orders": 1, "paid_cents": 999}
        }},
        "emitted": [],
        "errors": []
    }));
}
