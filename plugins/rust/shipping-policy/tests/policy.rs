//! The shipping policy in the harness: one `shipment.requested` per paid order, with a
//! deterministic id, and never a second one, even when the order is paid twice or every
//! event is delivered again.

use eventhost_harness::{TestPlugin, json};

fn shipping_policy() -> TestPlugin {
    TestPlugin::workspace("shipping-policy")
}

fn paid_order(plugin: &mut TestPlugin, order: &str, customer: &str) {
    plugin.append(
        "order",
        order,
        "order.created",
        json!({"customer": customer, "lines": []}),
    );
    plugin.append("order", order, "order.paid", json!({}));
}

#[test]
fn a_paid_order_requests_one_shipment_for_its_customer() {
    let mut plugin = shipping_policy();
    paid_order(&mut plugin, "o-1", "c-1");
    plugin.run();
    let emitted = plugin.emitted();
    assert_eq!(emitted.len(), 1);
    let shipment = &emitted[0];
    assert_eq!(
        (
            shipment.aggregate_type.as_str(),
            shipment.aggregate_id.as_str()
        ),
        ("shipment", "o-1")
    );
    assert_eq!(
        (shipment.event_type.as_str(), shipment.version),
        ("shipment.requested", 1)
    );
    assert_eq!(
        shipment.payload,
        json!({"order_id": "o-1", "customer": "c-1"})
    );
    let paid = plugin
        .events()
        .into_iter()
        .find(|event| event.event_type == "order.paid")
        .unwrap();
    assert_eq!(shipment.metadata["causation-id"], paid.id.to_string());
}

#[test]
fn re_delivering_every_event_requests_no_second_shipment() {
    let mut plugin = shipping_policy();
    paid_order(&mut plugin, "o-1", "c-1");
    plugin.run();
    let first = plugin.emitted().to_vec();
    plugin.reset("shipments").run();
    assert_eq!(plugin.emitted(), first.as_slice());
    assert!(plugin.errors().is_empty(), "{:?}", plugin.errors());
    let messages: Vec<&str> = plugin
        .logs()
        .iter()
        .map(|log| log.line.message.as_str())
        .collect();
    assert_eq!(messages, ["shipment for order o-1 already requested"]);
}

#[test]
fn the_shipment_id_is_the_same_in_every_run() {
    let ids: Vec<_> = (0..2)
        .map(|_| {
            let mut plugin = shipping_policy();
            paid_order(&mut plugin, "o-1", "c-1");
            plugin.run();
            plugin.emitted()[0].id
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn paying_an_order_twice_requests_one_shipment() {
    let mut plugin = shipping_policy();
    paid_order(&mut plugin, "o-1", "c-1");
    plugin.append("order", "o-1", "order.paid", json!({}));
    plugin.run();
    assert_eq!(plugin.emitted().len(), 1);
}

#[test]
fn a_payment_without_an_order_is_logged_and_ignored() {
    let mut plugin = shipping_policy();
    plugin.append("order", "o-7", "order.paid", json!({}));
    plugin.run();
    assert!(plugin.emitted().is_empty());
    let messages: Vec<&str> = plugin
        .logs()
        .iter()
        .map(|log| log.line.message.as_str())
        .collect();
    assert_eq!(
        messages,
        ["order.paid for order o-7 without order.created ignored"]
    );
}
