//! Where guest code runs. In the daemon, plugin calls run on threads of their own, apart from
//! the async runtime that serves wake-ups, commits, host reads and signals, so a guest that
//! computes for its whole time budget cannot delay any of them. A call waits first for a
//! place among its plugin's calls ([`GuestPool::calls_per_plugin`]: one plugin's many
//! subscriptions queue behind each other, not ahead of other plugins), then for one among
//! all calls ([`GuestPool::concurrent_calls`]), first come first served at each. A running
//! guest yields at every epoch tick (see `plugin.rs`), so the guest threads are shared among
//! the calls admitted, a slice each in turn.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;

use super::error::{HandleError, RuntimeError};

/// The threads guest code runs on and how many calls may run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPool {
    /// Threads running guest code. Default: the machine's parallelism.
    pub threads: usize,
    /// Plugin calls (batches and `describe`) running at once; later ones queue in arrival
    /// order. Default 128, within the pooling allocator's instances.
    pub concurrent_calls: usize,
    /// Calls of one plugin running at once, whatever its number of subscriptions. Default:
    /// the number of threads.
    pub calls_per_plugin: usize,
}

impl Default for GuestPool {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            threads,
            concurrent_calls: 128,
            calls_per_plugin: threads,
        }
    }
}

/// Runs plugin calls: on the guest threads when it has them, on the caller's runtime
/// otherwise (the harness, which runs one call at a time).
pub(crate) struct Executor {
    guests: Option<Guests>,
}

/// The guest threads and the places among all calls.
struct Guests {
    runtime: tokio::runtime::Runtime,
    admission: Semaphore,
    calls_per_plugin: usize,
}

/// The places among one plugin's calls; `None` where calls are not queued.
pub(crate) type PluginGate = Option<Arc<Semaphore>>;

impl Executor {
    pub(crate) fn new(pool: Option<&GuestPool>) -> Result<Self, RuntimeError> {
        let Some(pool) = pool else {
            return Ok(Self { guests: None });
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(pool.threads.max(1))
            .thread_name("eventhost-guest")
            .enable_time()
            .build()
            .map_err(RuntimeError::Guests)?;
        Ok(Self {
            guests: Some(Guests {
                runtime,
                admission: Semaphore::new(pool.concurrent_calls.max(1)),
                calls_per_plugin: pool.calls_per_plugin.max(1),
            }),
        })
    }

    /// The queue a new plugin's calls wait in.
    pub(crate) fn plugin_gate(&self) -> PluginGate {
        self.guests
            .as_ref()
            .map(|guests| Arc::new(Semaphore::new(guests.calls_per_plugin)))
    }

    /// Runs `call` once a place among `gate`'s calls (if any) and among all calls is free.
    /// Dropping the returned future cancels the call at its next yield.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        gate: &PluginGate,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, HandleError> {
        let Some(guests) = &self.guests else {
            return Ok(call.await);
        };
        let closed = |_| HandleError::Host {
            message: "the plugin runtime is shutting down".to_owned(),
        };
        let _plugin_place = match gate {
            Some(gate) => Some(gate.acquire().await.map_err(closed)?),
            None => None,
        };
        let _place = guests.admission.acquire().await.map_err(closed)?;
        spawn_on(guests.runtime.handle(), call)
            .await
            .map_err(|error| HandleError::Host {
                message: format!("the plugin call ended abnormally: {error}"),
            })
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // The last plugin may be dropped on an async thread, where a blocking shutdown
        // panics; calls still running are cancelled at their next yield.
        if let Some(guests) = self.guests.take() {
            guests.runtime.shutdown_background();
        }
    }
}

/// Runs `task` on `runtime` and waits for it; dropping the wait cancels the task.
pub(crate) async fn spawn_on<T: Send + 'static>(
    runtime: &Handle,
    task: impl Future<Output = T> + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    AbortOnDropHandle::new(runtime.spawn(task)).await
}
