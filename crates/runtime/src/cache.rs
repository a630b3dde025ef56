//! The compiled-artifact cache: compile a component once, load it in milliseconds afterwards.
//!
//! An artifact is keyed by sha256 of the wasm bytes plus a digest of the engine's
//! precompile-compatibility hash (wasmtime version, target, and the settings that shape code),
//! so a changed engine looks up other files. Files are written to a temporary name and renamed,
//! so a reader never sees half an artifact. An artifact that fails to load (incompatible,
//! truncated, corrupt) is recompiled and replaced: the cache never turns into an error.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::{self, Interruption};
use super::error::{LoadError, RuntimeError};

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// Loaded from a cached artifact.
    Hit,
    /// Compiled (no artifact yet, or no cache configured).
    Compiled,
    /// A cached artifact could not be loaded, so it was compiled again and replaced.
    Recompiled,
}

/// A directory of compiled artifacts that only this daemon writes.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_digest: String,
}

impl ArtifactCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_digest = format!("{:x}", hasher.0.finalize())[..16].to_owned();
        Ok(Self {
            dir: dir.to_owned(),
            engine_digest,
        })
    }

    /// The artifact file for `wasm` under this engine.
    pub(crate) fn artifact_path(&self, wasm: &[u8]) -> PathBuf {
        self.artifact_path_of(&format!("{:x}", Sha256::digest(wasm)))
    }

    /// The artifact file for the component whose SHA-256 is `digest` (lowercase hex).
    pub(crate) fn artifact_path_of(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_digest))
    }

    /// Loads the cached artifact for `wasm`, or compiles it (on an engine of its own, dropped
    /// after: see [`engine::compiler`]), stores the artifact and loads it from there. Either
    /// way the component's code is mapped from its file: clean pages the kernel shares and
    /// may drop, where a component compiled in memory keeps its code (tens of MB for an
    /// interpreter) in the heap for as long as it runs.
    ///
    /// A compile is logged as it starts and ends (`label` names the plugin): a large plugin's
    /// first load takes seconds to minutes, which the log then explains.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        interruption: Interruption,
        wasm: &[u8],
        label: &str,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let path = self.artifact_path(wasm);
        let outcome = match path.exists() {
            true => match self.deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(artifact = %path.display(), %error, "cached artifact unusable; recompiling");
                    CacheOutcome::Recompiled
                }
            },
            false => CacheOutcome::Compiled,
        };
        let megabytes = wasm.len() as f64 / 1e6;
        tracing::info!(file = %label, "compiling the plugin ({megabytes:.1} MB, first load: its code is cached for later starts)");
        let started = std::time::Instant::now();
        let artifact = precompile(interruption, wasm)?;
        tracing::info!(file = %label, "compiled the plugin in {:.1} s", started.elapsed().as_secs_f64());
        let stored = self.store(&artifact, &path);
        let component = match stored {
            Ok(()) => {
                drop(artifact);
                self.deserialize(engine, &path)
            }
            Err(error) => {
                tracing::warn!(artifact = %path.display(), %error, "cannot write compiled artifact");
                // SAFETY: the bytes are the artifact `precompile_component` just returned.
                unsafe { Component::deserialize(engine, &artifact) }
            }
        };
        let component = component.map_err(|error| LoadError::Compile(format!("{error:#}")))?;
        Ok((component, outcome))
    }

    fn deserialize(&self, engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: deserializing runs native code from the file, so it must come from a trusted
        // compiler. Files here are written only by `store` below, by this daemon, in a
        // directory only the daemon writes (operators are told so), under a name derived
        // from the sha256 of the exact wasm bytes and the engine's compatibility hash; and
        // wasmtime checks the artifact's header and engine compatibility before using it.
        unsafe { Component::deserialize_file(engine, path) }
    }

    /// Writes the artifact to a temporary file beside its final name, then renames it into
    /// place (a temporary file that is not renamed is deleted).
    fn store(&self, artifact: &[u8], path: &Path) -> Result<(), std::io::Error> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(artifact)?;
        file.persist(path).map_err(|error| error.error)?;
        Ok(())
    }
}

/// Compiles `wasm` to an artifact on an engine and threads of its own, all gone when it
/// returns: the compiler keeps per-thread state (contexts, scratch buffers sized by the
/// largest function compiled: tens of MB for an interpreter's), which would otherwise stay
/// with the daemon's engine and the process-wide compile threads for the daemon's life.
fn precompile(interruption: Interruption, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
    let (exited, exits) = std::sync::mpsc::channel();
    let threads = rayon::ThreadPoolBuilder::new()
        .thread_name(|n| format!("eventhost-compile-{n}"))
        .exit_handler(move |_| {
            let _ = exited.send(());
        })
        .build()
        .map_err(|error| {
            LoadError::Compile(format!("cannot start the compile threads: {error}"))
        })?;
    let count = threads.current_num_threads();
    let compiler =
        engine::compiler(interruption).map_err(|error| LoadError::Compile(error.to_string()))?;
    let artifact = threads.install(|| compiler.precompile_component(wasm));
    drop(compiler);
    // The pool's threads end after the drop, each freeing its own state as it exits.
    drop(threads);
    for _ in 0..count {
        if exits.recv_timeout(THREAD_EXIT).is_err() {
            break;
        }
    }
    artifact.map_err(|error| LoadError::Compile(format!("{error:#}")))
}

/// How long a compile waits for each of its threads to end before going on without it.
const THREAD_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Compiles `wasm` in memory (no cache configured: the harness).
pub(crate) fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, wasm).map_err(|error| LoadError::Compile(format!("{error:#}")))
}

/// Hands the memory a load freed back to the system. glibc's allocator keeps freed memory in
/// its arenas, one per thread that allocated, for later allocations; a compile of an
/// interpreter's component (Python's, JavaScript's) and the plugin's bytes leave hundreds of
/// MB there, resident for the daemon's life, unless trimmed.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns wholly free pages of the allocator's arenas to the
    // kernel; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Feeds a `Hash` value into sha256, which (unlike `DefaultHasher`) is stable across builds.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ])
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
