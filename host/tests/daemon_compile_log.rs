//! Start-up says what it does: a plugin's first load (nothing in the compile cache for its
//! bytes) logs that it compiles the plugin and how long that took, which for an interpreter
//! plugin is a minute of an otherwise silent start.
//!
//! Uses `dist/plugins/counter.wasm` and `dist/plugins/order-totals-py.wasm`, built by
//! `bash scripts/build-plugins.sh`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use daemon::{Deployment, TestDatabase};

/// A first load says in the log that it compiles the plugin, and how long that took; a
/// start with the code cached says nothing of compiling.
#[tokio::test]
async fn a_first_load_logs_the_compile_and_its_time_and_a_cached_one_does_not() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.own_cache();
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut first = deployment.start(&[]);
    first
        .wait_for_log("plugin running", 1, Duration::from_secs(120))
        .await;
    first.stop().await;
    let log = first.log();
    let compiling = log
        .lines()
        .position(|line| line.contains("compiling the plugin") && line.contains("counter.wasm"));
    let compiled = log
        .lines()
        .position(|line| line.contains("compiled the plugin in ") && line.contains("counter.wasm"));
    assert!(
        matches!((compiling, compiled), (Some(start), Some(end)) if start < end),
        "the compile's start and end: {log}"
    );
    let mut second = deployment.start(&[]);
    second
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    second.stop().await;
    assert!(
        !second.log().contains("compiling the plugin"),
        "{}",
        second.log()
    );
}

/// Plugins compile at once, each loaded as soon as its compile ends: a small Rust plugin
/// runs long before an interpreter plugin that sorts before it has compiled.
#[tokio::test]
async fn a_small_plugin_starts_without_waiting_for_a_big_ones_compile() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.own_cache();
    deployment.install("plugins/order-totals-py.wasm", "a-python.wasm");
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("plugin running", 1, Duration::from_secs(300))
        .await;
    // `plugins list` shows the interpreter plugin compiling while the counter runs.
    let python_compiled = |log: String| {
        log.lines()
            .any(|line| line.contains("compiled the plugin in") && line.contains("a-python.wasm"))
    };
    let compiled_before = python_compiled(daemon.log());
    let listed = status_of(&deployment).await;
    let compiled_after = python_compiled(daemon.log());
    assert_eq!(listed["counter.wasm"], "running", "{listed:?}");
    if !compiled_before && !compiled_after {
        assert_eq!(listed["a-python.wasm"], "compiling", "{listed:?}");
    }
    daemon
        .wait_for_log("plugin running", 2, Duration::from_secs(300))
        .await;
    let listed = status_of(&deployment).await;
    assert_eq!(listed["a-python.wasm"], "running", "{listed:?}");
    daemon.stop().await;
    let log = daemon.log();
    let line_of = |what: &str, file: &str| {
        log.lines()
            .position(|line| line.contains(what) && line.contains(file))
            .unwrap_or_else(|| panic!("no `{what}` for {file} in the log:\n{log}"))
    };
    let counter_running = line_of("plugin running", "counter.wasm");
    let python_compiled = line_of("compiled the plugin in", "a-python.wasm");
    assert!(
        line_of("compiling the plugin", "a-python.wasm") < counter_running
            && counter_running < python_compiled,
        "the counter runs while the Python plugin compiles:\n{log}"
    );
}

/// A daemon stopped while a plugin compiles records it `stopped`, not `compiling` for ever.
#[tokio::test]
async fn a_stop_during_a_compile_leaves_the_file_stopped() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.own_cache();
    deployment.install("plugins/order-totals-py.wasm", "order-totals-py.wasm");
    let mut daemon = deployment.start(&[]);
    daemon
        .wait_for_log("compiling the plugin", 1, Duration::from_secs(120))
        .await;
    let listed = status_of(&deployment).await;
    assert_eq!(listed["order-totals-py.wasm"], "compiling", "{listed:?}");
    daemon.stop().await;
    assert!(
        !daemon.log().contains("compiled the plugin in"),
        "the compile ended before the stop: {}",
        daemon.log()
    );
    let listed = status_of(&deployment).await;
    assert_eq!(listed["order-totals-py.wasm"], "stopped", "{listed:?}");
}

/// Each plugin file's status, by file name.
async fn status_of(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .plugins()
        .await
        .into_iter()
        .map(|(name, record)| {
            (
                name,
                record["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
