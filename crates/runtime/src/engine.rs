//! The wasmtime engine: component model, async calls, how a running guest is stopped, and the
//! pooling instance allocator.
//!
//! In the daemon a guest is stopped by epoch interruption: a timer thread ticks the engine's
//! epoch every [`EPOCH_TICK`] while a guest runs; at each tick a running guest is charged the
//! time it ran (`budget.rs`), traps once its budget is spent, and otherwise yields its thread
//! to the other calls waiting for one. The thread stops when the last holder of the engine
//! (the `Runtime` and the plugins it loaded) is dropped. In deterministic mode (the harness)
//! fuel is counted instead, so the same batch stops at the same instruction on every machine.
//!
//! The pool is sized for about 50 plugins running up to [`PoolSize::instances`] batches at
//! once; it reserves address space (not memory) up front. If that reservation fails, the
//! engine falls back to on-demand allocation and says so in a warning.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::RuntimeError;

/// How often the epoch advances: the resolution of the per-batch time limit and the slice a
/// guest runs before it yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How a running guest is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Wall time, by epoch interruption (the daemon).
    Epoch,
    /// Counted instructions (the harness: deterministic, and about 20% slower).
    Fuel,
}

/// How many instances the pooling allocator holds, and how large each may be. Per-plugin
/// [`Limits`](super::Limits) must fit inside these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSize {
    /// Component instances alive at once (batches running at once, plus `describe` calls).
    pub instances: u32,
    /// Core instances alive at once, over all component instances.
    pub core_instances: u32,
    /// Linear memories alive at once.
    pub memories: u32,
    /// Tables alive at once.
    pub tables: u32,
    /// The largest linear memory any plugin may be allowed.
    pub max_memory_bytes: u64,
    /// The most elements in any one table any plugin may be allowed.
    pub max_table_elements: u64,
}

impl Default for PoolSize {
    fn default() -> Self {
        Self {
            instances: 256,
            core_instances: 4096,
            memories: 512,
            tables: 1024,
            max_memory_bytes: 1 << 30,
            max_table_elements: 200_000,
        }
    }
}

/// Builds the engine: pooling if it can reserve its pool, on demand otherwise.
pub(crate) fn build(
    interruption: Interruption,
    pool: Option<&PoolSize>,
) -> Result<Engine, RuntimeError> {
    let Some(pool) = pool else {
        return Engine::new(&base_config(interruption))
            .map_err(|error| RuntimeError::Engine(format!("{error:#}")));
    };
    let mut config = base_config(interruption);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(pool)));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            tracing::warn!(
                error = %format!("{error:#}"),
                "the pooling allocator could not reserve its address space; \
                 falling back to on-demand allocation (slower instantiation)"
            );
            Engine::new(&base_config(interruption))
                .map_err(|error| RuntimeError::Engine(format!("{error:#}")))
        }
    }
}

/// An engine that only compiles: the daemon's code settings, without an instance pool. The
/// compiler keeps a context per thread in its engine for reuse, tens of MB each after the
/// large functions of an interpreter (Python's, JavaScript's); compiling on an engine that
/// is dropped afterwards lets that memory go back to the system.
pub(crate) fn compiler(interruption: Interruption) -> Result<Engine, RuntimeError> {
    Engine::new(&base_config(interruption))
        .map_err(|error| RuntimeError::Engine(format!("{error:#}")))
}

fn base_config(interruption: Interruption) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    match interruption {
        Interruption::Epoch => config.epoch_interruption(true),
        Interruption::Fuel => config.consume_fuel(true),
    };
    config
}

fn pooling(pool: &PoolSize) -> PoolingAllocationConfig {
    let mut config = PoolingAllocationConfig::new();
    config
        .total_component_instances(pool.instances)
        .total_stacks(pool.instances)
        .total_core_instances(pool.core_instances)
        .total_memories(pool.memories)
        .total_tables(pool.tables)
        .max_memory_size(usize::try_from(pool.max_memory_bytes).unwrap_or(usize::MAX))
        .table_elements(usize::try_from(pool.max_table_elements).unwrap_or(usize::MAX))
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20);
    config
}

/// The thread that advances the engine's epoch while at least one guest runs (see
/// [`EpochTicker::ticking`]); with none running it sleeps, so an idle daemon does not wake
/// every tick. A deadline counts ticks from when it is set, and only a running guest can
/// reach it, so ticks skipped while nothing runs change nothing. Dropping the ticker stops
/// and joins the thread.
pub(crate) struct EpochTicker {
    guests: Arc<Guests>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Guests {
    state: Mutex<GuestsState>,
    changed: Condvar,
}

#[derive(Default)]
struct GuestsState {
    running: usize,
    stop: bool,
}

impl Guests {
    fn lock(&self) -> MutexGuard<'_, GuestsState> {
        // The state is two plain fields, consistent at every unlock: a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the epoch advancing while it lives: one per running guest call.
pub(crate) struct Ticking {
    guests: Arc<Guests>,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.guests.lock().running -= 1;
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<Self, RuntimeError> {
        let guests = Arc::new(Guests::default());
        let engine = engine.clone();
        let watched = Arc::clone(&guests);
        let thread = std::thread::Builder::new()
            .name("eventhost-epoch".to_owned())
            .spawn(move || {
                loop {
                    let mut state = watched.lock();
                    while state.running == 0 && !state.stop {
                        state = watched
                            .changed
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    if state.stop {
                        return;
                    }
                    drop(state);
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;
        Ok(Self {
            guests,
            thread: Some(thread),
        })
    }

    /// Starts the epoch ticking (if it was not) until the returned guard is dropped.
    pub(crate) fn ticking(&self) -> Ticking {
        self.guests.lock().running += 1;
        self.guests.changed.notify_one();
        Ticking {
            guests: Arc::clone(&self.guests),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.guests.lock().stop = true;
        self.guests.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochTicker")
    }
}
