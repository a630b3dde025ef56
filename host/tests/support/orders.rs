//! The order script the crash and outage tests append: orders created (with lines), paid (some
//! twice), cancelled, and what the example plugins must make of them. Include it beside
//! `mod support;` and `daemon` with `#[path = "support/orders.rs"] mod orders;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::collections::BTreeMap;

use std::time::Duration;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{EventStore, Store, SubscriptionStore};
use serde_json::json;
use uuid::Uuid;

use crate::daemon::{Daemon, Deployment};

pub const COUNTER: &str = "counter.all";
pub const TOTALS: &str = "order-totals.totals";
pub const SHIPMENTS: &str = "shipping-policy.shipments";

/// Installs the example plugins the script runs through (counter, order-totals,
/// shipping-policy) with small batch sizes (sidecars), so that they make many commits.
pub fn install_example_plugins(deployment: &Deployment) {
    for (plugin, batch_size) in [("counter", 7), ("order-totals", 5), ("shipping-policy", 3)] {
        deployment.install(&format!("plugins/{plugin}.wasm"), &format!("{plugin}.wasm"));
        deployment.sidecar(
            &format!("{plugin}.wasm"),
            &format!("batch_size = {batch_size}\n"),
        );
    }
}

/// Order `n` of the script: what is appended, and what order-totals must make of it.
pub struct Order {
    pub number: usize,
    pub id: String,
    pub customer: String,
    /// `(quantity, unit_price_cents)` of the lines at creation.
    pub lines: Vec<(i64, i64)>,
    pub added: Option<(i64, i64)>,
    /// How many `order.paid` events (0, 1, or a repeated 2).
    pub paid: usize,
    pub cancelled: bool,
}

impl Order {
    pub fn nth(n: usize) -> Self {
        let n64 = n as i64;
        let lines = if n.is_multiple_of(2) {
            vec![(n64 % 3 + 1, 100 + n64), (1, 50)]
        } else {
            vec![(2, 75 + n64)]
        };
        let paid = match n % 10 {
            0 => 2,
            _ if n % 3 == 2 => 0,
            _ => 1,
        };
        Self {
            number: n,
            id: format!("o-{n}"),
            customer: format!("c-{}", n % 7),
            lines,
            added: (n % 4 != 3).then_some((1 + n64 % 4, 10 * (n64 % 9 + 1))),
            paid,
            cancelled: n % 5 == 4,
        }
    }

    /// The appends, in order, each atomic: creation (with its added line), payments, cancel.
    /// Their event ids are fixed, so that an append whose outcome was unknown may be made
    /// again: it is then a harmless duplicate.
    pub fn appends(&self) -> Vec<Vec<NewEvent>> {
        let line = |(quantity, price): (i64, i64)| json!({"sku": "sku", "quantity": quantity, "unit_price_cents": price});
        let mut opening = vec![NewEvent::new(
            "order.created",
            json!({"customer": self.customer, "lines": self.lines.iter().copied().map(line).collect::<Vec<_>>()}),
        )];
        opening.extend(
            self.added
                .map(|added| NewEvent::new("order.line-added", line(added))),
        );
        let mut appends = vec![opening];
        appends.extend((0..self.paid).map(|_| vec![NewEvent::new("order.paid", json!({}))]));
        if self.cancelled {
            appends.push(vec![NewEvent::new(
                "order.cancelled",
                json!({"reason": "test"}),
            )]);
        }
        for (k, event) in appends.iter_mut().flatten().enumerate() {
            event.id = Some(Uuid::from_u128(
                (0xe7e7 << 112) | ((self.number as u128) << 32) | k as u128,
            ));
        }
        appends
    }

    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .chain(&self.added)
            .map(|(quantity, price)| quantity * price)
            .sum()
    }

    /// `order/<id>` as the order-totals specification writes it.
    pub fn state(&self) -> String {
        let status = if self.cancelled {
            "cancelled"
        } else if self.paid > 0 {
            "paid"
        } else {
            "open"
        };
        let lines = self.lines.len() + usize::from(self.added.is_some());
        format!(
            r#"{{"customer":"{}","status":"{status}","lines":{lines},"total_cents":{}}}"#,
            self.customer,
            self.total_cents()
        )
    }
}

