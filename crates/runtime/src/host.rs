//! The `host` interface a plugin imports, implemented over one call's store data.
//!
//! Nothing here touches the database: writes go to the batch's buffer ([`BatchState`]),
//! reads go to [`Reads`] (committed data) layered under the batch's own writes, each read
//! run on the caller's runtime (not the guest threads) and bounded there by the plugin's
//! host-call timeout, which so measures the read, not a wait for a busy thread. During
//! `describe` only `log` works.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::runtime::Handle;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Host, new_event_from_wit, wit};
use super::budget::Budget;
use super::effects::{Effects, Emit, LogLevel};
use super::executor::spawn_on;
use super::limits::{Limits, StoreLimiter};
use super::outbox::{Grants, Outbox, Refusal};
use super::output::LogSink;
use super::reads::{ReadError, Reads};
use eventhost_domain::{
    Event, Metadata, NewEvent, StoreLimits, StreamId, StreamRead, Version, append,
};

/// The most entries one `state-scan` or `read-stream` returns.
const MAX_PAGE: u32 = 1000;

/// How many events a `read-stream` first asks the store for: most streams are shorter, and
/// take one read.
const FIRST_READ_CHUNK: usize = 16;

/// The most events the first read of a `read-streams` call asks for, over all its streams;
/// a stream that wants more than its share reads on as `read-stream` does.
const FIRST_READS_EVENTS: usize = 1000;

/// About how many bytes of events a `read-stream` asks the store for at once after its first
/// read (sized by the events' average so far): what the daemon holds for a call beyond what
/// it already charged to the batch.
const READ_CHUNK_BYTES: usize = 4 << 20;

/// The data of one `Store`: one `describe` or one `handle` call.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    pub(crate) logs: LogSink,
    batch: Option<BatchState>,
    /// What the call may still run; set as the call starts running.
    pub(crate) budget: Option<Budget>,
    /// How long instantiating the plugin for the call took.
    pub(crate) instantiated_in: Option<std::time::Duration>,
}

