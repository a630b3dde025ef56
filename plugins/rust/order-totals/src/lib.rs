//! order-totals: a read model of orders and of what each customer ordered and paid.
//!
//! This comment is the specification; the Python and JavaScript versions of this plugin
//! must produce the same state and logs from the same events.
//!
//! Plugin `order-totals` 1.0.0 has one subscription, `totals`: aggregate type `order`, batches
//! of 100, from the beginning. Events are applied one by one, in order. State values are
//! compact JSON (no whitespace, non-ASCII left unescaped) with fields in the order shown;
//! amounts are JSON integers (no fraction or exponent) and must stay within ±2^53 (here: an
//! i64 overflow is a non-retryable error).
//!
//! - `order.created`, payload `{"customer": string, "lines": [{"sku": string, "quantity": int,
//!   "unit_price_cents": int}]}` (`sku` is not read; extra fields are ignored): if
//!   `order/<aggregate_id>` is already set, logs warn `order.created for existing order
//!   <aggregate_id> ignored`. Otherwise sets `order/<aggregate_id>` to `{"customer":c,"status":"open",
//!   "lines":<number of lines>,"total_cents":<sum of quantity*unit_price_cents>}` and
//!   `customer/<c>` to `{"orders":<orders+1>,"paid_cents":<paid_cents>}`.
//! - `order.line-added`, payload `{"sku": string, "quantity": int, "unit_price_cents": int}`
//!   (`sku` not read): `lines` + 1, `total_cents` + quantity*unit_price_cents, any status.
//! - `order.paid` (payload not read): if the status is already `paid`, nothing; otherwise
//!   status `paid` and the customer's `paid_cents` + the order's `total_cents`.
//! - `order.cancelled` (payload not read): status `cancelled`.
//! - `order.line-added`, `order.paid` or `order.cancelled` for an order with no state: logs
//!   warn `<event type> for unknown order <aggregate_id> ignored`.
//! - Any other event type is ignored. A missing `customer/<c>` reads as `{"orders":0,
//!   "paid_cents":0}`. A payload is decoded before any state is read; a payload that lacks a
//!   field or has one of the wrong JSON type fails the batch with a non-retryable error.

use eventhost_sdk::{Event, HandlerError, Plugin, PluginInfo, Subscription, log, state};
use serde::{Deserialize, Serialize};

struct OrderTotals;

impl Plugin for OrderTotals {
    fn describe() -> PluginInfo {
        PluginInfo::new("order-totals", "1.0.0").subscription(
            Subscription::new("totals")
                .aggregate_types(["order"])
                .batch_size(100),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        prefetch(&batch)?;
        for event in &batch {
            match event.event_type.as_str() {
                "order.created" => created(event)?,
                "order.line-added" => line_added(event)?,
                "order.paid" => paid(event)?,
                "order.cancelled" => cancelled(event)?,
                _ => {}
            }
        }
        Ok(())
    }
}

eventhost_sdk::export_plugin!(OrderTotals);

#[derive(Deserialize)]
struct OrderCreated {
    customer: String,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    quantity: i64,
    unit_price_cents: i64,
}

#[derive(Serialize, Deserialize)]
struct Order {
    customer: String,
    status: Status,
    lines: u64,
    total_cents: i64,
}

#[derive(Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Open,
    Paid,
    Cancelled,
}

#[derive(Serialize, Deserialize, Default)]
struct Customer {
    orders: u64,
    paid_cents: i64,
}

fn created(event: &Event) -> Result<(), HandlerError> {
    let payload: OrderCreated = event.payload()?;
    let id = &event.stream.aggregate_id;
    if state::get::<Order>(&order_key(id))?.is_some() {
        log::warn(format_args!(
            "order.created for existing order {id} ignored"
        ));
        return Ok(());
    }
    let mut total_cents = 0i64;
    for line in &payload.lines {
        total_cents = add(event, total_cents, amount(event, line)?)?;
    }
    let order = Order {
        customer: payload.customer,
        status: Status::Open,
        lines: payload.lines.len() as u64,
        total_cents,
    };
    state::set(&order_key(id), &order)?;
    let mut customer = customer(&order.customer)?;
    customer.orders += 1;
    state::set(&customer_key(&order.customer), &customer)
}

fn line_added(event: &Event) -> Result<(), HandlerError> {
    let line: Line = event.payload()?;
    let Some(mut order) = order(event)? else {
        return Ok(());
    };
    order.lines += 1;
    order.total_cents = add(event, order.total_cents, amount(event, &line)?)?;
    state::set(&order_key(&event.stream.aggregate_id), &order)
}

fn paid(event: &Event) -> Result<(), HandlerError> {
    let Some(mut order) = order(event)? else {
        return Ok(());
    };
    if order.status == Status::Paid {
        return Ok(());
    }
    order.status = Status::Paid;
    state::set(&order_key(&event.stream.aggregate_id), &order)?;
    let mut customer = customer(&order.customer)?;
    customer.paid_cents = add(event, customer.paid_cents, order.total_cents)?;
    state::set(&customer_key(&order.customer), &customer)
}

fn cancelled(event: &Event) -> Result<(), HandlerError> {
    let Some(mut order) = order(event)? else {
        return Ok(());
    };
    order.status = Status::Cancelled;
    state::set(&order_key(&event.stream.aggregate_id), &order)
}

/// Reads the orders of the batch, and the customers its new orders name, in one host call
/// each (`state::get_many`), before the events are applied. The values are not used here:
/// the daemon keeps what was read, so the reads event by event below need no round trip to
/// the store even once the state has outgrown the daemon's cache, where each would cost one.
/// Values are read as any JSON, so a value of the wrong shape fails where the event that
/// reads it is applied, as without this.
fn prefetch(batch: &[Event]) -> Result<(), HandlerError> {
    let mut keys: Vec<String> = batch
        .iter()
        .map(|event| order_key(&event.stream.aggregate_id))
        .collect();
    keys.extend(
        batch
            .iter()
            .filter(|event| event.event_type == "order.created")
            .filter_map(|event| event.payload::<OrderCreated>().ok())
            .map(|created| customer_key(&created.customer)),
    );
    keys.sort_unstable();
    keys.dedup();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for chunk in keys.chunks(state::MAX_KEYS_PER_GET) {
        state::get_many::<serde::de::IgnoredAny>(chunk)?;
    }
    Ok(())
}

/// The state of the event's order, or `None` (logged) when the order is unknown.
fn order(event: &Event) -> Result<Option<Order>, HandlerError> {
    let id = &event.stream.aggregate_id;
    let order = state::get::<Order>(&order_key(id))?;
    if order.is_none() {
        log::warn(format_args!(
            "{} for unknown order {id} ignored",
            event.event_type
        ));
    }
    Ok(order)
}

fn customer(name: &str) -> Result<Customer, HandlerError> {
    Ok(state::get(&customer_key(name))?.unwrap_or_default())
}

fn order_key(aggregate_id: &str) -> String {
    format!("order/{aggregate_id}")
}

fn customer_key(customer: &str) -> String {
    format!("customer/{customer}")
}

fn amount(event: &Event, line: &Line) -> Result<i64, HandlerError> {
    line.quantity
        .checked_mul(line.unit_price_cents)
        .ok_or_else(|| overflow(event))
}

fn add(event: &Event, a: i64, b: i64) -> Result<i64, HandlerError> {
    a.checked_add(b).ok_or_else(|| overflow(event))
}

fn overflow(event: &Event) -> HandlerError {
    HandlerError::permanent(format!(
        "event {} ({}): amount overflows a 64-bit integer",
        event.id, event.event_type
    ))
}
