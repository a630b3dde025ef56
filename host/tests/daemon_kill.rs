//! Exactly-once effects under SIGKILL: the real daemon is killed with `kill -9` at random
//! instants, at least twenty times, and restarted each time, while the test keeps appending
//! orders. Once the appends end and the last daemon catches up, every event's effect is
//! applied exactly once: the counter equals the number of stored events, the order-totals
//! projection equals the model (`support/orders.rs`), there is one shipment per paid order,
//! nothing is parked.
//!
//! Small batch sizes (sidecars) make many commits, so kills land between and inside them.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/orders.rs"]
mod orders;
mod support;

use std::time::{Duration, Instant};

use daemon::{Deployment, TestDatabase};
use eventhost_store::{self as store, Store, SubscriptionStore};
use orders::{
    COUNTER, SHIPMENTS, TOTALS, append_orders, assert_every_effect_once, install_example_plugins,
    wait_for_lag_zero,
};
use rand::Rng;

const MIN_KILLS: usize = 20;
const MAX_KILLS: usize = 80;
const ORDERS: usize = 150;
/// Pause between two orders: the appends span the kill phase (about ten seconds).
const APPEND_PACE: Duration = Duration::from_millis(60);

async fn lags(store: &Store) -> [u64; 3] {
    let mut lags = [0; 3];
    for (lag, name) in lags.iter_mut().zip([COUNTER, TOTALS, SHIPMENTS]) {
        *lag = store.lag(name).await.expect("lag");
    }
    lags
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
    install_example_plugins(&deployment);

    let appending = tokio::spawn(append_orders(store.clone(), ORDERS, APPEND_PACE, false));
    let stats = kill_repeatedly(&mut deployment, &store, &appending).await;
    let appended = appending.await.expect("the appender finished");

    let mut daemon = deployment.start(&[]);
    // Shipments are appended by the policy: once it and the projection are done, no event
    // arrives any more, and the counter can be checked against the final total.
    wait_for_lag_zero(&mut daemon, &store, &[TOTALS, SHIPMENTS]).await;
    wait_for_lag_zero(&mut daemon, &store, &[COUNTER]).await;

    eprintln!(
        "kill -9 on {}: {} kills ({} while dispatching, {} with events pending; uptimes {:?} ms), {} daemon runs, {:.1}s",
        database.kind(),
        stats.kills,
        stats.kills_while_dispatching,
        stats.kills_with_work_pending,
        stats.uptimes_ms,
        deployment.runs(),
        started.elapsed().as_secs_f64(),
    );
    assert_every_effect_once(&store, ORDERS, appended).await;
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
