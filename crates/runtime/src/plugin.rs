//! A loaded plugin: its description, its pre-linked component, and `handle`.
//!
//! Every call gets a fresh `Store` and a fresh instance from the `InstancePre` (fast with the
//! pooling allocator and copy-on-write memory images), so no state leaks between batches and a
//! store that trapped or timed out is simply dropped, never reused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{Store, Trap, UpdateDeadline};

use super::Shared;
use super::bindings::{HandlerPre, wit};
use super::budget::Budget;
use super::cache::CacheOutcome;
use super::effects::{Effects, LogLine};
use super::engine::{EpochTicker, Interruption};
use super::error::HandleError;
use super::executor::PluginGate;
use super::guest_error;
use super::host::{BatchState, HostState};
use super::info::PluginInfo;
use super::limits::{Limits, StoreLimiter};
use super::outbox::Grants;
use super::output::LogSink;
use super::reads::Reads;
use super::sandbox;
use eventhost_domain::Event;

/// How long past its time limit a call may go before it is abandoned even if it is inside a
/// host call (epoch interruption only stops guest code).
const GRACE: Duration = Duration::from_secs(1);

/// How many times its time limit a call may take in wall time, waiting for threads
/// included, before it is abandoned whatever held it up: a guest's budget counts the time
/// it runs, not the time it waits for a turn (see `budget.rs`).
const WALL_FACTOR: u32 = 4;

/// In fuel mode, how many times its time limit a call may take in wall time before it is
/// abandoned: generous, so that fuel (deterministic) and not the machine's speed decides.
const FUEL_WALL_FACTOR: u32 = 6;

/// How many of the guest's last stderr lines a trap's message is looked for in (a Python
/// traceback, a panic message).
const STDERR_TAIL: usize = 64;

/// A batch that failed, with what the plugin logged before it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedBatch {
    pub error: HandleError,
    pub logs: Vec<LogLine>,
}

/// A validated, compiled plugin, ready to handle batches. Cheap to share behind an `Arc`.
pub struct Plugin {
    info: PluginInfo,
    pre: HandlerPre<HostState>,
    limits: Limits,
    /// The sinks the plugin may deliver messages to.
    grants: Grants,
    cache: CacheOutcome,
    /// Where the plugin's calls queue for a guest thread.
    gate: PluginGate,
    shared: Arc<Shared>,
    /// The most linear memory one of its calls has held, in bytes.
    memory_peak: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(
        info: PluginInfo,
        pre: HandlerPre<HostState>,
        limits: Limits,
        cache: CacheOutcome,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            info,
            pre,
            limits,
            grants: Grants::default(),
            cache,
            gate: shared.executor.plugin_gate(),
            shared,
            memory_peak: AtomicU64::new(0),
        }
    }

    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Allows the plugin to deliver messages to the sinks named in `sinks`, and no other.
    pub fn grant(&mut self, sinks: impl IntoIterator<Item = String>) {
        self.grants = Arc::new(sinks.into_iter().collect());
    }

    /// The sinks the plugin may deliver messages to, in name order.
    pub fn sinks(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().map(String::as_str)
    }

    /// Whether loading used the compile cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// Handles one batch of `subscription` (the plugin's own name for it) and returns the
    /// batch's effects, to be committed together, or why the batch failed.
    pub async fn handle(
        &self,
        subscription: &str,
        batch: &[Event],
        reads: Arc<dyn Reads>,
    ) -> Result<Effects, HandleError> {
        self.handle_keeping_logs(subscription, batch, reads)
            .await
            .map_err(|failed| failed.error)
    }

    /// [`handle`](Self::handle), also returning what the plugin logged when the batch fails.
    pub async fn handle_keeping_logs(
        &self,
        subscription: &str,
        batch: &[Event],
        reads: Arc<dyn Reads>,
    ) -> Result<Effects, FailedBatch> {
        if self.info.subscription(subscription).is_none() {
            let error = HandleError::UnknownSubscription(subscription.to_owned());
            return Err(FailedBatch {
                error,
                logs: Vec::new(),
            });
        }
        let namespace = format!("{}.{subscription}", self.info.name);
        let logs = LogSink::new(
            Arc::from(self.info.name.as_str()),
            Some(subscription.to_owned()),
            &self.limits,
        );
        let state = BatchState::new(
            namespace,
            reads,
            self.limits.clone(),
            self.shared.store_limits,
            Arc::clone(&self.grants),
            batch,
        );
        let store = self
            .store(logs.clone(), Some(state))
            .map_err(|error| failed(error, &logs))?;
        let request = Request::Handle {
            subscription: subscription.to_owned(),
            events: batch.iter().map(wit::Event::from).collect(),
        };
        let (store, answer) = call(
            &self.shared,
            &self.pre,
            &self.limits,
            &self.gate,
            store,
            request,
        )
        .await
        .map_err(|error| failed(error, &logs))?;
        self.measure(store.data());
        // A refused output decides the outcome even if the plugin then returned `ok` (or an
        // error about it): committing part of a batch's output would break all-or-nothing.
        if let Some(cap) = store.data().output_cap_hit() {
            let error = HandleError::OutputLimit {
                message: cap.to_owned(),
            };
            return Err(failed(error, &logs));
        }
        if let Answer::Handled(Err(error)) = answer {
            let error = HandleError::Handler {
                message: error.message,
                retryable: error.retryable,
            };
            return Err(failed(error, &logs));
        }
        Ok(store.into_data().into_effects())
    }

    /// Records a call's instantiation time and the plugin's memory high-water mark.
    fn measure(&self, state: &HostState) {
        let plugin = self.info.name.clone();
        if let Some(took) = state.instantiated_in {
            metrics::histogram!("eventhost_plugin_instantiation_seconds", "plugin" => plugin.clone())
                .record(took);
        }
        let used = state.limiter.memory_used() as u64;
        let peak = self
            .memory_peak
            .fetch_max(used, Ordering::Relaxed)
            .max(used);
        metrics::gauge!("eventhost_plugin_memory_high_water_bytes", "plugin" => plugin)
            .set(peak as f64);
    }

    fn store(
        &self,
        logs: LogSink,
        batch: Option<BatchState>,
    ) -> Result<Store<HostState>, HandleError> {
        new_store(&self.shared, &self.limits, logs, batch)
    }
}

