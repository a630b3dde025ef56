//! order-notifier: tells other systems that an order was paid, through the operator's sinks.
//!
//! Plugin `order-notifier` 1.0.0 has one subscription, `paid`: event type `order.paid`,
//! batches of 100, from the beginning. For each `order.paid` event of the batch, in order, it
//! asks the host to deliver the JSON body
//! `{"event_id":<id>,"order_id":<aggregate_id>,"amount_cents":<payload's amount_cents or null>}`
//! with the order's id as ordering key to two sinks:
//! - `billing-webhook` (an HTTP sink: the billing system's signed webhook), and
//! - `order-events` (a NATS JetStream sink), with the header `x-event-type: order.paid`.
//!
//! The operator grants both in the sidecar `order-notifier.toml` (`sinks = [...]`) and
//! configures them in the daemon's `eventhost.toml`. Nothing is sent unless the batch commits;
//! receivers drop the copies a retry may bring by the `idempotency-key` (HTTP) or
//! `Nats-Msg-Id` (NATS) the host adds.

use eventhost_sdk::deliver::{self, Message};
use eventhost_sdk::serde_json::Value;
use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription};
use serde::Serialize;

struct OrderNotifier;

impl Plugin for OrderNotifier {
    fn describe() -> PluginInfo {
        PluginInfo::new("order-notifier", "1.0.0").subscription(
            Subscription::new("paid")
                .event_types(["order.paid"])
                .batch_size(100),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        batch
            .iter()
            .filter(|event| event.event_type == "order.paid")
            .try_for_each(notify)
    }
}

eventhost_sdk::export_plugin!(OrderNotifier);

#[derive(Serialize)]
struct OrderPaid<'a> {
    event_id: &'a str,
    order_id: &'a str,
    amount_cents: Option<i64>,
}

fn notify(paid: &Event) -> Result<(), HandlerError> {
    let payload: Value = paid.payload()?;
    let order_id = &paid.stream.aggregate_id;
    let body = OrderPaid {
        event_id: &paid.id,
        order_id,
        amount_cents: payload.get("amount_cents").and_then(Value::as_i64),
    };
    let message = Message::json(&body)?.key(order_id.as_str());
    deliver::send("billing-webhook", &message)?;
    deliver::send(
        "order-events",
        &message.header("x-event-type", "order.paid"),
    )?;
    Ok(())
}
