//! Why a runtime could not start, a plugin could not load, or a batch failed.
//!
//! A [`HandleError`] is a failure of one plugin's batch only: the caller discards the batch's
//! effects and decides about retries; the runtime and every other plugin go on.

use std::path::PathBuf;
use std::time::Duration;

use crate::file::FileError;

/// The runtime itself could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot link the host interfaces: {0}")]
    Link(String),
    #[error("cannot use the compile cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the epoch timer thread: {0}")]
    Ticker(std::io::Error),
    #[error("cannot start the threads plugins run on: {0}")]
    Guests(std::io::Error),
}

/// A file could not become a [`Plugin`](super::Plugin).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] FileError),
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build the plugin for the wasm32-wasip2 target \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "not an eventhost plugin: it does not export {missing} of world eventhost:plugin/handler@0.1.0 \
         (its exports: {exports})"
    )]
    OtherWorld { missing: String, exports: String },
    #[error(
        "imports {imports}, which eventhost does not grant (a plugin may import only {allowed})"
    )]
    ForbiddenImports {
        imports: String,
        allowed: &'static str,
    },
    #[error("does not match the eventhost:plugin@0.1.0 contract: {0}")]
    Mismatch(String),
    #[error(
        "{what} limit {requested} is above what this runtime's instance pool supports ({supported})"
    )]
    LimitAbovePool {
        what: &'static str,
        requested: u64,
        supported: u64,
    },
    #[error("`describe` failed: {0}")]
    Describe(HandleError),
    #[error("`describe` returned an invalid description: {0}")]
    InvalidInfo(String),
    #[error("compilation failed: {0}")]
    Compile(String),
}

/// Why one batch failed. Each is a failure of that plugin only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The caller asked for a subscription the plugin does not have.
    #[error("the plugin has no subscription `{0}`")]
    UnknownSubscription(String),
    /// `handle` returned `err`.
    #[error("the handler failed{}: {message}", if *retryable { " (retryable)" } else { "" })]
    Handler { message: String, retryable: bool },
    /// The guest trapped: a panic, `unreachable`, an out-of-bounds access...
    #[error("the plugin trapped: {message}")]
    Trap { message: String },
    /// The batch ran past its time (or, in deterministic mode, fuel) budget.
    #[error("the plugin ran past its {budget} and was stopped")]
    Timeout { budget: String },
    /// The guest tried to grow its memory past its cap.
    #[error("the plugin needed more than its memory cap of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    /// The batch's output went past a per-batch cap. The guest was told at once (as
    /// `limit-exceeded`); the batch still fails because part of its output was refused.
    #[error("the plugin went past an output cap: {message}")]
    OutputLimit { message: String },
    /// The host could not run the batch (no free instance slot, an internal error...).
    #[error("the host could not run the batch: {message}")]
    Host { message: String },
}

impl HandleError {
    /// Whether running the same batch again may succeed. Traps and caps are deterministic
    /// given the same batch; time and host failures may not be.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Handler { retryable, .. } => *retryable,
            Self::Timeout { .. } | Self::Host { .. } => true,
            Self::UnknownSubscription(_)
            | Self::Trap { .. }
            | Self::MemoryLimit { .. }
            | Self::OutputLimit { .. } => false,
        }
    }

    pub(crate) fn time(limit: Duration) -> Self {
        Self::Timeout {
            budget: format!("time limit of {} ms", limit.as_millis()),
        }
    }

    pub(crate) fn fuel(fuel: u64) -> Self {
        Self::Timeout {
            budget: format!("fuel budget of {fuel} instructions"),
        }
    }
}
