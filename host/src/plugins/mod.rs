//! The plugins folder: every `*.wasm` file in it, each with an optional sidecar `NAME.toml`
//! in which the operator overrides the plugin's limits and caps its batch size:
//!
//! ```toml
//! batch_size = 50            # at most this many events per batch
//! [limits]
//! memory_bytes = 33554432    # any field of runtime::Limits
//! time_per_batch_ms = 2000
//! ```
//!
//! A file that fails to load is reported and skipped: one bad plugin never stops the others.
//! [`Watcher`] reports changes to the folder; [`Registry`] applies them to the dispatcher.

mod registry;
mod watcher;

pub use registry::Registry;
pub use watcher::{DEBOUNCE, Watcher};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::dispatch::Dispatchable;
use crate::runtime::{Limits, LoadError, Runtime};
use crate::store::StoreLimits;

/// The operator's overrides for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sidecar {
    pub batch_size: Option<u32>,
    pub limits: Limits,
}

/// A subscription's batch size under an operator's cap (a cap of 0 counts as 1).
pub fn capped_batch_size(declared: u32, cap: Option<u32>) -> u32 {
    cap.map_or(declared, |cap| declared.min(cap.max(1)))
}

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error("cannot read the plugins folder {path}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the sidecar {path}")]
    SidecarRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sidecar {path}: {message}")]
    SidecarInvalid { path: PathBuf, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The `.wasm` files of `dir`, in name order.
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
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `NAME.toml` beside `NAME.wasm`, if there is one.
pub fn read_sidecar(wasm: &Path) -> Result<Sidecar, PluginsError> {
    let path = wasm.with_extension("toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let sidecar: Sidecar =
                toml::from_str(&text).map_err(|error| PluginsError::SidecarInvalid {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            let store_cap = StoreLimits::default().max_payload_bytes as u64;
            if sidecar.limits.payload_bytes > store_cap {
                return Err(PluginsError::SidecarInvalid {
                    path,
                    message: format!(
                        "limits.payload_bytes = {} is above the store's cap of {store_cap} bytes \
                         per payload: no event that large could be stored",
                        sidecar.limits.payload_bytes
                    ),
                });
            }
            Ok(sidecar)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Sidecar::default()),
        Err(source) => Err(PluginsError::SidecarRead { path, source }),
    }
}

/// Loads one plugin file with its sidecar.
pub async fn load_plugin(runtime: &Runtime, path: &Path) -> Result<Dispatchable, PluginsError> {
    let sidecar = read_sidecar(path)?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
    load_bytes(runtime, path, bytes, sidecar).await
}

/// Loads a plugin from the bytes of the file at `path`, with its sidecar's settings.
pub(crate) async fn load_bytes(
    runtime: &Runtime,
    path: &Path,
    bytes: Vec<u8>,
    sidecar: Sidecar,
) -> Result<Dispatchable, PluginsError> {
    let label = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let plugin = runtime.load(&label, bytes, sidecar.limits).await?;
    Ok(Dispatchable {
        handler: Arc::new(plugin),
        max_batch_size: sidecar.batch_size,
    })
}
