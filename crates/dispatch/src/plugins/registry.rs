//! The daemon's plugins: which file provides which plugin, applied to the dispatcher as files
//! come, change and go, and recorded in the store for `plugins list`.
//!
//! A new or changed file is loaded (compiled and validated) before anything else happens;
//! only a valid plugin replaces the running version. An invalid file is reported and the
//! old version keeps running. A removed file stops its plugin; checkpoints and state stay,
//! so putting the file back resumes where it stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use eventhost_runtime::{
    FileRules, LoadError, Runtime, Sidecar, file_label, parse_sidecar, read_plugin_file,
    sidecar_bytes,
};
use eventhost_store::{PluginRecord, PluginRecords, Store};

use super::{PluginsError, SinkNames, load_bytes, plugin_files};
use crate::Dispatcher;
use crate::relay::RELAY_PLUGIN;
use crate::shutdown::Shutdown;

/// What a file last provided.
#[derive(Debug, Clone)]
struct FileState {
    /// The plugin the file runs, if it ever loaded.
    plugin: Option<(String, String)>,
    /// What was last read: the file's hash and its sidecar's text.
    seen: (String, String),
}

pub struct Registry {
    runtime: Runtime,
    store: Store,
    rules: FileRules,
    /// The sinks a sidecar may grant.
    sinks: SinkNames,
    files: HashMap<PathBuf, FileState>,
    /// The records written `compiling` and not yet followed by the outcome: a stop
    /// records them `stopped`.
    compiling: HashMap<PathBuf, PluginRecord>,
    /// The daemon's shutdown: a load in progress (compiling, `describe`) is dropped for it.
    shutdown: Shutdown,
}

