//! Exactly-once effects under SIGKILL: the real daemon is killed with `kill -9` at random
//! instants, at least twenty times, and restarted each time, while the test keeps appending
//! orders. Once the appends end and the last daemon catches up, every event's effect is
//! applied exactly once: the counter equals the number of stored events, the order-totals
//! projection equals the model below, there is one shipment per paid order, nothing is parked.
//!
//! Small batch sizes (sidecars) make many commits, so kills land between and inside them.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use daemon::{Daemon, Deployment, TestDatabase};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{self as store, EventStore, Store, SubscriptionStore};
use rand::Rng;
use serde_json::json;

const MIN_KILLS: usize = 20;
const MAX_KILLS: usize = 80;
const ORDERS: usize = 150;
/// Pause between two orders: the appends span the kill phase (about ten seconds).
const APPEND_PACE: Duration = Duration::from_millis(60);
const CATCH_UP: Duration = Duration::from_secs(60);

const COUNTER: &str = "counter.all";
const TOTALS: &str = "order-totals.totals";
const SHIPMENTS: &str = "shipping-policy.shipments";

/// Order `n` of the script: what is appended, and what order-totals must make of it.
struct Order {
    id: String,
    customer: String,
    /// `(quantity, unit_price_cents)` of the lines at creation.
    lines: Vec<(i64, i64)>,
    added: Option<(i64, i64)>,
    /// How many `order.paid` events (0, 1, or a repeated 2).
    paid: usize,
    cancelled: bool,
}

impl Order {
    fn nth(n: usize) -> Self {
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
            id: format!("o-{n}"),
            customer: format!("c-{}", n % 7),
            lines,
            added: (n % 4 != 3).then_some((1 + n64 % 4, 10 * (n64 % 9 + 1))),
            paid,
            cancelled: n % 5 == 4,
        }
    }

    /// The appends, in order, each atomic: creation (with its added line), payments, cancel.
    fn appends(&self) -> Vec<Vec<NewEvent>> {
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
        appends
    }

    fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .chain(&self.added)
            .map(|(quantity, price)| quantity * price)
            .sum()
    }

    /// `order/<id>` as the order-totals specification writes it.
    fn state(&self) -> String {
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
fn expected_projection(orders: &[Order]) -> BTreeMap<String, String> {
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

/// Appends every order's events through the library, paced; returns how many events.
async fn append_orders(store: Store, orders: usize) -> u64 {
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
            let done = store
                .append(&stream, expected, &events)
                .await
                .expect("append an order's events");
            version = done.last_version();
            appended += events.len() as u64;
        }
        tokio::time::sleep(APPEND_PACE).await;
    }
    appended
}

async fn count_events(store: &Store) -> u64 {
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

async fn lags(store: &Store) -> [u64; 3] {
    let mut lags = [0; 3];
    for (lag, name) in lags.iter_mut().zip([COUNTER, TOTALS, SHIPMENTS]) {
        *lag = store.lag(name).await.expect("lag");
    }
    lags
}

async fn wait_for_lag_zero(daemon: &mut Daemon, store: &Store, names: &[&str]) {
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

#[derive(Debug, Default)]
struct KillStats {
    kills: usize,
    /// Kills after the daemon had started its subscriptions (the others hit its start-up).
    kills_while_dispatching: usize,
    /// Kills that found some subscription with events still to handle.
    kills_with_work_pending: usize,
    uptimes_ms: Vec<u128>,
}

/// Starts and SIGKILLs the daemon at random instants until at least `MIN_KILLS` kills are
/// done and `appending` has finished.
async fn kill_repeatedly(
    deployment: &mut Deployment,
    store: &Store,
    appending: &tokio::task::JoinHandle<u64>,
) -> KillStats {
    let mut stats = KillStats::default();
    while (stats.kills < MIN_KILLS || !appending.is_finished()) && stats.kills < MAX_KILLS {
        let mut daemon = deployment.start(&[]);
        let uptime = Duration::from_millis(rand::rng().random_range(20..700));
        tokio::time::sleep(uptime).await;
        daemon.assert_running();
        if daemon.log().contains("subscription started") {
            stats.kills_while_dispatching += 1;
        }
        if lags(store).await.iter().any(|lag| *lag > 0) {
            stats.kills_with_work_pending += 1;
        }
        stats.uptimes_ms.push(daemon.uptime().as_millis());
        daemon.kill9();
        stats.kills += 1;
    }
    stats
}

async fn every_effect_lands_exactly_once_across_random_sigkills(database: TestDatabase) {
    let started = Instant::now();
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    for (plugin, batch_size) in [("counter", 7), ("order-totals", 5), ("shipping-policy", 3)] {
        deployment.install(&format!("plugins/{plugin}.wasm"), &format!("{plugin}.wasm"));
        deployment.sidecar(
            &format!("{plugin}.wasm"),
            &format!("batch_size = {batch_size}\n"),
        );
    }

    let appending = tokio::spawn(append_orders(store.clone(), ORDERS));
    let stats = kill_repeatedly(&mut deployment, &store, &appending).await;
    let appended = appending.await.expect("the appender finished");

    let mut daemon = deployment.start(&[]);
    // Shipments are appended by the policy: once it and the projection are done, no event
    // arrives any more, and the counter can be checked against the final total.
    wait_for_lag_zero(&mut daemon, &store, &[TOTALS, SHIPMENTS]).await;
    wait_for_lag_zero(&mut daemon, &store, &[COUNTER]).await;

    let orders: Vec<Order> = (0..ORDERS).map(Order::nth).collect();
    let paid: Vec<&Order> = orders.iter().filter(|order| order.paid > 0).collect();
    let events = count_events(&store).await;
    let count: u64 = store
        .state_get(COUNTER, "count")
        .await
        .expect("count")
        .map_or(0, |text| text.parse().expect("an integer"));
    let shipments = store
        .read_positions(Some("shipment"), 0, 10_000)
        .await
        .expect("read the shipments");
    eprintln!(
        "kill -9 on {}: {} kills ({} while dispatching, {} with events pending; uptimes {:?} ms), {} daemon runs, \
         {appended} order events appended, {} shipments, {events} events stored, counter {count}, \
         duplicates {}, {:.1}s",
        database.kind(),
        stats.kills,
        stats.kills_while_dispatching,
        stats.kills_with_work_pending,
        stats.uptimes_ms,
        deployment.runs(),
        shipments.len(),
        count as i64 - events as i64,
        started.elapsed().as_secs_f64(),
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
    for subscription in deployment.subscriptions().await {
        assert_eq!(
            subscription["lag"], 0,
            "subscriptions list --json: {subscription}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_effect_lands_exactly_once_across_twenty_sigkills_on_postgres() {
    every_effect_lands_exactly_once_across_random_sigkills(TestDatabase::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_effect_lands_exactly_once_across_twenty_sigkills_on_sqlite() {
    every_effect_lands_exactly_once_across_random_sigkills(TestDatabase::sqlite()).await;
}
