//! SQLite specifics: several processes opening a new database file at once (the daemon and
//! a CLI command, as `scripts/demo.sh` does) all get a migrated store.

mod support;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{EventStore, SqliteStore, StoreLimits};
use serde_json::json;

use support::SqliteFile;

/// Concurrent first connections per round, each with a pool of its own (as separate
/// processes have).
const OPENERS: usize = 6;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opening_a_new_file_at_once_all_migrate_it() {
    for round in 0..ROUNDS {
        let file = SqliteFile::create();
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                let url = file.url.clone();
                tokio::spawn(
                    async move { SqliteStore::connect(&url, StoreLimits::default()).await },
                )
            })
            .collect();
        let mut stores = Vec::new();
        for opener in openers {
            let store = opener
                .await
                .expect("the opener panicked")
                .unwrap_or_else(|error| {
                    panic!("round {round}: opening a new file failed: {error}")
                });
            stores.push(store);
        }
        for (index, store) in stores.iter().enumerate() {
            let stream = StreamId::new("item", format!("i-{index}"));
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    &[NewEvent::new("item.added", json!({}))],
                )
                .await
                .expect("every store can append");
        }
    }
}
