//! The plugin runtime's cost: events per second through the counter plugin at batch sizes 1,
//! 10, 100 and 1000, and the latency of a fresh instance handling one event, each beside a
//! native Rust handler doing the same work in the same run: the batch handed over in wire form,
//! `count` read through the same `Reads`, the batch length added, written back and committed.
//! The difference is the sandbox's cost: instantiation, copying the batch into the guest,
//! and the host calls.
//!
//! Run: `bash scripts/build-plugins.sh && cargo run --release -p eventhost-bench --bin runtime`.
//! The counter component is found in `$CARGO_TARGET_DIR/wasm32-wasip2/release/counter.wasm`
//! (or the target directory this binary was built in).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhost_bench::target_dir;
use eventhost_domain::{Event, ExpectedVersion, NewEvent, StreamId};
use eventhost_harness::MemoryStore;
use eventhost_runtime::{Limits, Plugin, Reads, Runtime, RuntimeConfig};

/// Events pushed through each handler per batch size.
const EVENTS_PER_RUN: usize = 100_000;
/// Single-event calls timed for the latency row.
const LATENCY_SAMPLES: usize = 2_000;
const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
const NAMESPACE: &str = "counter.all";

/// An event as a guest receives it: id, payload and metadata as owned text.
type WireEvent = (String, String, Vec<(String, String)>);

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> BenchResult<()> {
    let target = target_dir()?;
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/counter.wasm")).map_err(|error| {
        format!("cannot read counter.wasm ({error}); build it first with: bash scripts/build-plugins.sh")
    })?;
    let runtime = Runtime::new(RuntimeConfig::daemon(target.join("bench-cache")))?;
    let plugin = runtime.load("counter", wasm, Limits::default()).await?;
    let events = sample_events(1000)?;

    println!("runtime benchmark: counter plugin (WASM) vs the same handler in native Rust");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "figure", "wasm", "native", "ratio"
    );
    for batch_size in BATCH_SIZES {
        let wasm = throughput(
            &events[..batch_size],
            async |batch: &[Event], store: &MemoryStore| wasm_batch(&plugin, batch, store).await,
        )
        .await?;
        let native = throughput(&events[..batch_size], native_batch).await?;
        row(
            &format!("events/s, batch of {batch_size}"),
            wasm,
            native,
            native / wasm,
        );
    }
    let (wasm_p50, wasm_p99) = latency(
        &events[..1],
        async |batch: &[Event], store: &MemoryStore| wasm_batch(&plugin, batch, store).await,
    )
    .await?;
    let (native_p50, native_p99) = latency(&events[..1], native_batch).await?;
    row(
        "instantiate + 1 event, p50 (µs)",
        micros(wasm_p50),
        micros(native_p50),
        micros(wasm_p50) / micros(native_p50),
    );
    row(
        "instantiate + 1 event, p99 (µs)",
        micros(wasm_p99),
        micros(native_p99),
        micros(wasm_p99) / micros(native_p99),
    );
    println!(
        "ratio: native/wasm for events/s (how many times faster native is), wasm/native for latency"
    );
    Ok(())
}

fn row(figure: &str, wasm: f64, native: f64, ratio: f64) {
    println!("{figure:<34} {wasm:>14.1} {native:>14.1} {ratio:>7.2}x");
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Events per second when `EVENTS_PER_RUN` events go through `handle` in batches of `batch`.
async fn throughput<F>(batch: &[Event], handle: F) -> BenchResult<f64>
where
    F: AsyncFn(&[Event], &MemoryStore) -> BenchResult<()>,
{
    let store = MemoryStore::new();
    let rounds = EVENTS_PER_RUN / batch.len();
    handle(batch, &store).await?;
    let started = Instant::now();
    for _ in 0..rounds {
        handle(batch, &store).await?;
    }
    Ok((rounds * batch.len()) as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 of single calls.
async fn latency<F>(batch: &[Event], handle: F) -> BenchResult<(Duration, Duration)>
where
    F: AsyncFn(&[Event], &MemoryStore) -> BenchResult<()>,
{
    let store = MemoryStore::new();
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        handle(batch, &store).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// One batch through the plugin: fresh instance, `handle`, state committed.
async fn wasm_batch(plugin: &Plugin, batch: &[Event], store: &MemoryStore) -> BenchResult<()> {
    let effects = plugin.handle("all", batch, Arc::new(store.clone())).await?;
    store.apply_state(NAMESPACE, &effects.state);
    Ok(())
}

/// The counter's work in native Rust, through the same host pipeline minus the sandbox: the
/// batch handed over as owned wire-form values (what the guest receives), the same state
/// read through `Reads`, the same JSON encoding and the same state commit.
async fn native_batch(batch: &[Event], store: &MemoryStore) -> BenchResult<()> {
    let handed_over: Vec<WireEvent> = batch
        .iter()
        .map(|event| {
            let metadata = event
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (
                event.id.to_string(),
                event.payload.as_str().to_owned(),
                metadata,
            )
        })
        .collect();
    let reads: Arc<dyn Reads> = Arc::new(store.clone());
    let count: u64 = match reads.state_get(NAMESPACE, "count").await? {
        Some(value) => serde_json::from_str(&value)?,
        None => 0,
    };
    let count = count + std::hint::black_box(handed_over).len() as u64;
    let changes = BTreeMap::from([("count".to_owned(), Some(serde_json::to_string(&count)?))]);
    store.apply_state(NAMESPACE, &changes);
    Ok(())
}

/// Small order events, as stored: the batches both handlers get.
fn sample_events(count: usize) -> BenchResult<Vec<Event>> {
    let store = MemoryStore::new();
    let events = (0..count)
        .map(|n| {
            NewEvent::new(
                "order.created",
                serde_json::json!({ "customer": "c-1", "n": n }),
            )
        })
        .collect();
    Ok(store.append(&StreamId::new("order", "o-1"), ExpectedVersion::Any, events)?)
}
