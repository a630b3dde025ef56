//! A subscription's committed state, kept between its batches so that a plugin's reads need
//! no round trip to the store.
//!
//! One cache per worker, so one writer: the worker applies each batch's state changes once
//! they have committed, and learns the values its plugin reads. It starts by loading the
//! whole namespace when that fits its byte bound: the cache is then *complete*, a key it does
//! not hold is known to be absent, and a projection catching up touches the store for state
//! only to commit. A namespace too large to hold is cached *partially* (what was read or
//! written lately, up to the bound; once full it starts over).
//!
//! It can never be acted on stale: anything else that changes the subscription (an
//! operator's reset or skip, another daemon's commit) raises its revision, which the next
//! commit checks; that commit fails, and the worker drops the cache with everything else it
//! knew and starts again from what is stored.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::{Event, StreamId, StreamPage, StreamRead, Version};
use eventhost_runtime::{ReadError, Reads};

/// What one entry is counted as beyond its key and value: the map's node and the strings'
/// headers.
const ENTRY_OVERHEAD: usize = 64;

/// Entries per page when loading a namespace.
const LOAD_PAGE: u32 = 1000;

#[derive(Debug)]
pub(crate) struct StateCache {
    /// Committed values the cache knows; `None`: known to be absent.
    entries: BTreeMap<String, Option<String>>,
    /// Every committed key is among `entries`: a key missing from it is absent.
    complete: bool,
    /// Whether a load of the whole namespace was tried since the last clear.
    load_tried: bool,
    bytes: usize,
    max_bytes: usize,
}

/// What the cache knows of a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Known(Option<String>),
    Unknown,
}

fn weight(key: &str, value: Option<&str>) -> usize {
    key.len() + value.map_or(0, str::len) + ENTRY_OVERHEAD
}

impl StateCache {
    /// A cache of at most `max_bytes` (0: nothing is cached).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            complete: false,
            load_tried: false,
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Lookup {
        match self.entries.get(key) {
            Some(value) => Lookup::Known(value.clone()),
            None if self.complete => Lookup::Known(None),
            None => Lookup::Unknown,
        }
    }

    /// Entries of a complete cache whose key starts with `prefix`, in key order, after
    /// `after`, at most `limit`; `None` when the cache is not complete.
    pub(crate) fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Option<Vec<(String, String)>> {
        if !self.complete {
            return None;
        }
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Some(
            self.entries
                .range((start, Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .filter_map(|(key, value)| Some((key.clone(), value.clone()?)))
                .take(limit)
                .collect(),
        )
    }

    /// Records a committed value read from the store.
    pub(crate) fn learn(&mut self, key: &str, value: Option<&str>) {
        if !self.complete {
            self.put(key, value.map(str::to_owned));
        }
    }

    /// Applies a committed batch's state changes.
    pub(crate) fn apply(&mut self, changes: &[(String, Option<String>)]) {
        for (key, value) in changes {
            if value.is_none() && self.complete {
                if let Some(old) = self.entries.remove(key) {
                    self.bytes -= weight(key, old.as_deref());
                }
                continue;
            }
            self.put(key, value.clone());
        }
    }

    /// Forgets everything: the subscription changed in a way this cache did not see.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.complete = false;
        self.load_tried = false;
        self.bytes = 0;
    }

    fn put(&mut self, key: &str, value: Option<String>) {
        let added = weight(key, value.as_deref());
        if let Some(old) = self.entries.insert(key.to_owned(), value) {
            self.bytes -= weight(key, old.as_deref());
        }
        self.bytes += added;
        if self.bytes > self.max_bytes {
            // Full: what it holds no longer says what is absent; start over.
            self.clear();
            self.load_tried = true;
        }
    }

    /// Whether the worker should try loading the whole namespace before its next batch.
    pub(crate) fn wants_load(&self) -> bool {
        !self.load_tried && self.max_bytes > 0
    }

    /// Loads the namespace page by page through `reads`; complete if it fits. A read error
    /// leaves the cache empty, to be filled by the plugin's reads.
    pub(crate) async fn load(cache: &Mutex<Self>, reads: &dyn Reads, namespace: &str) {
        lock(cache).load_tried = true;
        let mut loaded = BTreeMap::new();
        let mut bytes = 0;
        let mut after: Option<String> = None;
        let max_bytes = lock(cache).max_bytes;
        loop {
            let Ok(page) = reads
                .state_scan(namespace, "", after.as_deref(), LOAD_PAGE)
                .await
            else {
                return;
            };
            let last_page = page.len() < LOAD_PAGE as usize;
            for (key, value) in page {
                bytes += weight(&key, Some(&value));
                if bytes > max_bytes {
                    return;
                }
                after = Some(key.clone());
                loaded.insert(key, Some(value));
            }
            if last_page {
                break;
            }
        }
        let mut cache = lock(cache);
        cache.entries = loaded;
        cache.bytes = bytes;
        cache.complete = true;
    }
}

/// The cache's lock; a panic while it was held left nothing half-done worth refusing.
pub(crate) fn lock(cache: &Mutex<StateCache>) -> MutexGuard<'_, StateCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A plugin's reads with its subscription's state served from the cache where it can be.
pub(crate) struct CachedReads {
    pub(crate) inner: Arc<dyn Reads>,
    /// The subscription whose state the cache holds.
    pub(crate) namespace: String,
    pub(crate) cache: Arc<Mutex<StateCache>>,
}

impl Reads for CachedReads {
    fn state_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
        async move {
            if namespace == self.namespace
                && let Lookup::Known(value) = lock(&self.cache).get(key)
            {
                return Ok(value);
            }
            let value = self.inner.state_get(namespace, key).await?;
            if namespace == self.namespace {
                lock(&self.cache).learn(key, value.as_deref());
            }
            Ok(value)
        }
        .boxed()
    }

