//! The order notifier in the harness: one message per paid order to each sink, keyed by the
//! order, and none from a batch that the plugin may not complete.

use eventhost_harness::{TestPlugin, json};

fn notifier() -> TestPlugin {
    let mut plugin = TestPlugin::workspace("order-notifier");
    plugin.grant(&["billing-webhook", "order-events"]);
    plugin
}

#[test]
fn a_paid_order_is_announced_to_both_sinks_keyed_by_the_order() {
    let mut plugin = notifier();
    plugin.append("order", "o-1", "order.created", json!({"customer": "c-1"}));
    let paid = plugin.append("order", "o-1", "order.paid", json!({"amount_cents": 1500}));
    plugin.run();
    let body = json!({"event_id": paid.id.to_string(), "order_id": "o-1", "amount_cents": 1500});
    plugin.assert_meets(json!({
        "messages": [
            {"sink": "billing-webhook", "key": "o-1",
             "headers": [["content-type", "application/json"]], "body": body},
            {"sink": "order-events", "key": "o-1",
             "headers": [["content-type", "application/json"], ["x-event-type", "order.paid"]],
             "body": body},
        ],
        "errors": [],
    }));
    let ids: Vec<&str> = plugin.messages().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each message has its own idempotency key");
}

#[test]
fn without_its_grants_the_plugin_fails_and_asks_for_nothing() {
    let mut plugin = TestPlugin::workspace("order-notifier");
    plugin.append("order", "o-1", "order.paid", json!({"amount_cents": 1}));
    plugin.run();
    assert!(plugin.messages().is_empty());
    let errors = plugin.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .error
            .contains("sink `billing-webhook` is not granted"),
        "{}",
        errors[0].error
    );
}
