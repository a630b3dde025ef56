//! The test harness: the daemon's own runtime over an in-memory store, with a fixed clock and
//! deterministic limits (fuel instead of wall time, seeded randomness).
//!
//! Plugin authors use it through the `eventhost-harness` crate in `cargo test`, and anyone
//! through `eventhost test PLUGIN.wasm --events FILE.jsonl`. It is the same code path as the
//! daemon's: [`crate::runtime::Plugin::handle`], with [`MemoryStore`] standing in for the
//! database and [`Harness`] for the dispatcher. Fixtures are JSONL in the `eventhost append`
//! input shape ([`crate::input`]).

mod driver;
mod memory;
mod report;

use std::path::{Path, PathBuf};

pub use crate::input::{EventLine, InputError, read_event_lines};
pub use driver::{DriveError, HandlerFailure, Harness, HarnessRun, MAX_BATCHES, SubscriptionLog};
pub use memory::{CLOCK_START, Conflict, MemoryStore};
pub use report::{Expectations, ExpectedEvent, Report, parsed};

use crate::runtime::{LoadError, Plugin, Runtime, RuntimeConfig, RuntimeError};

/// A plugin could not be loaded into the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {source}")]
    Load { path: PathBuf, source: LoadError },
    #[error(transparent)]
    Sidecar(#[from] Box<crate::plugins::PluginsError>),
}

/// A runtime configured for repeatable runs, caching compiled artifacts in `cache_dir`.
pub fn deterministic_runtime(cache_dir: Option<PathBuf>) -> Result<Runtime, RuntimeError> {
    Runtime::new(RuntimeConfig::deterministic(cache_dir))
}

/// Loads the plugin at `path` into a fresh harness, with the limits and batch-size cap of its
/// sidecar `NAME.toml` when there is one, as the daemon would.
pub async fn load(runtime: &Runtime, path: &Path) -> Result<Harness, HarnessError> {
    let sidecar = crate::plugins::read_sidecar(path).map_err(Box::new)?;
    let plugin: Plugin = runtime
        .load_file(path, sidecar.limits)
        .await
        .map_err(|source| HarnessError::Load {
            path: path.to_owned(),
            source,
        })?;
    Ok(Harness::new(plugin).with_max_batch_size(sidecar.batch_size))
}