/// The order-totals state the whole script must leave: every order and every customer.
pub fn expected_projection(orders: &[Order]) -> BTreeMap<String, String> {
    let mut customers: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    let mut state = BTreeMap::new();
    for order in orders {
        let customer = customers.entry(&order.customer).or_default();
        customer.0 += 1;
        if order.paid > 0 {
            customer.1 += order.total_cents();
        }
        state.insert(format!("order/{}", order.id), order.state());
    }
    for (name, (count, paid_cents)) in customers {
        state.insert(
            format!("customer/{name}"),
            format!(r#"{{"orders":{count},"paid_cents":{paid_cents}}}"#),
        );
    }
    state
}

/// How many events are stored.
pub async fn count_events(store: &Store) -> u64 {
    let (mut total, mut after) = (0, 0);
    loop {
        let page = store
            .read_positions(None, after, 1_000)
            .await
            .expect("read the events");
        let Some(last) = page.last() else {
            return total;
        };
        after = last.position;
        total += page.len() as u64;
    }
}

/// Appends the first `orders` orders' events through the library, `pace` apart; returns how
/// many events. With `retrying`, an append that fails is made again (the same events, the
/// same expected version) until it goes through.
pub async fn append_orders(store: Store, orders: usize, pace: Duration, retrying: bool) -> u64 {
    let mut appended = 0;
    for n in 0..orders {
        let order = Order::nth(n);
        let stream = StreamId::new("order", &order.id);
        let mut version = 0;
        for events in order.appends() {
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            let done = loop {
                match store.append(&stream, expected, &events).await {
                    Ok(done) => break done,
                    Err(error) if retrying => {
                        eprintln!("append of {} failed, retrying: {error}", order.id);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => panic!("append an order's events: {error}"),
                }
            };
            version = done.last_version();
            appended += events.len() as u64;
        }
        tokio::time::sleep(pace).await;
    }
    appended
}

/// Asserts that the first `orders` orders, `appended` events, had every effect exactly once:
/// the counter saw every stored event, the projection is the model's, there is one shipment
/// per paid order, and nothing is parked.
pub async fn assert_every_effect_once(store: &Store, orders: usize, appended: u64) {
    let orders: Vec<Order> = (0..orders).map(Order::nth).collect();
    let paid: Vec<&Order> = orders.iter().filter(|order| order.paid > 0).collect();
    let events = count_events(store).await;
    let count = crate::support::count_state(store, COUNTER).await;
    let shipments = store
        .read_positions(Some("shipment"), 0, 10_000)
        .await
        .expect("read the shipments");
    eprintln!(
        "{appended} order events appended, {} shipments, {events} events stored, counter {count}",
        shipments.len()
    );
    assert_eq!(
        events,
        appended + shipments.len() as u64,
        "only the orders and the shipments are stored"
    );
    assert_eq!(
        count, events,
        "the counter saw {count} events for {events} stored: effects applied more or less than once"
    );
    let projection: BTreeMap<String, String> = store
        .state_scan(TOTALS, "", None, 100_000)
        .await
        .expect("scan")
        .into_iter()
        .collect();
    assert_eq!(
        projection,
        expected_projection(&orders),
        "the order-totals projection"
    );
    assert_eq!(shipments.len(), paid.len(), "one shipment per paid order");
    for order in paid {
        let stream = StreamId::new("shipment", &order.id);
        assert_eq!(
            store.stream_version(&stream).await.expect("version"),
            1,
            "shipments of {}",
            order.id
        );
    }
    assert!(
        store.parked(None).await.expect("parked").is_empty(),
        "nothing is parked"
    );
}

/// How long a daemon may take to catch up in these tests.
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// Waits until every subscription of `names` has lag 0.
pub async fn wait_for_lag_zero(daemon: &mut Daemon, store: &Store, names: &[&str]) {
    let what = format!("lag 0 on {names:?}");
    daemon
        .wait_until(&what, CATCH_UP, || async {
            let mut seen = Vec::new();
            for name in names {
                seen.push(store.lag(name).await.expect("lag"));
            }
            if seen.iter().all(|lag| *lag == 0) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
}
