//! shipping-policy: requests a shipment for every paid order, exactly once.
//!
//! This comment is the specification; the Python and JavaScript versions of this plugin
//! must produce the same events and logs from the same events.
//!
//! Plugin `shipping-policy` 1.0.0 has one subscription, `shipments`: event type `order.paid`,
//! batches of 100, from the beginning. For each `order.paid` event of the batch, in order:
//!
//! 1. Read the order's stream from version 1 (pages of 1000) up to its first `order.created`
//!    event and take its payload's `customer` (a string; otherwise a non-retryable error).
//!    (This version reads every order of the batch, and its shipment stream's version, in
//!    one `read-streams` call up front: one round trip per batch, not two per order.)
//!    If the stream has no `order.created`, log warn `order.paid for order <aggregate_id>
//!    without order.created ignored` and go on with the next event.
//! 2. Emit to stream (`shipment`, <order aggregate_id>), expecting no stream, one event
//!    `shipment.requested` with payload `{"order_id":<order aggregate_id>,"customer":c}`
//!    (compact JSON, non-ASCII left unescaped),
//!    id `uuid5(NAMESPACE_URL, "eventhost:shipping-policy:" + <order.paid event id>)` and
//!    metadata `causation-id` = the `order.paid` event id.
//! 3. On a version conflict (the shipment was already requested, in this batch or before),
//!    log info `shipment for order <aggregate_id> already requested` and go on. Any other
//!    host error fails the batch (retryable if the host was unavailable, otherwise not).

use eventhost_sdk::{
    Event, ExpectedVersion, HandlerError, HostError, NewEvent, Plugin, PluginInfo, StreamId,
    StreamPage, StreamRead, Subscription, emit, log, read_stream, read_streams,
};
use serde::{Deserialize, Serialize};

/// How many events one read of a stream asks for (the host's cap).
const READ_PAGE: u32 = 1000;

/// The most streams one `read_streams` call reads (the host's cap).
const READS_PER_CALL: usize = 1000;

struct ShippingPolicy;

impl Plugin for ShippingPolicy {
    fn describe() -> PluginInfo {
        PluginInfo::new("shipping-policy", "1.0.0").subscription(
            Subscription::new("shipments")
                .event_types(["order.paid"])
                .batch_size(100),
        )
    }

    fn handle(_subscription: &str, batch: Vec<Event>) -> Result<(), HandlerError> {
        let paid: Vec<&Event> = batch
            .iter()
            .filter(|event| event.event_type == "order.paid")
            .collect();
        // Each order's first page of events, and its shipment stream's version, which the
        // emit below then checks without a round trip of its own.
        let reads: Vec<StreamRead> = paid
            .iter()
            .flat_map(|event| {
                [
                    StreamRead::events(&event.stream, 1, READ_PAGE),
                    StreamRead::version(&shipment_of(event)),
                ]
            })
            .collect();
        let mut pages = Vec::with_capacity(reads.len());
        for chunk in reads.chunks(READS_PER_CALL) {
            pages.extend(read_streams(chunk)?);
        }
        paid.iter()
            .zip(pages.chunks(2))
            .try_for_each(|(event, pages)| request_shipment(event, &pages[0]))
    }
}

eventhost_sdk::export_plugin!(ShippingPolicy);

#[derive(Deserialize)]
struct OrderCreated {
    customer: String,
}

#[derive(Serialize)]
struct ShipmentRequested<'a> {
    order_id: &'a str,
    customer: &'a str,
}

/// Requests the shipment of the order `paid` names, whose first page of events is `order`.
fn request_shipment(paid: &Event, order: &StreamPage) -> Result<(), HandlerError> {
    let order_id = &paid.stream.aggregate_id;
    let Some(customer) = customer_of(&paid.stream, order)? else {
        log::warn(format_args!(
            "order.paid for order {order_id} without order.created ignored"
        ));
        return Ok(());
    };
    let payload = ShipmentRequested {
        order_id,
        customer: &customer,
    };
    let requested = NewEvent::json("shipment.requested", &payload)?
        .with_id(shipment_id(paid))
        .with_metadata("causation-id", &paid.id);
    match emit(&shipment_of(paid), ExpectedVersion::NoStream, &[requested]) {
        Ok(_) => Ok(()),
        Err(HostError::Conflict(_)) => {
            log::info(format_args!(
                "shipment for order {order_id} already requested"
            ));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The stream of the shipment requested for the order `paid` names.
fn shipment_of(paid: &Event) -> StreamId {
    StreamId::new("shipment", &paid.stream.aggregate_id)
}

/// The customer named by the first `order.created` event of `order`, if it has one, looking
/// past the first page (`first`) when it was full.
fn customer_of(order: &StreamId, first: &StreamPage) -> Result<Option<String>, HandlerError> {
    let mut next;
    let mut page = first.events.as_slice();
    loop {
        if let Some(created) = page.iter().find(|e| e.event_type == "order.created") {
            return Ok(Some(created.payload::<OrderCreated>()?.customer));
        }
        match page.last() {
            Some(last) if page.len() == READ_PAGE as usize => {
                next = read_stream(order, last.version + 1, READ_PAGE)?;
                page = &next;
            }
            _ => return Ok(None),
        }
    }
}

/// The same id for every delivery of the same `order.paid` event.
fn shipment_id(paid: &Event) -> String {
    let name = format!("eventhost:shipping-policy:{}", paid.id);
    eventhost_sdk::id::v5(&name)
}
