//! The plugin runtime: turns a `.wasm` file into a [`Plugin`] and runs batches through it,
//! sandboxed and bounded.
//!
//! [`Runtime::load`] checks the bytes ([`load`]), compiles them or takes the compiled artifact
//! from the disk cache ([`cache`]), links them against the `host` interface ([`host`],
//! generated from `wit/` in [`bindings`]) and a WASI context that grants nothing ([`sandbox`]),
//! then calls `describe` and validates the answer ([`info`]). [`Plugin::handle`] runs one batch
//! in a fresh instance under [`Limits`] and returns its [`Effects`] for the caller to commit.

mod bindings;
mod budget;
mod cache;
mod effects;
mod engine;
mod error;
mod executor;
mod file;
mod guest_error;
mod host;
mod info;
mod limits;
mod load;
mod outbox;
mod output;
mod plugin;
mod reads;
mod sandbox;
mod sidecar;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventhost_domain::StoreLimits;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use cache::CacheOutcome;
pub use effects::{Effects, Emit, LogLevel, LogLine, LogSource};
pub use engine::{EPOCH_TICK, Interruption, PoolSize};
pub use error::{HandleError, LoadError, RuntimeError};
pub use executor::GuestPool;
pub use file::{FileError, FileRules};
pub use info::{MAX_BATCH_SIZE, PluginInfo, StartFrom, SubscriptionSpec};
pub use limits::Limits;
pub use outbox::Grants;
pub use plugin::{FailedBatch, Plugin};
pub use reads::{ReadError, Reads};
pub use sidecar::{
    Sidecar, SidecarError, capped_batch_size, parse_sidecar, read_sidecar, sidecar_bytes,
};

use bindings::{Handler, HandlerPre};
use cache::ArtifactCache;
use engine::EpochTicker;
use executor::Executor;
use file::read_file;
use host::HostState;
use sandbox::Randomness;

/// Where compiled artifacts are cached when nothing else is configured: beside the default
/// SQLite database, in a directory only the daemon writes.
pub const DEFAULT_CACHE_DIR: &str = "data/cache";

/// How a [`Runtime`] runs plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Epoch (wall time) for the daemon, fuel for deterministic runs.
    pub interruption: Interruption,
    /// The pooling allocator's size; `None` allocates on demand.
    pub pool: Option<PoolSize>,
    /// The threads plugin calls run on, apart from the caller's; `None` runs them on the
    /// caller's runtime.
    pub guests: Option<GuestPool>,
    /// Where compiled artifacts are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Seeded (repeatable) randomness instead of the host's.
    pub seeded_random: bool,
    /// The caps of the store plugins' effects commit to: an emit the store would refuse is
    /// refused at the call.
    pub store_limits: StoreLimits,
}

impl RuntimeConfig {
    /// The daemon's configuration: epoch interruption, pooling, artifacts cached in `cache_dir`.
    pub fn daemon(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            interruption: Interruption::Epoch,
            pool: Some(PoolSize::default()),
            guests: Some(GuestPool::default()),
            cache_dir: Some(cache_dir.into()),
            seeded_random: false,
            store_limits: StoreLimits::default(),
        }
    }

    /// The harness's configuration: fuel instead of time, seeded randomness, no pool.
    pub fn deterministic(cache_dir: Option<PathBuf>) -> Self {
        Self {
            interruption: Interruption::Fuel,
            pool: None,
            guests: None,
            cache_dir,
            seeded_random: true,
            store_limits: StoreLimits::default(),
        }
    }
}

/// What a runtime and every plugin it loaded share. The epoch thread lives as long as this.
pub(crate) struct Shared {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    interruption: Interruption,
    randomness: Randomness,
    pool: Option<PoolSize>,
    ticker: Option<EpochTicker>,
    executor: Executor,
    store_limits: StoreLimits,
}

