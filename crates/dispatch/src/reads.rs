//! The runtime's [`Reads`] over the daemon's store: committed state and streams.

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::{Event, StreamId, StreamPage, StreamRead, Version};
use eventhost_runtime::{ReadError, Reads};
use eventhost_store::{EventStore, Store, StoreError, SubscriptionStore};

/// A plugin's reads, served from the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreReads(pub Store);

/// The error with its causes, each said once (a store error's message already holds its
/// driver's cause).
fn unavailable(error: StoreError) -> ReadError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    ReadError::new(message)
}

impl Reads for StoreReads {
    fn state_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ReadError>> {
        async move { self.0.state_get(namespace, key).await.map_err(unavailable) }.boxed()
    }

    fn state_get_many<'a>(
        &'a self,
        namespace: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, ReadError>> {
        async move {
            self.0
                .state_get_many(namespace, keys)
                .await
                .map_err(unavailable)
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
            self.0
                .state_scan(namespace, prefix, after, limit as usize)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn stream_version<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Version, ReadError>> {
        async move { self.0.stream_version(stream).await.map_err(unavailable) }.boxed()
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: Version,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Event>, ReadError>> {
        async move {
            self.0
                .read_stream(stream, from_version, limit as usize)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn read_streams<'a>(
        &'a self,
        reads: &'a [StreamRead],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamPage>, ReadError>> {
        async move {
            self.0
                .read_streams(reads, max_bytes)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }
}
