//! Several daemons on one database, through the real binary. On PostgreSQL they share the
//! subscriptions (each runs on the one daemon that holds its lease), a killed daemon's
//! subscriptions move to the others, a daemon paused past its leases loses them and commits
//! nothing when it wakes, three daemons killed thirty times at random lose and repeat no
//! effect, and every effect lands exactly once throughout (the order script of
//! `support/orders.rs`). On SQLite a second daemon is refused, naming the first.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/orders.rs"]
mod orders;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::ApiClient;
use daemon::{Daemon, Deployment, TestDatabase};
use eventhost_store as store;
use orders::{
    COUNTER, SHIPMENTS, TOTALS, append_orders, assert_every_effect_once, install_example_plugins,
    wait_for_lag_zero,
};
use rand::Rng;
use serde_json::Value;

/// Short leases, so that the test sees expiries: renewed every 2/3 s.
const LEASE_TTL: &str = "2";
const ORDERS: usize = 120;
/// The appends span the whole test (about 20 s).
const APPEND_PACE: Duration = Duration::from_millis(150);
const SETTLE: Duration = Duration::from_secs(30);

/// Who runs what: subscription name to the pid of the daemon holding its lease (`None`:
/// nobody), from `subscriptions list --json` and `daemons list --json`.
async fn owners(deployment: &Deployment) -> BTreeMap<String, Option<u32>> {
    let daemons = deployment
        .cli_ok(&["daemons", "list", "--json"])
        .await
        .json_lines();
    let pid_of = |id: &Value| {
        daemons
            .iter()
            .find(|daemon| daemon["id"] == *id)
            .and_then(|daemon| daemon["pid"].as_u64())
            .map(|pid| pid as u32)
    };
    deployment
        .subscriptions()
        .await
        .iter()
        .map(|subscription| {
            let name = subscription["name"].as_str().unwrap_or_default().to_owned();
            let owner = match &subscription["owner"] {
                Value::Null => None,
                id => Some(pid_of(id).unwrap_or(0)),
            };
            (name, owner)
        })
        .collect()
}

/// Waits until `check` holds for the owners; returns them.
async fn until_owners(
    daemon: &mut Daemon,
    deployment: &Deployment,
    what: &str,
    check: impl Fn(&BTreeMap<String, Option<u32>>) -> bool,
) -> BTreeMap<String, Option<u32>> {
    daemon
        .wait_until(what, SETTLE, || async {
            let owners = owners(deployment).await;
            if owners.len() == 3 && check(&owners) {
                Ok(owners)
            } else {
                Err(format!("{owners:?}"))
            }
        })
        .await
}

