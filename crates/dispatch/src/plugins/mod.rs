//! The plugins folder: every `*.wasm` file in it, each with an optional sidecar `NAME.toml`
//! (see [`eventhost_runtime::Sidecar`]) in which the operator overrides the plugin's limits,
//! caps its batch size and grants it sinks of the daemon's configuration.
//!
//! A file that fails to load is reported and skipped: one bad plugin never stops the others.
//! [`Watcher`] reports changes to the folder; [`Registry`] applies them to the dispatcher.

mod registry;
mod watcher;

pub use registry::Registry;
pub use watcher::{DEBOUNCE, Watcher};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventhost_domain::StoreLimits;
use eventhost_runtime::{
    FileRules, LoadError, Runtime, Sidecar, SidecarError, file_label, read_plugin_file,
    read_sidecar,
};

use crate::Dispatchable;

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error("cannot read the plugins folder {path}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("its sidecar grants sink `{sink}`, which {configured}")]
    UnknownSink { sink: String, configured: String },
}

/// The names of the sinks the daemon's configuration defines: the only ones a sidecar can
/// grant.
pub type SinkNames = BTreeSet<String>;

/// The entries of `dir` named `*.wasm`, in name order, whatever they are: one that is not a
/// regular file is reported when it is loaded, not silently passed over.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, PluginsError> {
    let folder_error = |source| PluginsError::Folder {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_error)? {
        let path = entry.map_err(folder_error)?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "wasm")
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads one plugin file with its sidecar, both read under `rules`; the sidecar may grant
/// only sinks named in `sinks`.
pub async fn load_plugin(
    runtime: &Runtime,
    path: &Path,
    rules: FileRules,
    store_limits: StoreLimits,
    sinks: &SinkNames,
) -> Result<Dispatchable, PluginsError> {
    let sidecar = read_sidecar(path, rules, store_limits)?;
    let bytes = read_plugin_file(path, rules).await?;
    load_bytes(runtime, path, bytes, sidecar, sinks).await
}

/// Loads a plugin from the bytes of the file at `path`, with its sidecar's settings.
pub(crate) async fn load_bytes(
    runtime: &Runtime,
    path: &Path,
    bytes: Vec<u8>,
    sidecar: Sidecar,
    sinks: &SinkNames,
) -> Result<Dispatchable, PluginsError> {
    check_grants(&sidecar, sinks)?;
    let mut plugin = runtime
        .load(&file_label(path), bytes, sidecar.limits)
        .await?;
    plugin.grant(sidecar.sinks);
    Ok(Dispatchable {
        handler: Arc::new(plugin),
        max_batch_size: sidecar.batch_size,
    })
}

/// Every sink the sidecar grants must be one the daemon's configuration defines.
fn check_grants(sidecar: &Sidecar, sinks: &SinkNames) -> Result<(), PluginsError> {
    let Some(unknown) = sidecar.sinks.iter().find(|sink| !sinks.contains(*sink)) else {
        return Ok(());
    };
    let configured = if sinks.is_empty() {
        "is not configured: the daemon's configuration (--config) defines no sinks".to_owned()
    } else {
        let names: Vec<&str> = sinks.iter().map(String::as_str).collect();
        format!(
            "is not configured: the daemon's configuration defines {}",
            names.join(", ")
        )
    };
    Err(PluginsError::UnknownSink {
        sink: unknown.clone(),
        configured,
    })
}
