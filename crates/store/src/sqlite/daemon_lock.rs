//! One daemon per SQLite database: `eventhost run` holds an exclusive lock on a file beside
//! the database (`<database>.lock`) for as long as it runs, and writes in it who holds it.
//! The operating system releases the lock when the process ends, however it ends, so a
//! killed daemon never leaves a stale lock. Other commands (`append`, `read`, ...) do not
//! take it: SQLite serialises their writes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::SqliteStore;
use crate::StoreError;
use crate::leases::host_name;

/// Who holds a database, as written in its lock file.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    since: String,
}

/// Held while the daemon runs; dropping it (or the process ending) releases the database.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl SqliteStore {
    /// Takes the database for this daemon; fails, naming the holder, if another daemon has
    /// it. An in-memory database is this process's own: nothing to take.
    pub fn lock_for_daemon(&self) -> Result<Option<DaemonLock>, StoreError> {
        let Some(database) = self.path() else {
            return Ok(None);
        };
        let path = lock_path(database);
        let failed = |source: std::io::Error| StoreError::DaemonLock {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => serde_json::from_str::<Holder>(&text)
                        .map(|holder| {
                            format!(
                                "pid {} on {} since {}",
                                holder.pid, holder.host, holder.since
                            )
                        })
                        .unwrap_or_else(|_| "another process".to_owned()),
                    Err(_) => "another process".to_owned(),
                };
                return Err(StoreError::DaemonRunning {
                    database: database.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(error)) => return Err(failed(error)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: host_name(),
            since: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        let text = serde_json::to_string(&holder).map_err(|error| failed(error.into()))?;
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        Ok(Some(DaemonLock { _file: file }))
    }
}

/// `<database>.lock`.
fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}
