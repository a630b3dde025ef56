//! Database outages under the daemon: on a PostgreSQL server of the test's own, while orders
//! are appended and dispatched, the server is restarted, every session of the daemon's
//! database is terminated again and again, and the server is stopped for 30 seconds. Once it
//! is back and the daemon catches up, every effect landed exactly once (the counter, the
//! order-totals projection, one shipment per paid order, nothing parked); the daemon said once
//! per outage that the store was unreachable and once that it was back; and a new event is
//! handled within milliseconds again, woken by the re-made LISTEN connection (the fallback
//! poll is a minute).

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/orders.rs"]
mod orders;
#[path = "support/private_pg.rs"]
mod private_pg;
mod support;

use std::time::{Duration, Instant};

use daemon::{Daemon, Deployment};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{self as store, EventStore, Store};
use orders::{
    COUNTER, SHIPMENTS, TOTALS, append_orders, assert_every_effect_once, install_example_plugins,
    wait_for_lag_zero,
};
use private_pg::PrivatePostgres;
use serde_json::json;

const ORDERS: usize = 100;
/// Pause between two orders: the appends span the restart and the terminations, and go on
/// (retrying) through the long stop.
const APPEND_PACE: Duration = Duration::from_millis(60);
const LONG_STOP: Duration = Duration::from_secs(30);
const TERMINATIONS: usize = 5;
const DATABASE: &str = "eventhost_outage";

async fn counted(store: &Store) -> u64 {
    support::count_state(store, COUNTER).await
}

/// How long one more event takes to be counted.
async fn one_event_latency(daemon: &mut Daemon, store: &Store) -> Duration {
    let before = counted(store).await;
    let started = Instant::now();
    store
        .append(
            &StreamId::new("probe", "p-1"),
            ExpectedVersion::Any,
            &[NewEvent::new("probe.pinged", json!({}))],
        )
        .await
        .expect("append a probe");
    daemon
        .wait_until("the probe counted", Duration::from_secs(30), || async {
            let now = counted(store).await;
            if now > before {
                Ok(started.elapsed())
            } else {
                Err(format!("count {now}"))
            }
        })
        .await
}

/// Runs a blocking server command without stalling the runtime.
async fn server_command(server: &PrivatePostgres, command: fn(&PrivatePostgres)) {
    tokio::task::block_in_place(|| command(server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_a_long_stop_and_terminated_sessions_lose_nothing_and_apply_nothing_twice() {
    let started = Instant::now();
    let server = PrivatePostgres::start();
    let url = server.create_database(DATABASE).await;
    let store = store::connect(&url)
        .await
        .expect("connect to the private server");
    let mut deployment = Deployment::new(&url);
    install_example_plugins(&deployment);
    // A fallback poll too slow to matter: only notifications, retries and the outages' ends
    // bring events in quickly.
    let mut daemon = deployment.start_polling_every(60_000, &[]);
    daemon
        .wait_for_log("subscription started", 3, Duration::from_secs(60))
        .await;
    let latency_before = one_event_latency(&mut daemon, &store).await;

    let appending = tokio::spawn(append_orders(store.clone(), ORDERS, APPEND_PACE, true));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server_command(&server, PrivatePostgres::restart).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut terminated = 0;
    for _ in 0..TERMINATIONS {
        terminated += server.terminate_sessions(DATABASE).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    server_command(&server, PrivatePostgres::stop).await;
    tokio::time::sleep(LONG_STOP).await;
    daemon.assert_running();
    server_command(&server, PrivatePostgres::resume).await;
    let appended = appending.await.expect("the appender finished");

    wait_for_lag_zero(&mut daemon, &store, &[TOTALS, SHIPMENTS]).await;
    wait_for_lag_zero(&mut daemon, &store, &[COUNTER]).await;
    let latency_after = one_event_latency(&mut daemon, &store).await;
    eprintln!(
        "outages: 1 restart, {TERMINATIONS} rounds of terminations ({terminated} sessions), a {}s stop; \
         one event's latency {latency_before:?} before, {latency_after:?} after; {:.1}s",
        LONG_STOP.as_secs(),
        started.elapsed().as_secs_f64()
    );

    // The two probes are counted too.
    assert_every_effect_once(&store, ORDERS, appended + 2).await;
    let log = daemon.log();
    for line in log.lines().filter(|line| {
        line.contains("eventhost_dispatch::outage") || line.contains("listening connection")
    }) {
        eprintln!("{line}");
    }
    let down = log.matches("the store is unavailable").count();
    let back = log.matches("the store is available again").count();
    assert!(
        down >= 2,
        "the restart and the stop were told ({down} times):\n{log}"
    );
    assert_eq!(down, back, "each outage's end was told:\n{log}");
    assert!(
        log.contains("the listening connection was lost (its session ended)"),
        "a terminated listening session is told, and is no outage:\n{log}"
    );
    // A round of terminations may be seen as two outages (the listener's, then a batch's
    // query cut after the listener was back), never as one per subscription or per retry.
    assert!(
        down <= 2 * (2 + TERMINATIONS),
        "once per outage, not once per subscription or retry ({down} times):\n{log}"
    );
    let longest = log
        .split("outage_seconds=")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(
        longest >= LONG_STOP.as_secs_f64() - 5.0,
        "the long stop's length was told (longest {longest} s):\n{log}"
    );
    assert!(
        latency_after < Duration::from_secs(5),
        "an event is handled quickly again, woken by notification: {latency_after:?}"
    );
    daemon.stop().await;
}
