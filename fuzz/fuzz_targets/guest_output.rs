//! The runtime taking in a guest's output: the `hostile-fuzz` plugin (built by
//! `scripts/build-plugins.sh` into `dist/hostile/`) turns each input's bytes into host calls
//! with arbitrary arguments (emits, state, logs, stdout and stderr, deliveries, its result),
//! driven through the plugin test harness. The host must turn every output into effects or
//! one error for the batch, and never panic; what it stores is whole and valid.
#![no_main]

use std::cell::RefCell;
use std::path::Path;

use eventhost_fuzz::holds_nul;
use eventhost_harness::TestPlugin;
use libfuzzer_sys::fuzz_target;

/// Inputs one loaded plugin takes before a fresh one replaces it (its store only grows).
const RELOAD_EVERY: u32 = 500;

/// The error message cap, and what a cut message may add (`... (cut)`).
const MAX_ERROR_BYTES: usize = 4096 + 16;

thread_local! {
    static PLUGIN: RefCell<Option<(TestPlugin, u32)>> = const { RefCell::new(None) };
}

fn fresh() -> TestPlugin {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/hostile/hostile-fuzz.wasm");
    let mut plugin = TestPlugin::load(&path);
    plugin.grant(&["sink"]);
    plugin
}

fuzz_target!(|data: &[u8]| {
    PLUGIN.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(_, runs)| *runs >= RELOAD_EVERY) {
            *slot = Some((fresh(), 0));
        }
        let Some((plugin, runs)) = slot.as_mut() else {
            return;
        };
        *runs += 1;
        let script: String = data.iter().map(|byte| format!("{byte:02x}")).collect();
        let (emitted_before, errors_before) = (plugin.emitted().len(), plugin.errors().len());
        plugin.append(
            "fuzz",
            "f-1",
            "fuzz.script",
            serde_json::json!({ "script": script }),
        );
        plugin.run();
        for event in &plugin.emitted()[emitted_before..] {
            assert!(!event.event_type.is_empty() && !event.event_type.contains('\0'));
            assert!(!event.aggregate_type.is_empty() && !event.aggregate_id.is_empty());
            assert!(!holds_nul(
                &serde_json::to_value(&event.payload).expect("JSON")
            ));
        }
        for failure in &plugin.errors()[errors_before..] {
            assert!(
                failure.error.len() <= MAX_ERROR_BYTES,
                "{} bytes",
                failure.error.len()
            );
        }
    });
});
