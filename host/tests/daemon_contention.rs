//! Plugins share the CPU fairly: beside sixty subscriptions that spin until their time limit
//! (`hostile-spin`) and another spinning plugin (`hostile-loop`), on guest threads they keep
//! busy, the counter plugin counts each event within a second, is never parked (though one
//! failed try would park it), and the daemon stops within two seconds of SIGTERM. A plugin
//! whose `describe` spins (`hostile-describe-loop`) is rejected at its time limit, and does
//! not hold up a shutdown meanwhile; a plugin that would pass the daemon's subscription cap is
//! refused while the others run. Through the real binary on SQLite.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::{Duration, Instant};

use daemon::{Deployment, TestDatabase, dist};

/// Each spinning batch may run this long; the loopers fail every batch.
const SPIN_SIDECAR: &str = "[limits]\ntime_per_batch_ms = 1000\n";

#[tokio::test]
async fn spinning_neighbours_neither_delay_nor_park_a_healthy_plugin() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    deployment.install("hostile/hostile-spin.wasm", "spin.wasm");
    deployment.sidecar("spin.wasm", SPIN_SIDECAR);
    deployment.install("hostile/hostile-loop.wasm", "loop.wasm");
    deployment.sidecar("loop.wasm", SPIN_SIDECAR);

    let mut daemon = deployment.start(&["--max-attempts", "1"]);
    daemon
        .wait_for_log("plugin running", 3, Duration::from_secs(120))
        .await;
    // Every event keeps the loopers busy for a second per subscription and try.
    deployment.append_items(2).await;
    daemon.until_counted(&deployment, 2).await;
    daemon
        .wait_for_log("batch failed", 3, Duration::from_secs(30))
        .await;

    let mut latencies = Vec::new();
    for counted in 3..=12 {
        deployment.append_items(1).await;
        let appended = Instant::now();
        daemon.until_counted(&deployment, counted).await;
        latencies.push(appended.elapsed());
    }
    // Still spinning after the last sample, so spinning throughout.
    let failures = daemon.log().matches("batch failed").count();
    daemon
        .wait_for_log("batch failed", failures + 3, Duration::from_secs(30))
        .await;
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "every event counted within 1 s of its append: {latencies:?}"
    );
    let parked = deployment.parked().await;
    assert!(
        parked
            .iter()
            .all(|entry| entry["subscription"] != "counter.all"),
        "the counter never parked: {parked:?}"
    );

    let (status, took) = daemon.stop_with("TERM", Duration::from_secs(10)).await;
    assert!(status.success(), "exited with {status}");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
}

#[tokio::test]
async fn a_spinning_describe_is_rejected_at_its_limit_and_never_holds_up_a_shutdown() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    deployment.install("hostile/hostile-describe-loop.wasm", "describer.wasm");
    deployment.sidecar("describer.wasm", SPIN_SIDECAR);

    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("plugin file rejected", 1, Duration::from_secs(120))
        .await;
    let log = daemon.log();
    assert!(
        log.contains("`describe` failed: the plugin ran past its time limit of 1000 ms"),
        "{log}"
    );
    deployment.append_items(1).await;
    daemon.until_counted(&deployment, 1).await;
    daemon.stop().await;

    // With the default limit (10 s), a shutdown while it spins is not kept waiting. The
    // spinner arrives once the counter runs (plugins load in the order their compiles end,
    // so at start either could be first): its `describe` is then spinning at the signal.
    std::fs::remove_file(deployment.plugin_path("describer.toml")).unwrap();
    std::fs::remove_file(deployment.plugin_path("describer.wasm")).unwrap();
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    let arriving = deployment.plugin_path(".describer.tmp");
    std::fs::copy(dist("hostile/hostile-describe-loop.wasm"), &arriving).unwrap();
    std::fs::rename(&arriving, deployment.plugin_path("describer.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, took) = daemon.stop_with("TERM", Duration::from_secs(20)).await;
    assert!(status.success(), "exited with {status}");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert!(
        daemon.log().contains("left unloaded"),
        "the describe in progress was dropped: {}",
        daemon.log()
    );
}

#[tokio::test]
async fn a_plugin_past_the_daemons_subscription_cap_is_refused_and_the_others_run() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    deployment.install("hostile/hostile-spin.wasm", "spin.wasm");

    let mut daemon = deployment.start(&["--max-subscriptions", "50"]);
    daemon
        .wait_for_log("plugin file rejected", 1, Duration::from_secs(120))
        .await;
    let log = daemon.log();
    // Plugins load in the order their compiles end: the counter may run already, or not.
    assert!(
        ["0", "1"].iter().any(|running| log.contains(&format!(
            "hostile-spin asks for 60 subscriptions and other plugins run {running}: over the \
             daemon's cap of 50 subscriptions"
        ))),
        "{log}"
    );
    deployment.append_items(1).await;
    daemon.until_counted(&deployment, 1).await;
    daemon.stop().await;
}
