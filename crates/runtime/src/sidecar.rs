//! The operator's sidecar `NAME.toml` beside a plugin's `NAME.wasm`: overrides of the
//! plugin's [`Limits`], a cap on its batch size, and the sinks it may deliver messages to.
//!
//! ```toml
//! batch_size = 50            # at most this many events per batch
//! sinks = ["billing-webhook"]  # sinks of the daemon's configuration this plugin may use
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
use crate::file::{FileError, FileRules, MAX_SIDECAR_BYTES, read_file};

/// The operator's overrides for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sidecar {
    pub batch_size: Option<u32>,
    /// The sinks the plugin may deliver messages to; none unless granted here.
    pub sinks: Vec<String>,
    pub limits: Limits,
}

/// A subscription's batch size under an operator's cap (a cap of 0 counts as 1).
pub fn capped_batch_size(declared: u32, cap: Option<u32>) -> u32 {
    cap.map_or(declared, |cap| declared.min(cap.max(1)))
}

/// A sidecar that cannot be used; the plugin is not loaded. Messages never quote the file:
/// it may not be a sidecar at all (a link to a secret, a file dropped by mistake).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot use the sidecar: {0}")]
    Read(#[from] FileError),
    #[error("invalid sidecar {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads `NAME.toml` beside `NAME.wasm`, if there is one, under the folder's `rules`, and
/// checks it against the limits of the store the plugin's events go to.
pub fn read_sidecar(
    wasm: &Path,
    rules: FileRules,
    store_limits: StoreLimits,
) -> Result<Sidecar, SidecarError> {
    match sidecar_bytes(wasm, rules)? {
        Some(bytes) => parse_sidecar(wasm, bytes, store_limits),
        None => Ok(Sidecar::default()),
    }
}

/// The bytes of the sidecar beside `wasm`, read under `rules`; `None` when there is none.
pub fn sidecar_bytes(wasm: &Path, rules: FileRules) -> Result<Option<Vec<u8>>, FileError> {
    match read_file(&wasm.with_extension("toml"), rules, MAX_SIDECAR_BYTES) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Parses the sidecar of `wasm` from its bytes, and checks it against the limits of the
/// store the plugin's events go to.
pub fn parse_sidecar(
    wasm: &Path,
    bytes: Vec<u8>,
    store_limits: StoreLimits,
) -> Result<Sidecar, SidecarError> {
    let path = wasm.with_extension("toml");
    let invalid = |message| SidecarError::Invalid {
        path: path.clone(),
        message,
    };
    let text = String::from_utf8(bytes).map_err(|error| {
        invalid(format!(
            "not UTF-8 text (byte {})",
            error.utf8_error().valid_up_to()
        ))
    })?;
    let sidecar: Sidecar =
        toml::from_str(&text).map_err(|error| invalid(located(&text, &error)))?;
    if sidecar.limits.time_per_batch_ms == 0 {
        return Err(invalid(
            "limits.time_per_batch_ms = 0 would stop every batch before it starts: give at least 1"
                .to_owned(),
        ));
    }
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

/// Where a TOML error is and what was expected, without the file's text: the parser's own
/// message quotes the offending line, and values in double quotes, which are the file's.
fn located(text: &str, error: &toml::de::Error) -> String {
    let at = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|byte| **byte == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    let message = error.message().lines().next().unwrap_or_default();
    let message = match message.strip_prefix("unknown field `") {
        Some(rest) => match rest.split_once("`, ") {
            Some((_, expected)) => format!("unknown key, {expected}"),
            None => "unknown key".to_owned(),
        },
        None => without_quoted_values(message),
    };
    format!("line {line}, column {column}: {message}")
}

/// `message` with every double-quoted part replaced by `"…"`.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (index, part) in parts.enumerate() {
        if index % 2 == 0 {
            out.push_str("\"…");
        } else {
            out.push('"');
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar_beside(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let wasm = dir.path().join("p.wasm");
        (dir, wasm)
    }

    fn refusal(text: &[u8]) -> String {
        let (_dir, wasm) = sidecar_beside(text);
        read_sidecar(&wasm, FileRules::default(), StoreLimits::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_file_that_is_not_a_sidecar_is_refused_without_quoting_it() {
        for text in [
            &b"root:$6$SECRET-HASH:19000:0:99999:7:::\n"[..],
            b"batch_size = 10\nSECRET_KEY = 1\n",
            b"batch_size = \"SECRET\"\n",
            b"[limits]\nmemory_bytes = \"SECRET\"\n",
            b"\xff\xfeSECRET",
        ] {
            let message = refusal(text);
            assert!(!message.contains("SECRET"), "{message}");
            assert!(message.contains("p.toml"), "{message}");
        }
        assert!(refusal(b"batch_size = 10\nSECRET_KEY = 1\n").contains("line 2"));
    }

    #[test]
    fn a_zero_time_cap_is_refused() {
        let message = refusal(b"[limits]\ntime_per_batch_ms = 0\n");
        assert!(message.contains("time_per_batch_ms = 0"), "{message}");
    }

    #[test]
    fn a_sidecar_linked_elsewhere_is_refused_unless_links_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "batch_size = 7\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("p.toml")).unwrap();
        let wasm = dir.path().join("p.wasm");
        let refused = read_sidecar(&wasm, FileRules::default(), StoreLimits::default());
        assert!(matches!(
            refused,
            Err(SidecarError::Read(FileError::Symlink { .. }))
        ));
        let following = FileRules {
            follow_symlinks: true,
            ..FileRules::default()
        };
        let sidecar = read_sidecar(&wasm, following, StoreLimits::default()).unwrap();
        assert_eq!(sidecar.batch_size, Some(7));
    }
}
