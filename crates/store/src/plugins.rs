//! The daemon's record of its plugin files, so `plugins list` (another process) can show
//! what runs: name, version, file hash, when it was loaded, and why a file was rejected.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreError;

/// One plugin file as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PluginRecord {
    pub file: String,
    /// The running plugin's name and version (kept when a newer file is rejected).
    pub name: Option<String>,
    pub version: Option<String>,
    /// SHA-256 of the file, hex.
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    /// `compiling` (a first load, its code not yet in the compile cache: seconds to
    /// minutes; the version that ran before, if any, runs meanwhile), `running`,
    /// `rejected` (the old version, if any, still runs), `removed` or `stopped` (with the
    /// daemon).
    pub status: String,
    pub error: Option<String>,
}

pub trait PluginRecords: Send + Sync {
    /// Inserts or replaces the row of `record.file`.
    fn record_plugin(
        &self,
        record: &PluginRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every file's row, by file name.
    fn plugin_records(&self) -> impl Future<Output = Result<Vec<PluginRecord>, StoreError>> + Send;
}