impl Registry {
    /// A registry reading plugin files under `rules` until `shutdown`, whose sidecars may
    /// grant the sinks named in `sinks`.
    pub fn new(
        runtime: Runtime,
        store: Store,
        rules: FileRules,
        sinks: SinkNames,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            runtime,
            store,
            rules,
            sinks,
            files: HashMap::new(),
            compiling: HashMap::new(),
            shutdown,
        }
    }

    /// Loads every plugin file of `dir` into the dispatcher; stops early at shutdown.
    ///
    /// The files are compiled into the compile cache first, as many at once as the machine
    /// has cores (at least two), and each is then loaded from there as soon as its compile
    /// ends: a small plugin starts in seconds, not behind an interpreter's minute-long
    /// compile. (Which file owns a plugin name does not depend on that order.)
    pub async fn load_folder(
        &mut self,
        dir: &Path,
        dispatcher: &mut Dispatcher,
    ) -> Result<(), PluginsError> {
        let compiles = std::thread::available_parallelism().map_or(2, |cores| cores.get().max(2));
        let files = plugin_files(dir)?;
        self.note_compiling(&files).await;
        let (runtime, rules) = (self.runtime.clone(), self.rules);
        let mut warmed = futures::stream::iter(files)
            .map(|path| {
                let runtime = runtime.clone();
                async move {
                    if let Ok(bytes) = read_plugin_file(&path, rules).await {
                        runtime.warm(&file_label(&path), bytes).await;
                    }
                    path
                }
            })
            .buffer_unordered(compiles);
        let mut shutdown = self.shutdown.clone();
        loop {
            let path = tokio::select! {
                path = warmed.next() => path,
                () = shutdown.requested() => None,
            };
            let Some(path) = path else {
                break;
            };
            if self.shutdown.is_requested() {
                break;
            }
            self.apply(&path, dispatcher).await;
        }
        Ok(())
    }

    /// Records as `compiling` each of `paths` whose code is not in the compile cache, for
    /// `plugins list`: the first load of an interpreter plugin takes a minute. The record
    /// keeps the plugin name last recorded running (or stopped) from the file: that record
    /// is the file's claim to its plugin while it compiles (see [`Registry::owner_of`]).
    async fn note_compiling(&mut self, paths: &[PathBuf]) {
        let mut stored = None;
        for path in paths {
            let Ok(bytes) = read_plugin_file(path, self.rules).await else {
                continue;
            };
            let hash = format!("{:x}", Sha256::digest(&bytes));
            if !self.runtime.needs_compile(&hash) {
                continue;
            }
            let stored = match &stored {
                Some(records) => records,
                None => stored.insert(self.store.plugin_records().await.unwrap_or_else(|error| {
                    warn!(%error, "cannot read the plugin records");
                    Vec::new()
                })),
            };
            let mut record = self.record_for(path, hash, "compiling", None);
            if let Some(last) = stored.iter().find(|last| {
                last.file == record.file
                    && matches!(last.status.as_str(), "running" | "stopped" | "compiling")
            }) {
                record.name.clone_from(&last.name);
                record.version.clone_from(&last.version);
            }
            self.write(record).await;
        }
    }

    /// Brings the dispatcher in line with `path` as it is now on disk.
    pub async fn apply(&mut self, path: &Path, dispatcher: &mut Dispatcher) {
        let file = path.display().to_string();
        let bytes = match read_plugin_file(path, self.rules).await {
            Ok(bytes) => bytes,
            Err(LoadError::Read(error)) if error.is_not_found() => {
                return self.forget(path, dispatcher).await;
            }
            Err(error) => {
                return self.reject(path, String::new(), error.to_string()).await;
            }
        };
        let hash = format!("{:x}", Sha256::digest(&bytes));
        // The sidecar is read once: what is compared with the last load is what is parsed.
        let sidecar = sidecar_bytes(path, self.rules);
        let sidecar_seen = match &sidecar {
            Ok(Some(bytes)) => format!("{:x}", Sha256::digest(bytes)),
            Ok(None) => String::new(),
            Err(error) => error.to_string(),
        };
        let seen = (hash.clone(), sidecar_seen);
        if self.files.get(path).is_some_and(|state| state.seen == seen) {
            return;
        }
        let sidecar = match sidecar {
            Ok(Some(bytes)) => parse_sidecar(path, bytes, self.store.limits()),
            Ok(None) => Ok(Sidecar::default()),
            Err(error) => Err(error.into()),
        };
        let loaded = match sidecar {
            Ok(sidecar) => {
                if self.runtime.needs_compile(&hash) {
                    self.record(path, hash.clone(), "compiling", None).await;
                }
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    loaded = load_bytes(&self.runtime, path, bytes, sidecar, &self.sinks) => loaded,
                    () = shutdown.requested() => {
                        info!(file = %file, "stopping: the plugin file is left unloaded");
                        return;
                    }
                }
            }
            Err(error) => Err(error.into()),
        };
        let dispatchable = match loaded {
            Ok(dispatchable) => dispatchable,
            Err(error) => {
                self.note_seen(path, seen);
                return self.reject(path, hash, error.to_string()).await;
            }
        };
        let info = dispatchable.handler.info();
        let (name, version) = (info.name.clone(), info.version.clone());
        if name == RELAY_PLUGIN {
            let message = format!(
                "the plugin name `{RELAY_PLUGIN}` is the daemon's own, for the relays of its \
                 configuration: give the plugin another name"
            );
            self.note_seen(path, seen);
            return self.reject(path, hash, message).await;
        }
        if let Some(owner) = self.owner_of(&name, path).await {
            let message = format!(
                "plugin {name} belongs to {owner}, which provided it first; a plugin's \
                 subscriptions and state go with the file that first loaded it. Remove {owner} \
                 (or make it another plugin) to move {name} to this file"
            );
            self.note_seen(path, seen);
            return self.reject(path, hash, message).await;
        }
        let previous = self.files.get(path).and_then(|state| state.plugin.clone());
        if let Err(error) = dispatcher.install(dispatchable).await {
            return self
                .reject(
                    path,
                    hash,
                    format!("cannot start its subscriptions: {error}"),
                )
                .await;
        }
        // A file that now declares another name replaces the plugin it ran, once the new
        // one runs: a failed install above leaves the old one running.
        if let Some((old_name, _)) = previous.as_ref().filter(|(old_name, _)| *old_name != name) {
            dispatcher.remove(old_name).await;
        }
        let replaced = previous.map(|(_, old_version)| old_version);
        self.files.insert(
            path.to_owned(),
            FileState {
                plugin: Some((name.clone(), version.clone())),
                seen,
            },
        );
        // Recorded before it is logged: whoever reads the log line finds the record.
        self.record(path, hash, "running", None).await;
        info!(file = %file, plugin = %name, %version, replaced = ?replaced, "plugin running");
    }

    /// Remembers what a file held when it was rejected, so the same bytes are not retried.
    fn note_seen(&mut self, path: &Path, seen: (String, String)) {
        self.files
            .entry(path.to_owned())
            .or_insert_with(|| FileState {
                plugin: None,
                seen: Default::default(),
            })
            .seen = seen;
    }

    /// Records every running plugin, and every file left compiling, as `stopped`: the
    /// daemon is exiting. Rejected and removed files keep their records.
    pub async fn stop(&mut self) {
        for mut record in std::mem::take(&mut self.compiling).into_values() {
            record.status = "stopped".to_owned();
            self.write(record).await;
        }
        let running: Vec<(PathBuf, String)> = self
            .files
            .iter()
            .filter(|(_, state)| state.plugin.is_some())
            .map(|(path, state)| (path.clone(), state.seen.0.clone()))
            .collect();
        for (path, hash) in running {
            self.record(&path, hash, "stopped", None).await;
        }
    }

    /// The file other than `path` that `plugin` belongs to, if any: the file running it in
    /// this process, or else the file recorded running it (or stopped with the daemon, or
    /// compiling its next start) that is still in the folder. A plugin's durable identity (subscriptions, checkpoints, state)
    /// thus stays with the file the operator first deployed it as, whatever order the files
    /// load in after a restart.
    async fn owner_of(&self, plugin: &str, path: &Path) -> Option<String> {
        let running = self.files.iter().find(|(other, state)| {
            other.as_path() != path
                && state
                    .plugin
                    .as_ref()
                    .is_some_and(|(name, _)| name == plugin)
        });
        if let Some((other, _)) = running {
            return Some(other.display().to_string());
        }
        let records = match self.store.plugin_records().await {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "cannot read the plugin records; checking this process's plugins only");
                return None;
            }
        };
        let file = path.display().to_string();
        records
            .into_iter()
            .find(|record| {
                record.name.as_deref() == Some(plugin)
                    && record.file != file
                    && matches!(record.status.as_str(), "running" | "stopped" | "compiling")
                    && Path::new(&record.file).exists()
            })
            .map(|record| record.file)
    }

    async fn forget(&mut self, path: &Path, dispatcher: &mut Dispatcher) {
        let Some(state) = self.files.remove(path) else {
            return;
        };
        if let Some((name, _)) = &state.plugin {
            dispatcher.remove(name).await;
            info!(file = %path.display(), plugin = %name, "plugin file removed: its subscriptions stopped");
        }
        let mut record = self.record_for(path, state.seen.0, "removed", None);
        record.name = state.plugin.as_ref().map(|(name, _)| name.clone());
        record.version = state.plugin.map(|(_, version)| version);
        self.write(record).await;
    }

    async fn reject(&mut self, path: &Path, hash: String, message: String) {
        let running = self.files.get(path).and_then(|state| state.plugin.clone());
        match &running {
            Some((name, version)) => {
                error!(file = %path.display(), error = %message, "plugin file rejected; {name} {version} keeps running")
            }
            None => error!(file = %path.display(), error = %message, "plugin file rejected"),
        }
        self.record(path, hash, "rejected", Some(message)).await;
    }

    async fn record(&mut self, path: &Path, hash: String, status: &str, error: Option<String>) {
        let record = self.record_for(path, hash, status, error);
        self.write(record).await;
    }

    fn record_for(
        &self,
        path: &Path,
        hash: String,
        status: &str,
        error: Option<String>,
    ) -> PluginRecord {
        let running = self.files.get(path).and_then(|state| state.plugin.clone());
        PluginRecord {
            file: path.display().to_string(),
            name: running.as_ref().map(|(name, _)| name.clone()),
            version: running.map(|(_, version)| version),
            hash,
            loaded_at: Utc::now(),
            status: status.to_owned(),
            error,
        }
    }

    async fn write(&mut self, record: PluginRecord) {
        if let Err(error) = self.store.record_plugin(&record).await {
            warn!(file = %record.file, %error, "cannot record the plugin's status");
        }
        let path = PathBuf::from(&record.file);
        if record.status == "compiling" {
            self.compiling.insert(path, record);
        } else {
            self.compiling.remove(&path);
        }
    }
}
