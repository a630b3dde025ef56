//! What a plugin may read while it handles a batch: committed state and committed streams.
//!
//! The runtime depends on this trait, not on a store: the daemon's store implements it over
//! its database, the harness over memory. It is object-safe (boxed futures) so a plugin call
//! holds an `Arc<dyn Reads>`. Every call is bounded by the plugin's host-call timeout, so an
//! implementation may simply await its database.

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::{Event, StreamId, StreamPage, StreamRead, Version};

/// Why a read failed. The guest sees it as `host-error::unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

impl ReadError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Committed data, as a batch's host calls see it before the batch's own effects.
pub trait Reads: Send + Sync {
    /// The committed value of `key` in a subscription's state `namespace`.
    fn state_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ReadError>>;

    /// The committed values of `keys` in `namespace`, one per key in order. By default one
    /// `state_get` per key; a store answers them in one read.
    fn state_get_many<'a>(
        &'a self,
        namespace: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, ReadError>> {
        async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.state_get(namespace, key).await?);
            }
            Ok(values)
        }
        .boxed()
    }

    /// The committed value of `key` when it is known without waiting (a cache): `None`
    /// when it is not, `Some(None)` when the key is known to be absent. Lets a read that
    /// needs no I/O skip the trip to the daemon's runtime.
    fn state_known(&self, namespace: &str, key: &str) -> Option<Option<String>> {
        let _ = (namespace, key);
        None
    }

    /// Committed entries of `namespace` whose key starts with `prefix`, in key order, strictly
    /// after `after` when given, at most `limit` of them.
    fn state_scan<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ReadError>>;

    /// The committed version of `stream` (0 when it does not exist).
    fn stream_version<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Version, ReadError>>;

    /// Committed events of `stream` in version order, from `from_version` (inclusive), at most
    /// `limit` of them.
    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: Version,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>>;

    /// Several streams' versions and pages, one per read in order, as of one moment where
    /// the implementation can. Events stop, over all the pages, once they hold `max_bytes` of
    /// text: a page may end before its limit though its stream goes on (its version tells).
    /// By default a `stream_version` and a `read_stream` per read; a store answers them in
    /// one read.
    fn read_streams<'a>(
        &'a self,
        reads: &'a [StreamRead],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamPage>, ReadError>> {
        async move {
            let mut pages = Vec::with_capacity(reads.len());
            let mut held = 0usize;
            for read in reads {
                let mut page = StreamPage {
                    version: self.stream_version(&read.stream).await?,
                    events: Vec::new(),
                };
                let limit = u32::try_from(read.limit).unwrap_or(u32::MAX);
                if held < max_bytes && limit > 0 {
                    let events = self
                        .read_stream(&read.stream, read.from_version, limit)
                        .await?;
                    for event in events {
                        if held >= max_bytes {
                            break;
                        }
                        held = held.saturating_add(event.text_bytes());
                        page.events.push(event);
                    }
                }
                pages.push(page);
            }
            Ok(pages)
        }
        .boxed()
    }
}
