//! The runtime against real components: the example counter and the hostile plugins of
//! `plugins/hostile`. Each hostile run must fail (or be refused) cleanly, and a healthy plugin
//! must still work in the same runtime afterwards.
//!
//! The components are built by `bash scripts/build-plugins.sh`; a missing one fails the test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};
use eventhost_harness::MemoryStore;
use eventhost_runtime::{
    CacheOutcome, HandleError, Limits, LoadError, Plugin, Runtime, RuntimeConfig,
};
use serde_json::json;

/// The directory cargo builds into: `CARGO_TARGET_DIR` when absolute, else the ancestor of
/// this test binary that holds cargo's `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .expect("the test binary lives in a cargo target directory")
}

/// The built component of plugin crate `name`, or a failure saying how to build it.
fn wasm(name: &str) -> Vec<u8> {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = target_dir().join("wasm32-wasip2/release").join(file);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}); build it first with: bash scripts/build-plugins.sh",
            path.display()
        )
    })
}

fn runtime(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig::daemon(cache)).expect("the runtime starts")
}

fn cache_dir(test: &str) -> PathBuf {
    let dir = target_dir().join("runtime-tests").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn short_limits() -> Limits {
    Limits {
        time_per_batch_ms: 1_000,
        memory_bytes: 32 << 20,
        ..Limits::default()
    }
}

async fn load(runtime: &Runtime, name: &str, limits: Limits) -> Result<Plugin, LoadError> {
    runtime.load(name, wasm(name), limits).await
}

fn events(store: &MemoryStore, count: usize) -> Vec<Event> {
    let new = (0..count)
        .map(|n| NewEvent::new("order.created", json!({ "n": n })))
        .collect();
    store
        .append(&StreamId::new("order", "o-1"), ExpectedVersion::Any, new)
        .expect("the fixture appends")
}

async fn handle(
    plugin: &Plugin,
    subscription: &str,
    batch_len: usize,
) -> Result<eventhost_runtime::Effects, HandleError> {
    let store = MemoryStore::new();
    let batch = events(&store, batch_len);
    plugin.handle(subscription, &batch, Arc::new(store)).await
}

/// The counter plugin loads and counts a batch in `runtime`.
async fn assert_healthy(runtime: &Runtime) {
    let counter = load(runtime, "counter", Limits::default())
        .await
        .expect("counter loads");
    let effects = handle(&counter, "all", 3)
        .await
        .expect("counter handles a batch");
    assert_eq!(effects.state.get("count"), Some(&Some("3".to_owned())));
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_within_the_time_limit_plus_a_second() {
    let runtime = runtime(&cache_dir("loop"));
    let plugin = load(&runtime, "hostile-loop", short_limits())
        .await
        .expect("loads");
    let started = Instant::now();
    let error = handle(&plugin, "all", 1)
        .await
        .expect_err("the loop is stopped");
    let took = started.elapsed();
    assert!(matches!(error, HandleError::Timeout { .. }), "{error}");
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn memory_growth_past_the_cap_fails_the_batch_as_a_memory_error() {
    let runtime = runtime(&cache_dir("memory"));
    let plugin = load(&runtime, "hostile-memory", short_limits())
        .await
        .expect("loads");
    let error = handle(&plugin, "all", 1)
        .await
        .expect_err("the hoard is stopped");
    assert_eq!(
        error,
        HandleError::MemoryLimit {
            limit_bytes: 32 << 20
        }
    );
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn a_panic_is_a_clean_trap_error_carrying_the_panic_message() {
    let runtime = runtime(&cache_dir("panic"));
    let plugin = load(&runtime, "hostile-panic", short_limits())
        .await
        .expect("loads");
    let error = handle(&plugin, "all", 2)
        .await
        .expect_err("the panic fails the batch");
    let HandleError::Trap { message } = &error else {
        panic!("expected a trap, got {error}");
    };
    assert!(
        message.contains("panicked at plugins/hostile/panic/src/lib.rs")
            && message.ends_with(": hostile-panic: panicking in handle on purpose"),
        "the panic's location and message: {message}"
    );
    assert!(!message.contains("RUST_BACKTRACE"), "{message}");
    assert!(!error.is_retryable());
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn a_python_exception_is_the_batchs_error_with_the_frames_it_came_through() {
    let runtime = runtime(&cache_dir("python-exception"));
    let name = "hostile-lazy-import-py";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/hostile")
        .join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}); build it first with: bash scripts/build-plugins.sh",
            path.display()
        )
    });
    let plugin = runtime
        .load(name, bytes, Limits::default())
        .await
        .expect("loads");
    let error = handle(&plugin, "all", 1)
        .await
        .expect_err("the exception fails the batch");
    let HandleError::Trap { message } = &error else {
        panic!("expected a trap, got {error}");
    };
    assert!(
        message.contains(
            "Python exception: ModuleNotFoundError: No module named 'hashlib' \
             (at \"/0/app.py\", line 28, in handle; "
        ),
        "the exception and the plugin's frame: {message}"
    );
    assert!(
        !message.contains("unexpected exception") && !message.contains("RUST_BACKTRACE"),
        "the Rust runtime's panic is not the cause: {message}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_flood_of_emits_is_cut_at_the_output_cap_with_a_clear_error() {
    let runtime = runtime(&cache_dir("flood"));
    let plugin = load(&runtime, "hostile-flood", short_limits())
        .await
        .expect("loads");
    let error = handle(&plugin, "all", 1)
        .await
        .expect_err("the flood fails the batch");
    let HandleError::OutputLimit { message } = &error else {
        panic!("expected an output cap, got {error}");
    };
    assert!(
        message.contains("more than 10000 events emitted"),
        "{message}"
    );
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn a_file_that_is_not_wasm_is_refused_as_such() {
    let runtime = runtime(&cache_dir("not-wasm"));
    let error = runtime
        .load(
            "notes.wasm",
            b"these are not the bytes you are looking for".to_vec(),
            Limits::default(),
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, LoadError::NotWasm), "{error}");
    assert!(error.to_string().contains("not a WebAssembly file"));
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn a_core_module_is_refused_with_a_hint_to_build_a_component() {
    let runtime = runtime(&cache_dir("core-module"));
    let empty_core_module = b"\0asm\x01\0\0\0".to_vec();
    let error = runtime
        .load("core.wasm", empty_core_module, Limits::default())
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("core WebAssembly module, not a component"),
        "{error}"
    );
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn a_component_of_another_world_is_refused_naming_the_missing_exports() {
    let runtime = runtime(&cache_dir("other-world"));
    let error = load(&runtime, "hostile-other-world", Limits::default())
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("not an eventhost plugin"), "{message}");
    assert!(message.contains("`describe` and `handle`"), "{message}");
    assert!(message.contains("run"), "{message}");
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn importing_wasi_http_is_refused_at_load_naming_the_import() {
    let runtime = runtime(&cache_dir("http"));
    let error = load(&runtime, "hostile-http", Limits::default())
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        matches!(error, LoadError::ForbiddenImports { .. }),
        "{message}"
    );
    assert!(
        message.contains("`wasi:http/outgoing-handler@"),
        "{message}"
    );
    assert_healthy(&runtime).await;
}

/// The batch succeeds only when the plugin's attempt failed; the logs say how.
async fn assert_attempt_denied(name: &str, expected_log: &str) {
    let runtime = runtime(&cache_dir(name));
    let plugin = load(&runtime, name, short_limits()).await.expect("loads");
    let effects = handle(&plugin, "all", 1)
        .await
        .expect("the attempt fails inside the sandbox");
    let logged: Vec<&str> = effects
        .logs
        .iter()
        .map(|line| line.message.as_str())
        .collect();
    assert!(
        logged.iter().any(|line| line.contains(expected_log)),
        "{logged:?}"
    );
    assert_healthy(&runtime).await;
}

#[tokio::test]
async fn the_filesystem_is_linked_but_no_file_can_be_read() {
    assert_attempt_denied("hostile-fs", "reading /etc/passwd failed").await;
}

#[tokio::test]
async fn the_network_is_linked_but_no_connection_can_be_made() {
    assert_attempt_denied("hostile-net", "connecting to 127.0.0.1:5432 failed").await;
}

#[tokio::test]
async fn the_compile_cache_is_hit_on_the_second_load() {
    let cache = cache_dir("cache-hit");
    let first = load(&runtime(&cache), "counter", Limits::default())
        .await
        .expect("loads");
    assert_eq!(first.cache_outcome(), CacheOutcome::Compiled);
    let second = load(&runtime(&cache), "counter", Limits::default())
        .await
        .expect("loads");
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
}

/// The single artifact a fresh cache directory holds after one load.
fn only_artifact(cache: &Path) -> PathBuf {
    let artifacts: Vec<PathBuf> = std::fs::read_dir(cache)
        .expect("the cache directory exists")
        .map(|entry| entry.expect("a readable entry").path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    artifacts[0].clone()
}

/// A plugin compiled on its first load runs from the artifact it wrote, mapped from the
/// file like a cached one (clean pages), not from a copy of its code in the heap.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_freshly_compiled_plugin_runs_from_its_artifact_file() {
    let cache = cache_dir("cache-mapped");
    let runtime = runtime(&cache);
    let counter = load(&runtime, "counter", Limits::default())
        .await
        .expect("loads");
    assert_eq!(counter.cache_outcome(), CacheOutcome::Compiled);
    let artifact = only_artifact(&cache);
    let maps = std::fs::read_to_string("/proc/self/maps").expect("this process's mappings");
    let artifact = artifact.to_string_lossy();
    assert!(
        maps.lines().any(|line| line.ends_with(artifact.as_ref())),
        "{artifact} is not mapped"
    );
    let effects = handle(&counter, "all", 3)
        .await
        .expect("counter handles a batch");
    assert_eq!(effects.state.get("count"), Some(&Some("3".to_owned())));
}

#[tokio::test]
async fn a_corrupt_cached_artifact_is_recompiled_not_an_error() {
    let cache = cache_dir("cache-corrupt");
    load(&runtime(&cache), "counter", Limits::default())
        .await
        .expect("loads");
    let artifact = only_artifact(&cache);
    let bytes = std::fs::read(&artifact).expect("the artifact reads");
    std::fs::write(&artifact, &bytes[..bytes.len() / 2]).expect("the artifact is truncated");
    let runtime = runtime(&cache);
    let reloaded = load(&runtime, "counter", Limits::default())
        .await
        .expect("loads");
    assert_eq!(reloaded.cache_outcome(), CacheOutcome::Recompiled);
    assert_eq!(
        load(&runtime, "counter", Limits::default())
            .await
            .expect("loads")
            .cache_outcome(),
        CacheOutcome::Hit
    );
}

#[tokio::test]
async fn an_artifact_of_an_incompatible_engine_is_recompiled_not_an_error() {
    let fuel_cache = cache_dir("cache-incompatible-fuel");
    let fuel =
        Runtime::new(RuntimeConfig::deterministic(Some(fuel_cache.clone()))).expect("starts");
    load(&fuel, "counter", Limits::default())
        .await
        .expect("loads");
    let cache = cache_dir("cache-incompatible");
    load(&runtime(&cache), "counter", Limits::default())
        .await
        .expect("loads");
    std::fs::copy(only_artifact(&fuel_cache), only_artifact(&cache))
        .expect("the artifact is swapped");
    let reloaded = load(&runtime(&cache), "counter", Limits::default())
        .await
        .expect("loads");
    assert_eq!(reloaded.cache_outcome(), CacheOutcome::Recompiled);
}

#[tokio::test]
async fn each_batch_runs_in_a_fresh_instance() {
    let runtime = runtime(&cache_dir("fresh"));
    let counter = load(&runtime, "counter", Limits::default())
        .await
        .expect("loads");
    for _ in 0..3 {
        let effects = handle(&counter, "all", 2).await.expect("handles");
        assert_eq!(effects.state.get("count"), Some(&Some("2".to_owned())));
    }
}

#[tokio::test]
async fn a_subscription_the_plugin_does_not_have_is_refused() {
    let runtime = runtime(&cache_dir("unknown-subscription"));
    let counter = load(&runtime, "counter", Limits::default())
        .await
        .expect("loads");
    let error = handle(&counter, "nope", 1).await.expect_err("refused");
    assert_eq!(error, HandleError::UnknownSubscription("nope".to_owned()));
}
