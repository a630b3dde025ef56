//! The counter plugin in the harness: it counts every event, whatever its stream, across
//! batches of at most 1000.

use eventhost_harness::{TestPlugin, json};

fn counter() -> TestPlugin {
    TestPlugin::workspace("counter")
}

#[test]
fn counts_every_event_of_every_stream() {
    let mut plugin = counter();
    plugin.append("order", "o-1", "order.created", json!({}));
    plugin.append("order", "o-1", "order.paid", json!({}));
    plugin.append("customer", "c-1", "customer.registered", json!({}));
    plugin.run();
    assert_eq!(plugin.state_value("all", "count"), Some(json!(3)));
    assert!(plugin.errors().is_empty(), "{:?}", plugin.errors());
}

#[test]
fn the_count_adds_up_across_batches_of_at_most_a_thousand() {
    let mut plugin = counter();
    for n in 0..2500 {
        plugin.append("tick", "t-1", "ticked", json!({ "n": n }));
    }
    plugin.run();
    assert_eq!(plugin.state_value("all", "count"), Some(json!(2500)));
    assert_eq!(plugin.batches(), 3);
}

#[test]
fn later_runs_count_only_new_events() {
    let mut plugin = counter();
    plugin.append("tick", "t-1", "ticked", json!({}));
    plugin.run();
    plugin.append("tick", "t-1", "ticked", json!({}));
    plugin.run();
    assert_eq!(plugin.state_value("all", "count"), Some(json!(2)));
    assert!(plugin.emitted().is_empty());
}
