//! What a plugin may import, and the WASI context it runs in: nothing ambient.
//!
//! Allowed imports, checked at load with a message naming any other import:
//! - `eventhost:plugin/host` and `eventhost:plugin/types` at 0.1.x: the contract;
//! - the interfaces of the `wasi:cli/imports` world at 0.2.x (`wasi:cli`, `wasi:clocks`,
//!   `wasi:filesystem`, `wasi:io`, `wasi:random`, `wasi:sockets`), because real toolchains
//!   import them whether the plugin uses them or not: Rust's `wasm32-wasip2` std imports
//!   cli/environment, exit, stdio, clocks/wall-clock, filesystem/types and preopens, io and
//!   random; componentize-py imports the whole `wasi:cli/imports` world, sockets included;
//!   componentize-js imports cli, clocks, random and io (and `wasi:http` unless built with
//!   `disableFeatures: ['http', 'fetch-event']`, which we ask of JavaScript plugins).
//!   `wasi:http` and anything else is rejected.
//!
//! Linked is not granted. The context has no preopened directory (so no file can be opened),
//! no environment variable, no argument, an empty stdin, stdout and stderr captured into the
//! log, every socket address and name lookup denied (so no connection can be made). Time is
//! not granted either: the wall clock is frozen at the Unix epoch and the monotonic clock is
//! virtual (it starts at 0 and advances 1 µs per reading), so a handler's result depends only
//! on its batch; a plugin that needs "now" uses its events' `recorded-at-ms`. Randomness is
//! the host's in the daemon and seeded in deterministic (harness) mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::output::LogSink;

/// The contract's interfaces a plugin may import, by package and interface (version 0.1.x).
const CONTRACT: &[(&str, &[&str])] = &[("eventhost:plugin", &["host", "types"])];

/// The `wasi:cli/imports` world at 0.2.x, minus nothing: linked, and denied by the context.
const WASI: &[(&str, &[&str])] = &[
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"]),
    ("wasi:filesystem", &["types", "preopens"]),
    ("wasi:io", &["error", "poll", "streams"]),
    ("wasi:random", &["random", "insecure", "insecure-seed"]),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "tcp",
            "tcp-create-socket",
            "udp",
            "udp-create-socket",
            "ip-name-lookup",
        ],
    ),
];

/// A one-line summary of the policy, for error messages.
pub(crate) const ALLOWED_SUMMARY: &str = "eventhost:plugin/host@0.1.x and the wasi:cli/imports@0.2.x interfaces \
     (wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets; all denied by the sandbox)";

/// Whether a component may import `name` (e.g. `wasi:io/streams@0.2.3`).
pub(crate) fn import_allowed(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    let Some((package, interface)) = path.split_once('/') else {
        return false;
    };
    let listed = |table: &[(&str, &[&str])]| {
        table.iter().any(|(listed_package, interfaces)| {
            *listed_package == package && interfaces.contains(&interface)
        })
    };
    (listed(CONTRACT) && version.starts_with("0.1."))
        || (listed(WASI) && version.starts_with("0.2."))
}

/// Whether a plugin's randomness is the host's or seeded (repeatable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Randomness {
    Host,
    Seeded,
}

/// A WASI context granting nothing, with stdout and stderr going to `sink`.
pub(crate) fn wasi_ctx(sink: &LogSink, randomness: Randomness) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(sink.stdout())
        .stderr(sink.stderr())
        .wall_clock(FrozenWallClock)
        .monotonic_clock(VirtualMonotonicClock::default())
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false);
    if randomness == Randomness::Seeded {
        builder
            .secure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
            .insecure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
            .insecure_random_seed(u128::from_le_bytes(
                SEED[..16].try_into().unwrap_or_default(),
            ));
    }
    builder.build()
}

/// The bytes seeded randomness cycles through. Any fixed value does; this one is not zero so
/// that a guest's RNG does not start degenerate.
const SEED: [u8; 32] = *b"eventhost harness seeded random!";

/// Wall-clock time frozen at the Unix epoch: plugins get no wall clock.
struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that reads 0, 1 µs, 2 µs... regardless of real time: code that measures
/// elapsed time sees progress, and the same batch reads the same times.
#[derive(Default)]
struct VirtualMonotonicClock {
    readings: AtomicU64,
}

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.readings.fetch_add(1, Ordering::Relaxed) * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_and_wasi_cli_imports_are_allowed() {
        assert!(import_allowed("eventhost:plugin/host@0.1.0"));
        assert!(import_allowed("eventhost:plugin/types@0.1.0"));
        assert!(import_allowed("wasi:io/streams@0.2.0"));
        assert!(import_allowed("wasi:sockets/tcp@0.2.6"));
    }

    #[test]
    fn http_other_versions_and_unknown_interfaces_are_refused() {
        assert!(!import_allowed("wasi:http/outgoing-handler@0.2.0"));
        assert!(!import_allowed("wasi:io/streams@0.3.0"));
        assert!(!import_allowed("eventhost:plugin/host@0.2.0"));
        assert!(!import_allowed("wasi:keyvalue/store@0.2.0"));
        assert!(!import_allowed("log"));
    }
}
