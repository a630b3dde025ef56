//! {{name}}: stock on hand per SKU, and a `stock.low` alert when a sale takes it below
//! [`LOW_STOCK`]. Made by `eventhost new`; README.md says how to build, test and deploy it.
//!
//! Subscription `stock`: the `stock.received` and `stock.sold` events of aggregate type `sku`,
//! payload `{"quantity": <1 to 1000000000>}`. State key `on-hand/<sku>` holds the JSON
//! integer on hand. A sale that takes it from `LOW_STOCK` or more to below emits `stock.low`
//! (payload `{"sku": ..., "on_hand": ...}`) to stream `stock-alert/<sku>`, with an id derived
//! from the sale's id: a batch handled again emits the same event, which is stored once.

use eventhost_sdk::{
    Event, ExpectedVersion, HandlerError, NewEvent, Plugin, PluginInfo, StreamId, Subscription,
    emit, id, log, serde_json, state,
};
use serde::Serialize;

const PLUGIN: &str = "{{name}}";

/// Below this many on hand, a SKU is low.
const LOW_STOCK: i64 = 5;

/// The largest quantity one event may move.
const MAX_QUANTITY: i64 = 1_000_000_000;

/// The largest amount on hand, either way: beyond it JavaScript numbers lose precision.
const MAX_ON_HAND: i64 = (1 << 53) - 1;

struct Stock;

impl Plugin for Stock {
    fn describe() -> PluginInfo {
        PluginInfo::new(PLUGIN, "0.1.0").subscription(
            Subscription::new("stock")
                .aggregate_types(["sku"])
                .event_types(["stock.received", "stock.sold"])
                .batch_size(100),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        batch.iter().try_for_each(apply)
    }
}

eventhost_sdk::export_plugin!(Stock);

#[derive(Serialize)]
struct StockLow<'a> {
    sku: &'a str,
    on_hand: i64,
}

fn apply(event: &Event) -> Result<(), HandlerError> {
    let quantity = quantity_of(event)?;
    let sku = event.stream.aggregate_id.as_str();
    let key = format!("on-hand/{sku}");
    let before = state::get::<i64>(&key)?.unwrap_or(0);
    let after = match event.event_type.as_str() {
        "stock.received" => before + quantity,
        _ => before - quantity,
    };
    if after.abs() > MAX_ON_HAND {
        // The same event fails the same way every time: not retryable.
        return Err(HandlerError::permanent(format!(
            "event {} ({}): {sku} on hand would leave the range of ±{MAX_ON_HAND}",
            event.id, event.event_type
        )));
    }
    state::set(&key, &after)?;
    if before >= LOW_STOCK && after < LOW_STOCK {
        let alert = NewEvent::json("stock.low", &StockLow { sku, on_hand: after })?
            .with_id(id::v5(&format!("eventhost:{PLUGIN}:stock.low:{}", event.id)))
            .with_metadata("causation-id", &event.id);
        emit(&StreamId::new("stock-alert", sku), ExpectedVersion::Any, &[alert])?;
        log::info(format_args!("stock of {sku} is low: {after} on hand"));
    }
    Ok(())
}

/// The event's quantity, or a non-retryable error naming the event.
fn quantity_of(event: &Event) -> Result<i64, HandlerError> {
    serde_json::from_str::<serde_json::Value>(&event.payload)
        .ok()
        .and_then(|payload| payload.get("quantity")?.as_i64())
        .filter(|quantity| (1..=MAX_QUANTITY).contains(quantity))
        .ok_or_else(|| {
            HandlerError::permanent(format!(
                "event {} ({}): the payload needs a whole `quantity` from 1 to {MAX_QUANTITY}",
                event.id, event.event_type
            ))
        })
}