fn held_by(owners: &BTreeMap<String, Option<u32>>, pid: u32) -> usize {
    owners.values().filter(|owner| **owner == Some(pid)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_share_the_subscriptions_and_take_over_from_killed_and_paused_ones() {
    let database = TestDatabase::postgres().await;
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    install_example_plugins(&deployment);
    let lease = ["--lease-ttl", LEASE_TTL];
    let appending = tokio::spawn(append_orders(store.clone(), ORDERS, APPEND_PACE, false));

    // Alone, a daemon runs everything.
    let mut first = deployment.start(&lease);
    let first_pid = first.pid();
    let alone = until_owners(
        &mut first,
        &deployment,
        "the first daemon runs all",
        |owners| held_by(owners, first_pid) == 3,
    )
    .await;
    eprintln!("alone: {alone:?}");

    // A second one gets its share: 3 subscriptions over 2 daemons, 2 at most each.
    let mut second = deployment.start(&lease);
    let second_pid = second.pid();
    let shared = until_owners(&mut second, &deployment, "two daemons share", |owners| {
        held_by(owners, first_pid) >= 1
            && held_by(owners, second_pid) >= 1
            && owners.values().all(Option::is_some)
    })
    .await;
    eprintln!("shared: {shared:?}");
    let listed = deployment.cli_ok(&["daemons", "list"]).await;
    for pid in [first_pid, second_pid] {
        assert!(listed.stdout.contains(&pid.to_string()), "{listed}");
    }
    // Each tells the other what it runs: the same three plugins, in the same versions.
    second
        .wait_until("both daemons list their plugins", SETTLE, || async {
            let members = deployment
                .cli_ok(&["daemons", "list", "--json"])
                .await
                .json_lines();
            let counts: Vec<usize> = members
                .iter()
                .map(|member| {
                    member["plugins"]
                        .as_object()
                        .map_or(0, |plugins| plugins.len())
                })
                .collect();
            if counts == [3, 3] && members[0]["plugins"] == members[1]["plugins"] {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        })
        .await;
    let api = ApiClient::new(&second.api().await);
    let daemons = api.get("/v1/daemons").await.body["daemons"].clone();
    let runs: usize = daemons
        .as_array()
        .expect("a list of daemons")
        .iter()
        .map(|daemon| daemon["subscriptions"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(runs, 3, "every subscription on one daemon: {daemons}");

    // Killed, the first daemon's subscriptions move to the second: at once, since it ran on
    // this machine and its process is gone.
    let killed = first_pid;
    let kill = Instant::now();
    first.kill9();
    until_owners(
        &mut second,
        &deployment,
        "the second takes over",
        |owners| held_by(owners, second_pid) == 3,
    )
    .await;
    let takeover = kill.elapsed();
    second
        .wait_for_log("a daemon on this machine is gone", 1, SETTLE)
        .await;
    eprintln!("takeover after kill -9: {:.0} ms", takeover.as_millis());
    assert!(
        !owners(&deployment)
            .await
            .values()
            .any(|owner| *owner == Some(killed)),
        "nothing stays with the killed daemon"
    );

    // A third joins; then the second is paused past its leases: the third takes them when
    // they expire, and the second, woken, finds them lost and commits nothing on them.
    let mut third = deployment.start(&lease);
    let third_pid = third.pid();
    until_owners(
        &mut third,
        &deployment,
        "the third gets a share",
        |owners| held_by(owners, third_pid) >= 1 && owners.values().all(Option::is_some),
    )
    .await;
    second.signal("STOP");
    let paused = Instant::now();
    until_owners(
        &mut third,
        &deployment,
        "the third takes the paused daemon's subscriptions",
        |owners| held_by(owners, third_pid) == 3,
    )
    .await;
    eprintln!(
        "takeover from a paused daemon: {:.0} ms (lease TTL {LEASE_TTL} s)",
        paused.elapsed().as_millis()
    );
    second.signal("CONT");
    second.wait_for_log("lease lost", 1, SETTLE).await;

    let appended = appending.await.expect("the appender finished");
    wait_for_lag_zero(&mut third, &store, &[TOTALS, SHIPMENTS]).await;
    wait_for_lag_zero(&mut third, &store, &[COUNTER]).await;
    assert_every_effect_once(&store, ORDERS, appended).await;

    // Stopped gracefully, a daemon hands its subscriptions over at once.
    second.stop().await;
    third.stop().await;
    let left = owners(&deployment).await;
    assert!(left.values().all(Option::is_none), "{left:?}");
    let daemons = deployment
        .cli_ok(&["daemons", "list", "--json"])
        .await
        .json_lines();
    assert!(daemons.is_empty(), "{daemons:?}");
}

#[tokio::test]
async fn a_second_daemon_on_one_sqlite_database_is_refused_naming_the_first() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut first = deployment.start(&[]);
    first.api().await;

    let mut second = deployment.start(&[]);
    let status = second.exit_status(SETTLE).await;
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("another daemon runs on the SQLite database")
            && log.contains(&format!("pid {} on ", first.pid())),
        "{log}"
    );
    first.assert_running();
    deployment.append_items(2).await;
    first.until_counted(&deployment, 2).await;

    // The lock dies with its process: a daemon killed with SIGKILL leaves none behind.
    first.kill9();
    let mut third = deployment.start(&[]);
    third.until_counted(&deployment, 2).await;
    deployment.append_items(1).await;
    third.until_counted(&deployment, 3).await;
    third.stop().await;

    let listed = deployment.cli(&["daemons", "list"]).await;
    assert!(!listed.status.success());
    assert!(
        listed.stderr.contains("several daemons need PostgreSQL"),
        "{listed}"
    );
}

/// Three daemons, one of them killed with SIGKILL at random every second or so and a new
/// one started in its place, thirty times, while orders are appended: every effect lands
/// exactly once, and once the kills end every subscription runs on a live daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_under_thirty_random_kills_apply_every_effect_once() {
    const KILLS: usize = 30;
    let database = TestDatabase::postgres().await;
    let store = store::connect(database.url())
        .await
        .expect("connect to the test database");
    let mut deployment = Deployment::new(database.url());
    install_example_plugins(&deployment);
    let lease = ["--lease-ttl", LEASE_TTL];
    let appending = tokio::spawn(append_orders(store.clone(), ORDERS, APPEND_PACE, false));
    let mut daemons: Vec<Daemon> = (0..3).map(|_| deployment.start(&lease)).collect();
    let started = Instant::now();
    for _ in 0..KILLS {
        let pause = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..daemons.len());
        let mut killed = daemons.swap_remove(victim);
        killed.assert_running();
        killed.kill9();
        daemons.push(deployment.start(&lease));
    }
    eprintln!(
        "{KILLS} kills among 3 daemons in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let appended = appending.await.expect("the appender finished");
    let mut last = daemons.pop().expect("three daemons");
    let pids: Vec<u32> = daemons
        .iter()
        .map(Daemon::pid)
        .chain([last.pid()])
        .collect();
    until_owners(
        &mut last,
        &deployment,
        "every subscription on a live daemon",
        |owners| {
            owners
                .values()
                .all(|owner| owner.is_some_and(|pid| pids.contains(&pid)))
        },
    )
    .await;
    wait_for_lag_zero(&mut last, &store, &[TOTALS, SHIPMENTS]).await;
    wait_for_lag_zero(&mut last, &store, &[COUNTER]).await;
    assert_every_effect_once(&store, ORDERS, appended).await;
    for daemon in &mut daemons {
        daemon.stop().await;
    }
    last.stop().await;
}
