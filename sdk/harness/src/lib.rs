//! Test eventhost plugins in plain `cargo test`, with no database.
//!
//! Depends on the runtime and the domain only: a plugin author's `cargo test` builds neither
//! a database driver nor the daemon. `eventhost test PLUGIN.wasm --events FILE.jsonl` runs the
//! same [`Harness`] from the command line, for plugins in any language.
//!
//! [`TestPlugin`] loads a built `.wasm` into the daemon's own runtime (the same code path, not
//! a copy) over an in-memory store with a fixed clock and deterministic limits, feeds it events
//! built in code or read from JSONL, delivers them (and whatever the plugin emits) to every
//! matching subscription until nothing is left, and lets the test assert on emitted events,
//! state, logs and errors.
//!
//! ```no_run
//! use eventhost_harness::{TestPlugin, json};
//!
//! let mut plugin = TestPlugin::workspace("counter");
//! plugin.append("order", "o-1", "order.created", json!({"customer": "c-1"}));
//! plugin.run();
//! assert_eq!(plugin.state_value("all", "count"), Some(json!(1)));
//! ```

mod driver;
mod load;
mod memory;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use driver::{DriveError, HandlerFailure, Harness, HarnessRun, MAX_BATCHES, SubscriptionLog};
pub use eventhost_domain::input::{EventLine, InputError, read_event_lines};
pub use eventhost_domain::{
    AppendError, Event, ExpectedVersion, Message, Metadata, NewEvent, StreamId,
};
pub use eventhost_runtime::{LogLevel, LogLine, LogSource, PluginInfo};
pub use load::{HarnessError, deterministic_runtime, load};
pub use memory::{CLOCK_START, MemoryStore};
pub use report::{Expectations, ExpectedEvent, ExpectedMessage, Report, parsed};
pub use serde_json::{Value, json};

/// A plugin loaded into the harness, driven synchronously.
pub struct TestPlugin {
    executor: tokio::runtime::Runtime,
    harness: Harness,
}

impl TestPlugin {
    /// Loads the built `.wasm` of a plugin crate of this workspace (e.g. `"order-totals"`),
    /// panicking with instructions when it has not been built.
    pub fn workspace(crate_name: &str) -> Self {
        match built_wasm(crate_name) {
            Ok(path) => Self::load(&path),
            Err(message) => panic!("{message}"),
        }
    }

    /// Loads a `.wasm` file, panicking with the loader's message when it is rejected.
    pub fn load(path: &Path) -> Self {
        Self::try_load(path)
            .unwrap_or_else(|error| panic!("cannot load {}: {error}", path.display()))
    }