fn failed(error: HandleError, logs: &LogSink) -> FailedBatch {
    FailedBatch {
        error,
        logs: logs.finish().0,
    }
}

/// Calls `describe` on a fresh instance, under the plugin's limits like a batch; only `log`
/// works during the call.
pub(crate) async fn describe(
    shared: &Arc<Shared>,
    pre: &HandlerPre<HostState>,
    limits: &Limits,
    label: &str,
) -> Result<wit::PluginInfo, HandleError> {
    let logs = LogSink::new(Arc::from(label), None, limits);
    let store = new_store(shared, limits, logs, None)?;
    match call(shared, pre, limits, &None, store, Request::Describe).await? {
        (_, Answer::Described(info)) => Ok(info),
        (_, Answer::Handled(_)) => Err(HandleError::Host {
            message: "`describe` answered as `handle`".to_owned(),
        }),
    }
}

/// What one call asks of the guest.
enum Request {
    Describe,
    Handle {
        subscription: String,
        events: Vec<wit::Event>,
    },
}

/// What the guest answered.
enum Answer {
    Described(wit::PluginInfo),
    Handled(Result<(), wit::HandlerError>),
}

/// A store for one call, with the limiter and the time (or fuel) budget in place.
fn new_store(
    shared: &Shared,
    limits: &Limits,
    logs: LogSink,
    batch: Option<BatchState>,
) -> Result<Store<HostState>, HandleError> {
    let wasi = sandbox::wasi_ctx(&logs, shared.randomness);
    let state = HostState::new(wasi, StoreLimiter::new(limits), logs, batch);
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|state| &mut state.limiter);
    match shared.interruption {
        Interruption::Epoch => {
            // At every tick the guest's run is charged to its budget; past the budget it
            // traps, otherwise it yields to the other calls waiting for a guest thread.
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|mut context| {
                let Some(budget) = context.data_mut().budget.as_mut() else {
                    return Ok(UpdateDeadline::Continue(1));
                };
                if budget.charge() {
                    return Ok(UpdateDeadline::Interrupt);
                }
                Ok(UpdateDeadline::YieldCustom(1, budget.yield_turn()))
            });
        }
        Interruption::Fuel => {
            store
                .set_fuel(limits.fuel_per_batch)
                .map_err(|error| HandleError::Host {
                    message: format!("cannot set fuel: {error:#}"),
                })?
        }
    }
    Ok(store)
}

/// Instantiates the plugin in `store` and runs `request` on it, on the runtime's guest
/// threads once `gate` admits it, within its time budget; any failure is classified into a
/// [`HandleError`]. The store comes back with the answer: it holds the call's effects and
/// logs.
async fn call(
    shared: &Shared,
    pre: &HandlerPre<HostState>,
    limits: &Limits,
    gate: &PluginGate,
    mut store: Store<HostState>,
    request: Request,
) -> Result<(Store<HostState>, Answer), HandleError> {
    let ticking = shared.ticker.as_ref().map(EpochTicker::ticking);
    let wall_budget = match shared.interruption {
        Interruption::Epoch => limits.time_per_batch() * WALL_FACTOR + GRACE,
        Interruption::Fuel => limits.time_per_batch() * FUEL_WALL_FACTOR,
    };
    let (pre, limits) = (pre.clone(), limits.clone());
    let guest = async move {
        let _ticking = ticking;
        store.data_mut().budget = Some(Budget::start(limits.time_per_batch()));
        let outcome = tokio::time::timeout(wall_budget, async {
            let started = std::time::Instant::now();
            let handler = pre.instantiate_async(&mut store).await?;
            store.data_mut().instantiated_in = Some(started.elapsed());
            match request {
                Request::Describe => handler
                    .call_describe(&mut store)
                    .await
                    .map(Answer::Described),
                Request::Handle {
                    subscription,
                    events,
                } => handler
                    .call_handle(&mut store, &subscription, &events)
                    .await
                    .map(Answer::Handled),
            }
        })
        .await;
        match outcome {
            Ok(Ok(answer)) => Ok((store, answer)),
            Ok(Err(error)) => Err(classify(&error, &store, &limits)),
            Err(_elapsed) => Err(HandleError::time(limits.time_per_batch())),
        }
    };
    shared.executor.run(gate, guest).await?
}

fn classify(error: &wasmtime::Error, store: &Store<HostState>, limits: &Limits) -> HandleError {
    if store.data().limiter.memory_cap_hit() {
        return HandleError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return HandleError::Trap {
            message: format!("the plugin exited with status {}", exit.0),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => HandleError::time(limits.time_per_batch()),
        Some(Trap::OutOfFuel) => HandleError::fuel(limits.fuel_per_batch),
        Some(trap) => HandleError::Trap {
            message: with_stderr(trap.to_string(), store),
        },
        None => HandleError::Host {
            message: format!("{error:#}"),
        },
    }
}

/// The trap's message with what the guest said about it on stderr (see `guest_error`).
fn with_stderr(message: String, store: &Store<HostState>) -> String {
    match guest_error::explain(&store.data().logs.stderr_tail(STDERR_TAIL)) {
        Some(said) => format!("{message}; {said}"),
        None => message,
    }
}
