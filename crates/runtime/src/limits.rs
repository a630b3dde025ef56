//! Per-plugin limits, with documented defaults, and the `ResourceLimiter` that enforces the
//! memory, table and instance caps inside one `Store`.
//!
//! [`Limits`] deserializes from TOML/JSON with every field optional, so an operator's sidecar
//! file overrides only what it names. Memory is capped over the sum of all the component's
//! linear memories (Python and JavaScript components carry several), not per memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What one plugin may use while it handles one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory, summed over all of the component's memories. Default 64 MiB.
    pub memory_bytes: u64,
    /// Wall time for one batch (instantiation plus `handle`), enforced by epoch interruption.
    /// Default 10 000 ms.
    pub time_per_batch_ms: u64,
    /// Instructions for one batch when the runtime counts fuel instead of time (the harness,
    /// where determinism matters). Default 10 000 000 000.
    pub fuel_per_batch: u64,
    /// Time for one host read (state or stream) before the guest gets `unavailable`.
    /// Default 5 000 ms.
    pub host_call_timeout_ms: u64,
    /// Elements in any one table. Default 100 000.
    pub table_elements: u64,
    /// Core instances in one component instance. Default 100.
    pub instances: u32,
    /// Tables in one component instance. Default 100.
    pub tables: u32,
    /// Linear memories in one component instance. Default 16.
    pub memories: u32,
    /// Events emitted in one batch. Default 10 000.
    pub emitted_events: u64,
    /// Bytes emitted in one batch (stream ids, event types, payloads and metadata, as each
    /// event row stores them). Default 16 MiB.
    pub emitted_bytes: u64,
    /// Bytes of one emitted event's payload. Default 1 MiB.
    pub payload_bytes: u64,
    /// Bytes logged in one batch (`log` plus stdout and stderr); later lines are dropped and
    /// counted. Default 64 KiB.
    pub log_bytes: u64,
    /// Bytes of one log line; longer lines are truncated. Default 4 KiB.
    pub log_line_bytes: u64,
    /// Bytes of one state key. Default 1 KiB.
    pub state_key_bytes: u64,
    /// Bytes of one state value. Default 1 MiB.
    pub state_value_bytes: u64,
    /// Bytes of state written (keys plus values) in one batch. Default 16 MiB.
    pub state_written_bytes: u64,
    /// Distinct state keys written (set or deleted) in one batch, so that one batch's commit
    /// stays short. Default 10 000.
    pub state_keys: u64,
    /// Bytes of events one batch reads with `read-stream`. Default 64 MiB.
    pub read_bytes: u64,
    /// Messages one batch asks to deliver. Default 1 000.
    pub messages: u64,
    /// Bytes of one message (body, headers and key). Default 1 MiB.
    pub message_bytes: u64,
    /// Bytes of all the messages of one batch. Default 16 MiB.
    pub messages_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * MIB,
            time_per_batch_ms: 10_000,
            fuel_per_batch: 10_000_000_000,
            host_call_timeout_ms: 5_000,
            table_elements: 100_000,
            instances: 100,
            tables: 100,
            memories: 16,
            emitted_events: 10_000,
            emitted_bytes: 16 * MIB,
            payload_bytes: MIB,
            log_bytes: 64 * KIB,
            log_line_bytes: 4 * KIB,
            state_key_bytes: KIB,
            state_value_bytes: MIB,
            state_written_bytes: 16 * MIB,
            state_keys: 10_000,
            read_bytes: 64 * MIB,
            messages: 1_000,
            message_bytes: MIB,
            messages_bytes: 16 * MIB,
        }
    }
}

impl Limits {
    pub fn time_per_batch(&self) -> Duration {
        Duration::from_millis(self.time_per_batch_ms)
    }

    pub fn host_call_timeout(&self) -> Duration {
        Duration::from_millis(self.host_call_timeout_ms)
    }
}

/// Enforces [`Limits`] on one `Store`, and remembers whether a cap was hit so that a trap that
/// follows a refused `memory.grow` is reported as a memory-cap failure.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_cap: usize,
    memory_used: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    memory_cap_hit: bool,
}

impl StoreLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory_cap: saturating_usize(limits.memory_bytes),
            memory_used: 0,
            table_elements: saturating_usize(limits.table_elements),
            instances: limits.instances as usize,
            tables: limits.tables as usize,
            memories: limits.memories as usize,
            memory_cap_hit: false,
        }
    }

    pub(crate) fn memory_cap_hit(&self) -> bool {
        self.memory_cap_hit
    }

    /// The bytes of linear memory the instance holds (memories only grow in one call).
    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_cap {
            self.memory_cap_hit = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

fn saturating_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn memory_is_capped_over_the_sum_of_all_memories() {
        let limits = Limits {
            memory_bytes: 100,
            ..Limits::default()
        };
        let mut limiter = StoreLimiter::new(&limits);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 30, None).unwrap());
        assert!(!limiter.memory_growing(30, 50, None).unwrap());
        assert!(limiter.memory_cap_hit());
        assert!(limiter.memory_growing(30, 40, None).unwrap());
    }

    #[test]
    fn a_sidecar_overrides_only_the_limits_it_names() {
        let limits: Limits = toml::from_str("memory_bytes = 1048576").unwrap();
        assert_eq!(limits.memory_bytes, MIB);
        assert_eq!(limits.log_bytes, Limits::default().log_bytes);
    }
}
