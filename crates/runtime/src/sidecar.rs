//! The operator's sidecar `NAME.toml` beside a plugin's `NAME.wasm`: overrides of the
//! plugin's [`Limits`] and a cap on its batch size.
//!
//! ```toml
//! batch_size = 50            # at most this many events per batch
//! [limits]
//! memory_bytes = 33554432    # any field of Limits
//! time_per_batch_ms = 2000
//! ```
//!
//! Both the daemon and the plugin test harness read it, so a plugin is tested under the
//! limits it will run with.

use std::path::{Path, PathBuf};

use eventhost_domain::StoreLimits;
use serde::Deserialize;

use crate::Limits;

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

/// A sidecar that cannot be used; the plugin is not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot read the sidecar {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sidecar {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads `NAME.toml` beside `NAME.wasm`, if there is one, and checks it against the limits of
/// the store the plugin's events go to.
pub fn read_sidecar(wasm: &Path, store_limits: StoreLimits) -> Result<Sidecar, SidecarError> {
    let path = wasm.with_extension("toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Sidecar::default());
        }
        Err(source) => return Err(SidecarError::Read { path, source }),
    };
    let invalid = |message| SidecarError::Invalid {
        path: path.clone(),
        message,
    };
    let sidecar: Sidecar = toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
    let store_cap = store_limits.max_payload_bytes as u64;
    if sidecar.limits.payload_bytes > store_cap {
        return Err(invalid(format!(
            "limits.payload_bytes = {} is above the store's cap of {store_cap} bytes \
             per payload: no event that large could be stored",
            sidecar.limits.payload_bytes
        )));
    }
    Ok(sidecar)
}