/// Loads plugins. Cheap to clone; clones share the engine, the linker and the cache.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("interruption", &self.shared.interruption)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build(config.interruption, config.pool.as_ref())?;
        let linker = linker(&engine)?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| ArtifactCache::open(dir, &engine))
            .transpose()?;
        let ticker = match config.interruption {
            Interruption::Epoch => Some(EpochTicker::start(&engine)?),
            Interruption::Fuel => None,
        };
        let executor = Executor::new(config.guests.as_ref())?;
        let randomness = if config.seeded_random {
            Randomness::Seeded
        } else {
            Randomness::Host
        };
        let shared = Shared {
            engine,
            linker,
            cache,
            interruption: config.interruption,
            randomness,
            pool: config.pool,
            ticker,
            executor,
            store_limits: config.store_limits,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Reads (under `rules`) and loads a plugin file with these limits.
    pub async fn load_file(
        &self,
        path: &Path,
        rules: FileRules,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        let bytes = read_plugin_file(path, rules).await?;
        self.load(&file_label(path), bytes, limits).await
    }

    /// Loads a plugin from its bytes: checks, compiles (or takes the cached artifact), links,
    /// and validates its description. `label` names it in logs until it has described itself.
    pub async fn load(
        &self,
        label: &str,
        bytes: Vec<u8>,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        load::check_header(&bytes)?;
        self.check_limits_fit_pool(&limits)?;
        let (component, cache) = self.compile(label, bytes).await?;
        load::check_world(&self.shared.engine, &component)?;
        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(mismatch)?;
        let pre = HandlerPre::new(instance_pre).map_err(mismatch)?;
        let described = plugin::describe(&self.shared, &pre, &limits, label)
            .await
            .map_err(LoadError::Describe)?;
        let info = PluginInfo::from_wit(described).map_err(LoadError::InvalidInfo)?;
        Ok(Plugin::new(
            info,
            pre,
            limits,
            cache,
            Arc::clone(&self.shared),
        ))
    }

    /// Compiles `bytes` into the compile cache unless their artifact is there already, so
    /// that a later [`Runtime::load`] of them takes it from there in milliseconds; `label`
    /// names the file in the log. Without a cache it does nothing. What does not compile is
    /// left for `load` to report: warming says nothing of it.
    pub async fn warm(&self, label: &str, bytes: Vec<u8>) {
        if self.shared.cache.is_none() || load::check_header(&bytes).is_err() {
            return;
        }
        drop(self.compile(label, bytes).await);
    }

    /// Whether loading the plugin whose bytes have the SHA-256 `sha256` (lowercase hex, as
    /// `plugins list` shows it) compiles them: their code is not in the compile cache, or
    /// there is no cache. A large plugin's first load takes seconds to minutes. Taking the
    /// digest the caller has already computed spares hashing the bytes (up to tens of MB)
    /// twice.
    pub fn needs_compile(&self, sha256: &str) -> bool {
        self.shared
            .cache
            .as_ref()
            .is_none_or(|cache| !cache.artifact_path_of(sha256).exists())
    }

    /// [`compile`] on a blocking thread, off the async runtime's workers.
    async fn compile(
        &self,
        label: &str,
        bytes: Vec<u8>,
    ) -> Result<(wasmtime::component::Component, CacheOutcome), LoadError> {
        let shared = Arc::clone(&self.shared);
        let file = label.to_owned();
        tokio::task::spawn_blocking(move || compile(&shared, bytes, &file))
            .await
            .map_err(|error| LoadError::Compile(format!("the compiler task failed: {error}")))?
    }

    fn check_limits_fit_pool(&self, limits: &Limits) -> Result<(), LoadError> {
        let Some(pool) = &self.shared.pool else {
            return Ok(());
        };
        if limits.memory_bytes > pool.max_memory_bytes {
            let (requested, supported) = (limits.memory_bytes, pool.max_memory_bytes);
            return Err(LoadError::LimitAbovePool {
                what: "memory",
                requested,
                supported,
            });
        }
        if limits.table_elements > pool.max_table_elements {
            let (requested, supported) = (limits.table_elements, pool.max_table_elements);
            return Err(LoadError::LimitAbovePool {
                what: "table elements",
                requested,
                supported,
            });
        }
        Ok(())
    }
}

/// How a plugin file is named in logs until the plugin has described itself: its file name.
pub fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Compiles `bytes` (or loads their cached artifact), then drops them and hands what the
/// compiler freed back to the system (see [`cache::release_freed_memory`]). `label` names
/// the plugin in the log while a first load compiles it.
fn compile(
    shared: &Shared,
    bytes: Vec<u8>,
    label: &str,
) -> Result<(wasmtime::component::Component, CacheOutcome), LoadError> {
    let compiled = match &shared.cache {
        Some(cache) => cache.load_or_compile(&shared.engine, shared.interruption, &bytes, label),
        None => cache::compile(&shared.engine, &bytes).map(|c| (c, CacheOutcome::Compiled)),
    };
    drop(bytes);
    if !matches!(compiled, Ok((_, CacheOutcome::Hit))) {
        cache::release_freed_memory();
    }
    compiled
}

fn mismatch(error: wasmtime::Error) -> LoadError {
    LoadError::Mismatch(format!("{error:#}"))
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|error| RuntimeError::Link(format!("{error:#}")))?;
    Handler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
        .map_err(|error| RuntimeError::Link(format!("{error:#}")))?;
    Ok(linker)
}

/// Reads a plugin file under `rules`, off the async threads (a slow disk must not stall
/// them).
pub async fn read_plugin_file(path: &Path, rules: FileRules) -> Result<Vec<u8>, LoadError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || read_file(&owned, rules, rules.max_plugin_bytes))
        .await
        .map_err(|error| {
            LoadError::Read(FileError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(error),
            })
        })?
        .map_err(LoadError::Read)
}