    /// Loads a `.wasm` file.
    pub fn try_load(path: &Path) -> Result<Self, String> {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|error| format!("cannot start an async executor: {error}"))?;
        let cache = target_dir().map(|dir| dir.join("eventhost-harness-cache"));
        let runtime = deterministic_runtime(cache).map_err(|error| error.to_string())?;
        let harness = executor
            .block_on(load(&runtime, path))
            .map_err(|error| error.to_string())?;
        Ok(Self { executor, harness })
    }

    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        self.harness.plugin().info()
    }

    /// Appends one event (expected version: any). Delivered by the next [`run`](Self::run).
    pub fn append(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload: Value,
    ) -> Event {
        let stream = StreamId::new(aggregate_type, aggregate_id);
        self.append_events(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, payload)],
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .remove(0)
    }

    /// Appends events to one stream atomically, as an application would.
    pub fn append_events(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, AppendError> {
        self.harness.append(stream, expected, events)
    }

    /// Appends the events of a JSONL fixture (the `eventhost append` line shape).
    pub fn append_jsonl(&mut self, jsonl: &str) {
        let fixture = read_event_lines(jsonl.as_bytes())
            .unwrap_or_else(|error| panic!("bad fixture: {error}"));
        self.harness
            .append_fixture(&fixture)
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Appends the events of a JSONL fixture file.
    pub fn append_jsonl_file(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        self.append_jsonl(&text);
    }

    /// Delivers every pending event to every matching subscription until none is left.
    pub fn run(&mut self) -> &mut Self {
        let harness = &mut self.harness;
        self.executor
            .block_on(harness.run())
            .unwrap_or_else(|error| panic!("{error}"));
        self
    }

    /// Resets a subscription (state cleared, every event delivered again by the next
    /// [`run`](Self::run)): what an operator's replay does, and what idempotent plugins
    /// must survive.
    pub fn reset(&mut self, subscription: &str) -> &mut Self {
        self.harness.reset(subscription);
        self
    }

    /// A subscription's committed state, values parsed as JSON when they are JSON.
    pub fn state(&self, subscription: &str) -> BTreeMap<String, Value> {
        self.harness
            .state(subscription)
            .iter()
            .map(|(key, value)| (key.clone(), parsed(value)))
            .collect()
    }

    /// One key of a subscription's committed state, parsed as JSON when it is JSON.
    pub fn state_value(&self, subscription: &str, key: &str) -> Option<Value> {
        self.harness
            .state(subscription)
            .get(key)
            .map(|value| parsed(value))
    }

    /// The events the plugin emitted, as stored.
    pub fn emitted(&self) -> &[Event] {
        &self.harness.run_so_far().emitted
    }

    /// Grants the plugin the sinks named in `sinks`, as an operator's sidecar does (a file's
    /// sidecar `NAME.toml` is read by [`load`](Self::load)). Call it before [`run`](Self::run).
    pub fn grant(&mut self, sinks: &[&str]) -> &mut Self {
        self.harness
            .grant(sinks.iter().map(|sink| (*sink).to_owned()));
        self
    }

    /// The messages for sinks the plugin's committed batches asked for, in order. The
    /// harness records them; it sends nothing.
    pub fn messages(&self) -> &[Message] {
        &self.harness.run_so_far().messages
    }

    /// Every line the plugin logged, with its subscription.
    pub fn logs(&self) -> &[SubscriptionLog] {
        &self.harness.run_so_far().logs
    }

    /// The events the plugin failed on.
    pub fn errors(&self) -> &[HandlerFailure] {
        &self.harness.run_so_far().errors
    }

    /// How many `handle` calls were made so far.
    pub fn batches(&self) -> usize {
        self.harness.run_so_far().batches
    }

    /// Every committed event (appended by the test or emitted by the plugin).
    pub fn events(&self) -> Vec<Event> {
        self.harness.store().events()
    }

    /// Everything the plugin did, as `eventhost test` prints it.
    pub fn report(&self) -> Report {
        Report::of(&self.harness)
    }

    /// Panics, listing every difference, unless the run meets `expectations` (the
    /// `eventhost test --expect` format).
    pub fn assert_meets(&self, expectations: Value) {
        let expectations: Expectations = serde_json::from_value(expectations)
            .unwrap_or_else(|error| panic!("bad expectations: {error}"));
        let differences = expectations.differences(&self.report());
        assert!(
            differences.is_empty(),
            "expectations not met:\n  - {}",
            differences.join("\n  - ")
        );
    }
}

/// Where a workspace plugin crate's component is built, or a message saying how to build it.
pub fn built_wasm(crate_name: &str) -> Result<PathBuf, String> {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let candidates: Vec<PathBuf> = target_dirs()
        .into_iter()
        .map(|dir| dir.join("wasm32-wasip2").join("release").join(&file))
        .collect();
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
        format!(
            "the plugin `{crate_name}` is not built (looked for {}); build it first with: cargo build --release --target wasm32-wasip2 -p {crate_name}",
            looked.join(", ")
        )
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set and absolute, else derived from the
/// running test binary (`<target>/<profile>/deps/<test>`).
fn target_dirs() -> Vec<PathBuf> {
    let from_env = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    let mut dirs: Vec<PathBuf> = from_env.into_iter().chain(from_exe).collect();
    dirs.dedup();
    dirs
}

fn target_dir() -> Option<PathBuf> {
    target_dirs().into_iter().next()
}