    fn state_known(&self, namespace: &str, key: &str) -> Option<Option<String>> {
        if namespace != self.namespace {
            return None;
        }
        match lock(&self.cache).get(key) {
            Lookup::Known(value) => Some(value),
            Lookup::Unknown => None,
        }
    }

    fn state_get_many<'a>(
        &'a self,
        namespace: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, ReadError>> {
        async move {
            if namespace != self.namespace {
                return self.inner.state_get_many(namespace, keys).await;
            }
            let mut values = Vec::with_capacity(keys.len());
            let mut missing = Vec::new();
            {
                let cache = lock(&self.cache);
                for (index, key) in keys.iter().enumerate() {
                    match cache.get(key) {
                        Lookup::Known(value) => values.push(value),
                        Lookup::Unknown => {
                            missing.push(index);
                            values.push(None);
                        }
                    }
                }
            }
            if missing.is_empty() {
                return Ok(values);
            }
            let wanted: Vec<String> = missing.iter().map(|&index| keys[index].clone()).collect();
            let found = self.inner.state_get_many(namespace, &wanted).await?;
            let mut cache = lock(&self.cache);
            for ((index, key), value) in missing.into_iter().zip(&wanted).zip(found) {
                cache.learn(key, value.as_deref());
                values[index] = value;
            }
            Ok(values)
        }
        .boxed()
    }

    fn state_scan<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>> {
        async move {
            if namespace == self.namespace
                && let Some(entries) = lock(&self.cache).scan(prefix, after, limit as usize)
            {
                return Ok(entries);
            }
            self.inner.state_scan(namespace, prefix, after, limit).await
        }
        .boxed()
    }

    fn stream_version<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Version, ReadError>> {
        self.inner.stream_version(stream)
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: Version,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
        self.inner.read_stream(stream, from_version, limit)
    }

    fn read_streams<'a>(
        &'a self,
        reads: &'a [StreamRead],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamPage>, ReadError>> {
        self.inner.read_streams(reads, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(key, value)| (key.to_string(), value.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn a_partial_cache_answers_only_for_what_it_learned_or_saw_committed() {
        let mut cache = StateCache::new(1 << 20);
        assert_eq!(cache.get("a"), Lookup::Unknown);
        cache.learn("a", Some("1"));
        cache.learn("b", None);
        assert_eq!(cache.get("a"), Lookup::Known(Some("1".into())));
        assert_eq!(cache.get("b"), Lookup::Known(None));
        cache.apply(&changes(&[("a", None), ("c", Some("3"))]));
        assert_eq!(cache.get("a"), Lookup::Known(None));
        assert_eq!(cache.get("c"), Lookup::Known(Some("3".into())));
        assert_eq!(
            cache.scan("", None, 10),
            None,
            "only a complete cache scans"
        );
        cache.clear();
        assert_eq!(cache.get("c"), Lookup::Unknown);
    }

    #[test]
    fn a_complete_cache_knows_absence_and_scans_in_key_order() {
        let cache = Mutex::new(StateCache::new(1 << 20));
        lock(&cache).complete = true;
        let mut cache = cache.into_inner().unwrap();
        cache.apply(&changes(&[
            ("a/2", Some("x")),
            ("a/1", Some("y")),
            ("b", Some("z")),
        ]));
        assert_eq!(cache.get("nope"), Lookup::Known(None));
        let keys = |entries: Option<Vec<(String, String)>>| {
            entries
                .unwrap()
                .into_iter()
                .map(|(key, _)| key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(cache.scan("a/", None, 10)), ["a/1", "a/2"]);
        assert_eq!(keys(cache.scan("a/", Some("a/1"), 10)), ["a/2"]);
        assert_eq!(keys(cache.scan("", None, 2)), ["a/1", "a/2"]);
        cache.apply(&changes(&[("a/1", None)]));
        assert_eq!(keys(cache.scan("a/", None, 10)), ["a/2"]);
        assert_eq!(
            cache.bytes,
            weight("a/2", Some("x")) + weight("b", Some("z"))
        );
    }

    #[test]
    fn a_cache_that_outgrows_its_bound_starts_over_and_claims_nothing() {
        let mut cache = StateCache::new(3 * weight("k0", Some("v")));
        cache.complete = true;
        for n in 0..3 {
            cache.apply(&changes(&[(&format!("k{n}"), Some("v"))]));
        }
        assert_eq!(cache.get("k0"), Lookup::Known(Some("v".into())));
        cache.apply(&changes(&[("k3", Some("v"))]));
        assert_eq!(cache.get("k0"), Lookup::Unknown, "no longer complete");
        assert_eq!(cache.get("missing"), Lookup::Unknown);
        assert!(
            !cache.wants_load(),
            "a namespace this large is not loaded again"
        );
        assert!(cache.bytes <= cache.max_bytes);
    }
}
