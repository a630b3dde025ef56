//! Loading a plugin into a fresh harness, as the daemon loads it: the same runtime, the
//! sidecar's limits, batch-size cap and sink grants, but fuel instead of wall time and seeded
//! randomness. Messages for sinks are recorded, not sent.

use std::path::{Path, PathBuf};

use eventhost_domain::StoreLimits;
use eventhost_runtime::{
    FileRules, LoadError, Plugin, Runtime, RuntimeConfig, RuntimeError, SidecarError, read_sidecar,
};

use crate::Harness;

/// A plugin could not be loaded into the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {source}")]
    Load { path: PathBuf, source: LoadError },
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
}

/// A runtime configured for repeatable runs, caching compiled artifacts in `cache_dir`.
pub fn deterministic_runtime(cache_dir: Option<PathBuf>) -> Result<Runtime, RuntimeError> {
    Runtime::new(RuntimeConfig::deterministic(cache_dir))
}

/// Loads the plugin at `path` into a fresh harness, with the limits and batch-size cap of its
/// sidecar `NAME.toml` when there is one, as the daemon would.
pub async fn load(runtime: &Runtime, path: &Path) -> Result<Harness, HarnessError> {
    // The author names the file: a link to it is followed.
    let rules = FileRules {
        follow_symlinks: true,
        ..FileRules::default()
    };
    let sidecar = read_sidecar(path, rules, StoreLimits::default())?;
    let mut plugin: Plugin = runtime
        .load_file(path, rules, sidecar.limits)
        .await
        .map_err(|source| HarnessError::Load {
            path: path.to_owned(),
            source,
        })?;
    plugin.grant(sidecar.sinks);
    Ok(Harness::new(plugin).with_max_batch_size(sidecar.batch_size))
}
