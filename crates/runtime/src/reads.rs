//! What a plugin may read while it handles a batch: committed state and committed streams.
//!
//! The runtime depends on this trait, not on a store: the daemon's store implements it over
//! its database, the harness over memory. It is object-safe (boxed futures) so a plugin call
//! holds an `Arc<dyn Reads>`. Every call is bounded by the plugin's host-call timeout, so an
//! implementation may simply await its database.

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::{Event, StreamId, Version};

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
}