impl HostState {
    pub(crate) fn new(
        wasi: WasiCtx,
        limiter: StoreLimiter,
        logs: LogSink,
        batch: Option<BatchState>,
    ) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            logs,
            batch,
            budget: None,
            instantiated_in: None,
        }
    }

    /// The first per-batch output cap the guest ran into, if any.
    pub(crate) fn output_cap_hit(&self) -> Option<&str> {
        self.batch
            .as_ref()
            .and_then(|batch| batch.cap_hit.as_deref())
    }

    /// The batch's buffered effects, with its logs.
    pub(crate) fn into_effects(self) -> Effects {
        let (logs, dropped_log_lines) = self.logs.finish();
        let (emitted, state, messages) = self
            .batch
            .map(|batch| (batch.emitted, batch.state, batch.outbox.into_messages()))
            .unwrap_or_default();
        Effects {
            emitted,
            state,
            messages,
            logs,
            dropped_log_lines,
        }
    }

    fn batch(&mut self) -> Result<&mut BatchState, wit::HostError> {
        self.batch.as_mut().ok_or_else(|| {
            wit::HostError::Unavailable("only `log` is available during `describe`".to_owned())
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What one `handle` call has buffered so far, and what it needs to check new effects.
pub(crate) struct BatchState {
    namespace: String,
    reads: Arc<dyn Reads>,
    /// The runtime the batch was started from, where its reads run.
    host: Handle,
    limits: Limits,
    /// The caps of the store the batch's effects commit to.
    store_limits: StoreLimits,
    /// `causation-id` and `correlation-id` added to emitted events that do not set them.
    inherited: Metadata,
    emitted: Vec<Emit>,
    versions: HashMap<StreamId, Version>,
    emitted_events: u64,
    emitted_bytes: u64,
    state: BTreeMap<String, Option<String>>,
    state_written: u64,
    read_bytes: u64,
    outbox: Outbox,
    cap_hit: Option<String>,
}

impl BatchState {
    /// A batch whose state lives under `namespace` (`<plugin>.<subscription>`), and whose
    /// messages may go to the sinks in `grants`.
    pub(crate) fn new(
        namespace: String,
        reads: Arc<dyn Reads>,
        limits: Limits,
        store_limits: StoreLimits,
        grants: Grants,
        batch: &[Event],
    ) -> Self {
        let last_position = batch.last().map_or(0, |event| event.position);
        Self {
            outbox: Outbox::new(grants, &namespace, last_position),
            namespace,
            reads,
            host: Handle::current(),
            limits,
            store_limits,
            inherited: inherited_metadata(batch),
            emitted: Vec::new(),
            versions: HashMap::new(),
            emitted_events: 0,
            emitted_bytes: 0,
            state: BTreeMap::new(),
            state_written: 0,
            read_bytes: 0,
            cap_hit: None,
        }
    }

    /// Runs a read on the host's runtime, turning a failure or a timeout into `unavailable`
    /// for the guest.
    async fn read<T: Send + 'static>(
        &self,
        what: &str,
        read: impl FnOnce(Arc<dyn Reads>) -> BoxFuture<'static, Result<T, ReadError>>,
    ) -> Result<T, wit::HostError> {
        let timeout = self.limits.host_call_timeout();
        let read = read(Arc::clone(&self.reads));
        let outcome = spawn_on(&self.host, tokio::time::timeout(timeout, read)).await;
        match outcome {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(wit::HostError::Unavailable(format!(
                "{what} failed: {error}"
            ))),
            Ok(Err(_)) => Err(wit::HostError::Unavailable(format!(
                "{what} timed out after {} ms",
                self.limits.host_call_timeout_ms
            ))),
            Err(error) => Err(wit::HostError::Unavailable(format!(
                "{what} ended abnormally: {error}"
            ))),
        }
    }

    fn exceed(&mut self, message: String) -> wit::HostError {
        self.cap_hit.get_or_insert_with(|| message.clone());
        wit::HostError::LimitExceeded(message)
    }

    async fn emit(
        &mut self,
        stream: StreamId,
        expected: eventhost_domain::ExpectedVersion,
        events: Vec<wit::NewEvent>,
    ) -> Result<u64, wit::HostError> {
        if stream.aggregate_type.is_empty() || stream.aggregate_id.is_empty() {
            return Err(wit::HostError::Invalid(
                "a stream needs an aggregate-type and an aggregate-id".to_owned(),
            ));
        }
        if events.is_empty() {
            return Err(wit::HostError::Invalid(
                "emit needs at least one event".to_owned(),
            ));
        }
        let most = self.store_limits.max_events_per_append;
        if events.len() > most {
            return Err(wit::HostError::Invalid(format!(
                "one emit can carry at most {most} events (the store's cap on one append); \
                 this one has {}: split them over several emits",
                events.len()
            )));
        }
        let events = self.checked_events(events)?;
        // What the store would refuse at the commit is refused here, where the guest hears why.
        append::prepare(&stream, &events, self.store_limits)
            .map_err(|error| wit::HostError::Invalid(error.to_string()))?;
        let actual = match self.versions.get(&stream) {
            Some(version) => *version,
            None => {
                let read = stream.clone();
                self.read("reading the stream's version", move |reads| {
                    async move { reads.stream_version(&read).await }.boxed()
                })
                .await?
            }
        };
        if !expected.accepts(actual) {
            return Err(wit::HostError::Conflict(wit::VersionConflict {
                stream: (&stream).into(),
                expected: expected.into(),
                actual,
            }));
        }
        self.charge_emit(&stream, &events)?;
        let version = actual + events.len() as u64;
        self.versions.insert(stream.clone(), version);
        self.emitted.push(Emit {
            stream,
            expected,
            events,
        });
        Ok(version)
    }

    fn checked_events(&self, events: Vec<wit::NewEvent>) -> Result<Vec<NewEvent>, wit::HostError> {
        events
            .into_iter()
            .map(|event| {
                if event.payload.len() as u64 > self.limits.payload_bytes {
                    return Err(wit::HostError::Invalid(format!(
                        "payload of {} bytes is over the cap of {} bytes",
                        event.payload.len(),
                        self.limits.payload_bytes
                    )));
                }
                let mut event = new_event_from_wit(event).map_err(wit::HostError::Invalid)?;
                for (key, value) in &self.inherited {
                    event
                        .metadata
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
                Ok(event)
            })
            .collect()
    }

    fn charge_emit(
        &mut self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<(), wit::HostError> {
        let count = self.emitted_events + events.len() as u64;
        if count > self.limits.emitted_events {
            let cap = self.limits.emitted_events;
            return Err(self.exceed(format!("more than {cap} events emitted in one batch")));
        }
        let stream_bytes = (stream.aggregate_type.len() + stream.aggregate_id.len()) as u64;
        let bytes = self.emitted_bytes
            + events
                .iter()
                .map(|event| event_bytes(event) + stream_bytes)
                .sum::<u64>();
        if bytes > self.limits.emitted_bytes {
            let cap = self.limits.emitted_bytes;
            return Err(self.exceed(format!("more than {cap} bytes emitted in one batch")));
        }
        self.emitted_events = count;
        self.emitted_bytes = bytes;
        Ok(())
    }

    fn check_key(&self, key: &str) -> Result<(), wit::HostError> {
        if key.contains('\0') {
            return Err(wit::HostError::Invalid(
                "a state key cannot hold a NUL character".to_owned(),
            ));
        }
        if key.len() as u64 > self.limits.state_key_bytes {
            return Err(wit::HostError::Invalid(format!(
                "state key of {} bytes is over the cap of {} bytes",
                key.len(),
                self.limits.state_key_bytes
            )));
        }
        Ok(())
    }

    fn write_state(&mut self, key: String, value: Option<String>) -> Result<(), wit::HostError> {
        self.check_key(&key)?;
        if value.as_ref().is_some_and(|value| value.contains('\0')) {
            return Err(wit::HostError::Invalid(
                "a state value cannot hold a NUL character".to_owned(),
            ));
        }
        let value_len = value.as_ref().map_or(0, String::len) as u64;
        if value_len > self.limits.state_value_bytes {
            return Err(wit::HostError::Invalid(format!(
                "state value of {value_len} bytes is over the cap of {} bytes",
                self.limits.state_value_bytes
            )));
        }
        let written = self.state_written + key.len() as u64 + value_len;
        if written > self.limits.state_written_bytes {
            let cap = self.limits.state_written_bytes;
            return Err(self.exceed(format!(
                "more than {cap} bytes of state written in one batch"
            )));
        }
        if !self.state.contains_key(&key) && self.state.len() as u64 >= self.limits.state_keys {
            let cap = self.limits.state_keys;
            return Err(self.exceed(format!("more than {cap} state keys written in one batch")));
        }
        self.state_written = written;
        self.state.insert(key, value);
        Ok(())
    }

    async fn state_get(&self, key: String) -> Result<Option<String>, wit::HostError> {
        self.check_key(&key)?;
        if let Some(value) = self.state.get(&key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.reads.state_known(&self.namespace, &key) {
            return Ok(value);
        }
        let namespace = self.namespace.clone();
        self.read("reading state", move |reads| {
            async move { reads.state_get(&namespace, &key).await }.boxed()
        })
        .await
    }

    /// The batch's own writes first, then what the reads know without waiting, then one
    /// read for the rest.
    async fn state_get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, wit::HostError> {
        if keys.len() > MAX_PAGE as usize {
            return Err(wit::HostError::Invalid(format!(
                "{} keys in one state-get-many (at most {MAX_PAGE})",
                keys.len()
            )));
        }
        let mut values = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            self.check_key(key)?;
            let known = match self.state.get(key) {
                Some(value) => Some(value.clone()),
                None => self.reads.state_known(&self.namespace, key),
            };
            if known.is_none() {
                missing.push(index);
            }
            values.push(known.flatten());
        }
        if missing.is_empty() {
            return Ok(values);
        }
        let wanted: Vec<String> = missing.iter().map(|&index| keys[index].clone()).collect();
        let namespace = self.namespace.clone();
        let found = self
            .read("reading state", move |reads| {
                async move { reads.state_get_many(&namespace, &wanted).await }.boxed()
            })
            .await?;
        for (index, value) in missing.into_iter().zip(found) {
            values[index] = value;
        }
        Ok(values)
    }

    /// Committed entries merged with the batch's writes: pages of committed entries are read
    /// until `limit` live entries are found, because the batch may have deleted some.
    async fn state_scan(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, wit::HostError> {
        let limit = limit.min(MAX_PAGE);
        let mut found = Vec::new();
        let mut cursor = start_after;
        while found.len() < limit as usize {
            let (namespace, scanned, after) =
                (self.namespace.clone(), prefix.clone(), cursor.clone());
            let page = self
                .read("scanning state", move |reads| {
                    async move {
                        reads
                            .state_scan(&namespace, &scanned, after.as_deref(), limit)
                            .await
                    }
                    .boxed()
                })
                .await?;
            let exhausted = page.len() < limit as usize;
            let upper = if exhausted {
                None
            } else {
                page.last().map(|(key, _)| key.clone())
            };
            let merged = self.merge_page(page, &prefix, cursor.as_deref(), upper.as_deref());
            found.extend(merged.into_iter().take(limit as usize - found.len()));
            if exhausted {
                break;
            }
            cursor = upper;
        }
        Ok(found)
    }

    /// One page of committed entries with the batch's writes to keys in `(after, upper]`
    /// (unbounded above when `upper` is `None`) laid over it.
    fn merge_page(
        &self,
        page: Vec<(String, String)>,
        prefix: &str,
        after: Option<&str>,
        upper: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut merged: BTreeMap<String, String> = page
            .into_iter()
            .filter(|(key, _)| !self.state.contains_key(key))
            .collect();
        let in_range = |key: &str| {
            after.is_none_or(|after| key > after) && upper.is_none_or(|upper| key <= upper)
        };
        for (key, value) in &self.state {
            if let Some(value) = value
                .as_ref()
                .filter(|_| key.starts_with(prefix) && in_range(key))
            {
                merged.insert(key.clone(), value.clone());
            }
        }
        merged
    }

    /// At most `limit` events from `from_version`, read in chunks whose bytes are charged
    /// to the batch's `read_bytes` cap as they arrive: a stream of large events fails the
    /// batch at its cap rather than filling the daemon's memory.
    async fn read_stream(
        &mut self,
        stream: StreamId,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<wit::Event>, wit::HostError> {
        let limit = limit.min(MAX_PAGE) as usize;
        let mut page = Page::new(from_version);
        let ask = page.next_ask(limit);
        self.read_on(&stream, &mut page, limit, ask).await?;
        Ok(page.events)
    }

    /// One read of every stream's version and first events (at most [`FIRST_READS_EVENTS`]
    /// and about [`READ_CHUNK_BYTES`] in all), then, for a stream whose page ended before
    /// its limit and its version, chunks as `read-stream` reads them. The versions read let
    /// later emits skip their own read.
    async fn read_streams(
        &mut self,
        reads: Vec<wit::StreamRead>,
    ) -> Result<Vec<wit::StreamPage>, wit::HostError> {
        if reads.len() > MAX_PAGE as usize {
            return Err(wit::HostError::Invalid(format!(
                "{} reads in one read-streams (at most {MAX_PAGE})",
                reads.len()
            )));
        }
        let reading = reads.iter().filter(|read| read.limit > 0).count();
        let share = (FIRST_READS_EVENTS / reading.max(1)).max(1);
        let limits: Vec<usize> = reads
            .iter()
            .map(|read| read.limit.min(MAX_PAGE) as usize)
            .collect();
        let asked: Vec<StreamRead> = reads
            .into_iter()
            .zip(&limits)
            .map(|(read, &limit)| StreamRead {
                stream: read.stream.into(),
                from_version: read.from_version,
                limit: limit.min(share),
            })
            .collect();
        let (asked, found) = self
            .read("reading streams", move |reads| {
                async move {
                    let found = reads.read_streams(&asked, READ_CHUNK_BYTES).await?;
                    Ok((asked, found))
                }
                .boxed()
            })
            .await?;
        if found.len() != asked.len() {
            return Err(wit::HostError::Unavailable(format!(
                "reading streams returned {} pages for {} reads",
                found.len(),
                asked.len()
            )));
        }
        let mut pages = Vec::with_capacity(asked.len());
        for ((read, limit), found) in asked.into_iter().zip(limits).zip(found) {
            self.versions
                .entry(read.stream.clone())
                .or_insert(found.version);
            let mut page = Page::new(read.from_version);
            self.take(&mut page, found.events)?;
            if page.events.len() < limit && page.next.max(1) <= found.version {
                let ask = page.next_ask(limit);
                self.read_on(&read.stream, &mut page, limit, ask).await?;
            }
            pages.push(wit::StreamPage {
                version: found.version,
                events: page.events,
            });
        }
        Ok(pages)
    }

    /// Reads `stream` on into `page` until it holds `limit` events or the stream ends: `ask`
    /// events first, then chunks of about [`READ_CHUNK_BYTES`].
    async fn read_on(
        &mut self,
        stream: &StreamId,
        page: &mut Page,
        limit: usize,
        mut ask: usize,
    ) -> Result<(), wit::HostError> {
        while ask > 0 {
            let (read, next) = (stream.clone(), page.next);
            let chunk = self
                .read("reading the stream", move |reads| {
                    async move { reads.read_stream(&read, next, ask as u32).await }.boxed()
                })
                .await?;
            let exhausted = chunk.len() < ask;
            self.take(page, chunk)?;
            if exhausted {
                break;
            }
            ask = page.next_ask(limit);
        }
        Ok(())
    }

    /// Adds `chunk` to `page`, charging each event's bytes to the batch as it goes.
    fn take(&mut self, page: &mut Page, chunk: Vec<Event>) -> Result<(), wit::HostError> {
        for event in chunk {
            let size = event.text_bytes();
            self.charge_read(size)?;
            page.bytes += size;
            page.next = event.version + 1;
            page.events.push(wit::Event::from(&event));
        }
        Ok(())
    }

    fn deliver(&mut self, sink: String, message: wit::Message) -> Result<String, wit::HostError> {
        match self.outbox.deliver(&self.limits, sink, message) {
            Ok(id) => Ok(id),
            Err(Refusal::Invalid(why)) => Err(wit::HostError::Invalid(why)),
            Err(Refusal::Cap(why)) => Err(self.exceed(why)),
        }
    }

    fn charge_read(&mut self, bytes: usize) -> Result<(), wit::HostError> {
        let read = self.read_bytes + bytes as u64;
        if read > self.limits.read_bytes {
            let cap = self.limits.read_bytes;
            return Err(self.exceed(format!("more than {cap} bytes of events read in one batch")));
        }
        self.read_bytes = read;
        Ok(())
    }
}

/// The events of one stream read so far for a guest.
struct Page {
    events: Vec<wit::Event>,
    bytes: usize,
    /// The version to read from next.
    next: Version,
}

impl Page {
    fn new(from_version: Version) -> Self {
        Self {
            events: Vec::new(),
            bytes: 0,
            next: from_version,
        }
    }

    /// How many events to ask for next, towards `limit`: [`FIRST_READ_CHUNK`] before any,
    /// then about [`READ_CHUNK_BYTES`] of them, sized by the average so far.
    fn next_ask(&self, limit: usize) -> usize {
        if self.events.is_empty() {
            return limit.min(FIRST_READ_CHUNK);
        }
        let average = (self.bytes / self.events.len()).max(1);
        (READ_CHUNK_BYTES / average)
            .max(1)
            .min(limit - self.events.len())
    }
}

fn event_bytes(event: &NewEvent) -> u64 {
    let metadata: usize = event
        .metadata
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    (event.event_type.len() + event.payload.to_string().len() + metadata) as u64
}

/// Emitted events are caused by the batch's last event and carry its correlation over
/// (or start a correlation at it).
fn inherited_metadata(batch: &[Event]) -> Metadata {
    let Some(last) = batch.last() else {
        return Metadata::new();
    };
    let id = last.id.hyphenated().to_string();
    let correlation = last
        .metadata
        .get("correlation-id")
        .cloned()
        .unwrap_or_else(|| id.clone());
    Metadata::from([
        ("causation-id".to_owned(), id),
        ("correlation-id".to_owned(), correlation),
    ])
}

impl wit::Host for HostState {}

impl Host for HostState {
    async fn log(&mut self, level: wit::Level, message: String) {
        let level = match level {
            wit::Level::Trace => LogLevel::Trace,
            wit::Level::Debug => LogLevel::Debug,
            wit::Level::Info => LogLevel::Info,
            wit::Level::Warn => LogLevel::Warn,
            wit::Level::Error => LogLevel::Error,
        };
        self.logs.log(level, &message);
    }

    async fn emit(
        &mut self,
        stream: wit::StreamId,
        expected: wit::ExpectedVersion,
        events: Vec<wit::NewEvent>,
    ) -> Result<u64, wit::HostError> {
        self.batch()?
            .emit(stream.into(), expected.into(), events)
            .await
    }

    async fn state_get(&mut self, key: String) -> Result<Option<String>, wit::HostError> {
        self.batch()?.state_get(key).await
    }

    async fn state_get_many(
        &mut self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, wit::HostError> {
        self.batch()?.state_get_many(keys).await
    }

    async fn state_set(&mut self, key: String, value: String) -> Result<(), wit::HostError> {
        self.batch()?.write_state(key, Some(value))
    }

    async fn state_delete(&mut self, key: String) -> Result<(), wit::HostError> {
        self.batch()?.write_state(key, None)
    }

    async fn state_scan(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, wit::HostError> {
        self.batch()?.state_scan(prefix, start_after, limit).await
    }

    async fn read_stream(
        &mut self,
        stream: wit::StreamId,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<wit::Event>, wit::HostError> {
        self.batch()?
            .read_stream(stream.into(), from_version, limit)
            .await
    }

    async fn read_streams(
        &mut self,
        reads: Vec<wit::StreamRead>,
    ) -> Result<Vec<wit::StreamPage>, wit::HostError> {
        self.batch()?.read_streams(reads).await
    }

    async fn deliver(
        &mut self,
        sink: String,
        message: wit::Message,
    ) -> Result<String, wit::HostError> {
        self.batch()?.deliver(sink, message)
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use eventhost_domain::ExpectedVersion;

    /// Committed state `a`, `b`, `c`, `d` and a stream `order/o-1` at version 2.
    struct Committed;

    impl Reads for Committed {
        fn state_get<'a>(
            &'a self,
            _: &'a str,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
            Box::pin(async move {
                Ok(["a", "b", "c", "d"]
                    .contains(&key)
                    .then(|| format!("old-{key}")))
            })
        }

        fn state_scan<'a>(
            &'a self,
            _: &'a str,
            prefix: &'a str,
            after: Option<&'a str>,
            limit: u32,
        ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>> {
            let entries = ["a", "b", "c", "d"]
                .into_iter()
                .filter(|key| key.starts_with(prefix) && after.is_none_or(|after| *key > after))
                .take(limit as usize)
                .map(|key| (key.to_owned(), format!("old-{key}")))
                .collect();
            Box::pin(async move { Ok(entries) })
        }

        fn stream_version<'a>(
            &'a self,
            stream: &'a StreamId,
        ) -> BoxFuture<'a, Result<Version, ReadError>> {
            let version = if stream.aggregate_id == "o-1" { 2 } else { 0 };
            Box::pin(async move { Ok(version) })
        }

        fn read_stream<'a>(
            &'a self,
            _: &'a StreamId,
            _: Version,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// A stream `big/b-1` of `events` events, each with a payload of `payload_bytes`.
    struct BigStream {
        events: u64,
        payload_bytes: usize,
    }

    impl Reads for BigStream {
        fn state_get<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
            Box::pin(async { Ok(None) })
        }

        fn state_scan<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Option<&'a str>,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn stream_version<'a>(
            &'a self,
            _: &'a StreamId,
        ) -> BoxFuture<'a, Result<Version, ReadError>> {
            let version = self.events;
            Box::pin(async move { Ok(version) })
        }

        fn read_stream<'a>(
            &'a self,
            _: &'a StreamId,
            from: Version,
            limit: u32,
        ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
            let payload = serde_json::Value::String("x".repeat(self.payload_bytes));
            let events = (from.max(1)..=self.events)
                .take(limit as usize)
                .map(|version| Event {
                    id: uuid::Uuid::new_v4(),
                    position: version,
                    aggregate_type: "big".to_owned(),
                    aggregate_id: "b-1".to_owned(),
                    version,
                    event_type: "e".to_owned(),
                    payload: eventhost_domain::Payload::from_value(&payload),
                    metadata: Metadata::new(),
                    recorded_at: Default::default(),
                })
                .collect();
            Box::pin(async move { Ok(events) })
        }
    }

    fn batch() -> BatchState {
        BatchState::new(
            "p.s".to_owned(),
            Arc::new(Committed),
            Limits::default(),
            StoreLimits::default(),
            Grants::default(),
            &[],
        )
    }

    fn event() -> wit::NewEvent {
        wit::NewEvent {
            id: None,
            event_type: "e".to_owned(),
            payload: "{}".to_owned(),
            metadata: vec![],
        }
    }

    #[tokio::test]
    async fn reads_see_the_batch_own_writes_over_committed_state() {
        let mut batch = batch();
        batch.write_state("b".to_owned(), None).unwrap();
        batch
            .write_state("bb".to_owned(), Some("new-bb".to_owned()))
            .unwrap();
        batch
            .write_state("c".to_owned(), Some("new-c".to_owned()))
            .unwrap();
        assert_eq!(batch.state_get("b".to_owned()).await.unwrap(), None);
        assert_eq!(
            batch.state_get("a".to_owned()).await.unwrap(),
            Some("old-a".to_owned())
        );
        let page = batch.state_scan(String::new(), None, 3).await.unwrap();
        let keys: Vec<(&str, &str)> = page
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(keys, [("a", "old-a"), ("bb", "new-bb"), ("c", "new-c")]);
        let rest = batch
            .state_scan(String::new(), Some("c".to_owned()), 3)
            .await
            .unwrap();
        assert_eq!(rest, [("d".to_owned(), "old-d".to_owned())]);
    }

    #[tokio::test]
    async fn a_many_key_read_answers_in_order_from_writes_then_committed_state() {
        let mut batch = batch();
        batch.write_state("b".to_owned(), None).unwrap();
        batch
            .write_state("c".to_owned(), Some("new-c".to_owned()))
            .unwrap();
        let keys = ["a", "b", "c", "zz", "a"].map(str::to_owned).to_vec();
        assert_eq!(
            batch.state_get_many(keys).await.unwrap(),
            [
                Some("old-a".to_owned()),
                None,
                Some("new-c".to_owned()),
                None,
                Some("old-a".to_owned())
            ]
        );
        let too_many = vec!["k".to_owned(); MAX_PAGE as usize + 1];
        assert!(matches!(
            batch.state_get_many(too_many).await,
            Err(wit::HostError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn an_emit_of_no_events_is_refused_at_the_call_and_records_nothing() {
        let mut batch = batch();
        let order = StreamId::new("order", "o-1");
        let emitted = batch.emit(order, ExpectedVersion::Any, Vec::new()).await;
        assert!(
            matches!(&emitted, Err(wit::HostError::Invalid(message)) if message.contains("at least one event")),
            "{emitted:?}"
        );
        assert!(batch.emitted.is_empty());
    }

    #[tokio::test]
    async fn what_the_store_cannot_keep_is_refused_at_the_call() {
        let mut batch = batch();
        let order = StreamId::new("order", "o-1");
        let mut nul_type = event();
        nul_type.event_type = "e\0".to_owned();
        let emitted = batch
            .emit(order, ExpectedVersion::Any, vec![nul_type])
            .await;
        assert!(
            matches!(&emitted, Err(wit::HostError::Invalid(message)) if message.contains("NUL")),
            "{emitted:?}"
        );
        let long = StreamId::new("order", "x".repeat(2000));
        let emitted = batch.emit(long, ExpectedVersion::Any, vec![event()]).await;
        assert!(
            matches!(&emitted, Err(wit::HostError::Invalid(message)) if message.contains("byte cap")),
            "{emitted:?}"
        );
        for (key, value) in [("k\0", "v"), ("k", "v\0")] {
            let written = batch.write_state(key.to_owned(), Some(value.to_owned()));
            assert!(
                matches!(&written, Err(wit::HostError::Invalid(message)) if message.contains("NUL")),
                "{written:?}"
            );
        }
        assert!(batch.emitted.is_empty());
        assert!(batch.state.is_empty());
    }

    #[tokio::test]
    async fn an_emit_over_the_stores_append_cap_is_refused_at_the_call() {
        let mut batch = batch();
        batch.limits.emitted_events = 50_000;
        let most = StoreLimits::default().max_events_per_append;
        let order = StreamId::new("order", "o-1");
        let too_many = vec![event(); most + 1];
        let emitted = batch
            .emit(order.clone(), ExpectedVersion::Any, too_many)
            .await;
        assert!(
            matches!(&emitted, Err(wit::HostError::Invalid(message)) if message.contains("split them")),
            "{emitted:?}"
        );
        assert!(batch.emitted.is_empty());
        let emitted = batch
            .emit(order, ExpectedVersion::Any, vec![event(); most])
            .await;
        assert!(emitted.is_ok(), "{emitted:?}");
        assert_eq!(batch.emitted[0].events.len(), most);
    }

    #[tokio::test]
    async fn emits_check_the_expected_version_against_earlier_emits_of_the_batch() {
        let mut batch = batch();
        let order = StreamId::new("order", "o-1");
        let two = vec![event(), event()];
        let emitted = batch
            .emit(order.clone(), ExpectedVersion::Exact(2), two)
            .await;
        assert!(matches!(emitted, Ok(4)), "{emitted:?}");
        let conflict = batch
            .emit(order.clone(), ExpectedVersion::Exact(2), vec![event()])
            .await;
        assert!(matches!(
            conflict,
            Err(wit::HostError::Conflict(wit::VersionConflict {
                actual: 4,
                ..
            }))
        ));
        let emitted = batch
            .emit(order, ExpectedVersion::Exact(4), vec![event()])
            .await;
        assert!(matches!(emitted, Ok(5)), "{emitted:?}");
        let fresh = StreamId::new("shipment", "s-1");
        let emitted = batch
            .emit(fresh, ExpectedVersion::NoStream, vec![event()])
            .await;
        assert!(matches!(emitted, Ok(1)), "{emitted:?}");
    }

    #[tokio::test]
    async fn invalid_payloads_and_ids_are_refused_with_the_reason() {
        let mut batch = batch();
        let stream = StreamId::new("order", "o-2");
        let bad_json = wit::NewEvent {
            payload: "{oops".to_owned(),
            ..event()
        };
        let refused = batch
            .emit(stream.clone(), ExpectedVersion::Any, vec![bad_json])
            .await;
        assert!(
            matches!(refused, Err(wit::HostError::Invalid(message)) if message.contains("not JSON"))
        );
        let bad_id = wit::NewEvent {
            id: Some("nope".to_owned()),
            ..event()
        };
        let refused = batch.emit(stream, ExpectedVersion::Any, vec![bad_id]).await;
        assert!(
            matches!(refused, Err(wit::HostError::Invalid(message)) if message.contains("not a UUID"))
        );
    }

    #[tokio::test]
    async fn emitted_bytes_count_each_events_stream_id() {
        let mut batch = batch();
        batch.limits.emitted_bytes = 10_000;
        // Each event: a 1005-byte stream id, type `e` and payload `{}`: 1008 bytes.
        let stream = StreamId::new("order", "x".repeat(1000));
        let nine = vec![event(); 9];
        batch
            .emit(stream.clone(), ExpectedVersion::Any, nine)
            .await
            .unwrap();
        let tenth = batch
            .emit(stream, ExpectedVersion::Any, vec![event()])
            .await;
        assert!(
            matches!(&tenth, Err(wit::HostError::LimitExceeded(message)) if message.contains("bytes emitted")),
            "{tenth:?}"
        );
    }

    #[tokio::test]
    async fn distinct_state_keys_written_in_one_batch_are_capped() {
        let mut batch = batch();
        batch.limits.state_keys = 3;
        for key in ["a", "b", "c", "a"] {
            batch
                .write_state(key.to_owned(), Some("v".to_owned()))
                .unwrap();
        }
        batch.write_state("b".to_owned(), None).unwrap();
        let fourth = batch.write_state("d".to_owned(), Some("v".to_owned()));
        assert!(
            matches!(&fourth, Err(wit::HostError::LimitExceeded(message)) if message.contains("state keys")),
            "{fourth:?}"
        );
    }

    #[tokio::test]
    async fn a_read_stream_returns_its_whole_page_and_charges_its_bytes_to_the_batch() {
        let reads = BigStream {
            events: 40,
            payload_bytes: 100_000,
        };
        let mut batch = BatchState::new(
            "p.s".to_owned(),
            Arc::new(reads),
            Limits::default(),
            StoreLimits::default(),
            Grants::default(),
            &[],
        );
        batch.limits.read_bytes = 3_000_000;
        let stream = StreamId::new("big", "b-1");
        let page = batch.read_stream(stream.clone(), 1, 25).await.unwrap();
        assert_eq!(page.len(), 25, "a full page, read in chunks");
        assert_eq!(page[24].version, 25);
        let over = batch.read_stream(stream, 26, 25).await;
        assert!(
            matches!(&over, Err(wit::HostError::LimitExceeded(message)) if message.contains("bytes of events read")),
            "{over:?}"
        );
    }

    /// Streams read only through `read_streams`, as a store answers it: `order/o-1` at
    /// version 2 and `big/*` streams of 2,500 events with payloads of `payload_bytes`; a
    /// version read on its own fails.
    struct OneRead {
        payload_bytes: usize,
    }

    impl Reads for OneRead {
        fn state_get<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
            Box::pin(async { Ok(None) })
        }

        fn state_scan<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Option<&'a str>,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn stream_version<'a>(
            &'a self,
            _: &'a StreamId,
        ) -> BoxFuture<'a, Result<Version, ReadError>> {
            Box::pin(async { Err(ReadError::new("a version read of its own")) })
        }

        fn read_stream<'a>(
            &'a self,
            stream: &'a StreamId,
            from: Version,
            limit: u32,
        ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
            let big = BigStream {
                events: if stream.aggregate_type == "big" {
                    2500
                } else {
                    0
                },
                payload_bytes: self.payload_bytes,
            };
            Box::pin(async move { big.read_stream(stream, from, limit).await })
        }

        fn read_streams<'a>(
            &'a self,
            reads: &'a [StreamRead],
            max_bytes: usize,
        ) -> BoxFuture<'a, Result<Vec<eventhost_domain::StreamPage>, ReadError>> {
            Box::pin(async move {
                let mut pages = Vec::new();
                let mut held = 0;
                for read in reads {
                    let version = match read.stream.aggregate_type.as_str() {
                        "big" => 2500,
                        _ if read.stream.aggregate_id == "o-1" => 2,
                        _ => 0,
                    };
                    let limit = u32::try_from(read.limit).unwrap();
                    let mut events = self
                        .read_stream(&read.stream, read.from_version, limit)
                        .await?;
                    let within = events
                        .iter()
                        .take_while(|event| {
                            let before = held;
                            held += event.text_bytes();
                            before < max_bytes
                        })
                        .count();
                    events.truncate(within);
                    pages.push(eventhost_domain::StreamPage { version, events });
                }
                Ok(pages)
            })
        }
    }

    fn one_read_batch(payload_bytes: usize) -> BatchState {
        BatchState::new(
            "p.s".to_owned(),
            Arc::new(OneRead { payload_bytes }),
            Limits::default(),
            StoreLimits::default(),
            Grants::default(),
            &[],
        )
    }

    fn stream_read(stream: &StreamId, from_version: u64, limit: u32) -> wit::StreamRead {
        wit::StreamRead {
            stream: stream.into(),
            from_version,
            limit,
        }
    }

    #[tokio::test]
    async fn emits_to_streams_read_together_check_the_versions_read_without_reading_again() {
        let mut batch = one_read_batch(10);
        let order = StreamId::new("order", "o-1");
        let shipment = StreamId::new("shipment", "s-1");
        let pages = batch
            .read_streams(vec![
                stream_read(&order, 1, 0),
                stream_read(&shipment, 1, 0),
            ])
            .await
            .unwrap();
        let versions: Vec<u64> = pages.iter().map(|page| page.version).collect();
        assert_eq!(versions, [2, 0]);
        assert!(pages.iter().all(|page| page.events.is_empty()));
        let emitted = batch
            .emit(shipment.clone(), ExpectedVersion::NoStream, vec![event()])
            .await;
        assert!(matches!(emitted, Ok(1)), "{emitted:?}");
        let emitted = batch
            .emit(order.clone(), ExpectedVersion::Exact(2), vec![event()])
            .await;
        assert!(matches!(emitted, Ok(3)), "{emitted:?}");
        // A read after an emit keeps the batch's own version for the stream.
        batch
            .read_streams(vec![stream_read(&order, 1, 0)])
            .await
            .unwrap();
        let conflict = batch
            .emit(order, ExpectedVersion::Exact(2), vec![event()])
            .await;
        assert!(
            matches!(
                conflict,
                Err(wit::HostError::Conflict(wit::VersionConflict {
                    actual: 3,
                    ..
                }))
            ),
            "{conflict:?}"
        );
        let unread = batch
            .emit(
                StreamId::new("order", "o-9"),
                ExpectedVersion::Any,
                vec![event()],
            )
            .await;
        assert!(
            matches!(&unread, Err(wit::HostError::Unavailable(message)) if message.contains("of its own")),
            "a stream not read still has its version read: {unread:?}"
        );
    }

    #[tokio::test]
    async fn streams_read_together_return_whole_pages_past_their_share_of_the_first_read() {
        let mut batch = one_read_batch(10);
        let (one, two) = (StreamId::new("big", "b-1"), StreamId::new("big", "b-2"));
        let pages = batch
            .read_streams(vec![
                stream_read(&one, 1, 5000),
                stream_read(&two, 2401, 1000),
                stream_read(&one, 7, 3),
            ])
            .await
            .unwrap();
        let shapes: Vec<(usize, u64, u64)> = pages
            .iter()
            .map(|page| {
                let first = page.events.first().map_or(0, |event| event.version);
                let last = page.events.last().map_or(0, |event| event.version);
                (page.events.len(), first, last)
            })
            .collect();
        assert_eq!(shapes, [(1000, 1, 1000), (100, 2401, 2500), (3, 7, 9)]);
        assert!(pages.iter().all(|page| page.version == 2500));
        let too_many = vec![stream_read(&one, 1, 1); 1001];
        let refused = batch.read_streams(too_many).await;
        assert!(
            matches!(&refused, Err(wit::HostError::Invalid(message)) if message.contains("at most 1000")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn streams_cut_short_by_the_first_reads_bytes_are_read_on_to_their_limit() {
        // 100 KB events: the first read holds about 4 MiB, some 42 events in all.
        let mut batch = one_read_batch(100_000);
        batch.limits.read_bytes = 100_000_000;
        let (one, two) = (StreamId::new("big", "b-1"), StreamId::new("big", "b-2"));
        let pages = batch
            .read_streams(vec![stream_read(&one, 1, 100), stream_read(&two, 11, 100)])
            .await
            .unwrap();
        let shapes: Vec<(usize, u64, u64)> = pages
            .iter()
            .map(|page| {
                (
                    page.events.len(),
                    page.events[0].version,
                    page.events[99].version,
                )
            })
            .collect();
        assert_eq!(shapes, [(100, 1, 100), (100, 11, 110)]);
        let versions: Vec<u64> = pages[0].events.iter().map(|event| event.version).collect();
        assert_eq!(
            versions,
            (1..=100).collect::<Vec<_>>(),
            "no gap where the cut was"
        );
    }
}
