//! Watches the plugins folder and reports which plugin files changed, debounced: editors and
//! copy tools write a file in pieces, so changes are gathered until the folder has been
//! quiet for a moment. A file caught half-written still fails validation and is retried on
//! its next change; writing to a temporary name and renaming into place avoids that.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::PluginsError;

/// How long the folder must be quiet before a batch of changes is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A running watch on one folder.
pub struct Watcher {
    // Dropping it stops the watch.
    _watcher: RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<PathBuf>,
}

impl Watcher {
    pub fn new(dir: &Path) -> Result<Self, PluginsError> {
        let (sender, changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // Reading a file (as the registry does to load it) is not a change:
                    // reacting to it would reload the folder in a loop.
                    Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                    Ok(event) => {
                        for path in event.paths {
                            if let Some(wasm) = plugin_file(&path) {
                                // The receiver is gone only when the daemon stops watching.
                                let _ = sender.send(wasm);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "plugins folder watch error"),
                }
            })
            .map_err(|error| watch_error(dir, error))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|error| watch_error(dir, error))?;
        Ok(Self {
            _watcher: watcher,
            changes,
        })
    }

    /// The plugin files that changed, once the folder has been quiet for [`DEBOUNCE`].
    /// `None` when the watch has ended.
    pub async fn changes(&mut self) -> Option<BTreeSet<PathBuf>> {
        let mut changed = BTreeSet::from([self.changes.recv().await?]);
        while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, self.changes.recv()).await {
            changed.insert(path);
        }
        Some(changed)
    }
}

/// The `.wasm` file a changed path stands for: itself, or the plugin of a `.toml` sidecar.
fn plugin_file(path: &Path) -> Option<PathBuf> {
    match path.extension()?.to_str()? {
        "wasm" => Some(path.to_owned()),
        "toml" => Some(path.with_extension("wasm")),
        _ => None,
    }
}

fn watch_error(dir: &Path, error: notify::Error) -> PluginsError {
    PluginsError::Folder {
        path: dir.to_owned(),
        source: std::io::Error::other(error),
    }
}
