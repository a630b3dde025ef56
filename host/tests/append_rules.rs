//! The rules of an append (validation, idempotency, version checks) are one set of rules:
//! the same cases give the same outcome on PostgreSQL (its SQL function), on SQLite and in
//! the plugin test harness's in-memory store, so a plugin that passes its tests does not
//! park events in production.

mod support;

use eventhost_domain::{AppendError, ExpectedVersion, NewEvent, StreamId, Version};
use eventhost_harness::MemoryStore;
use eventhost_store::{EventStore, PgStore, SqliteStore, StoreError};
use serde_json::json;
use uuid::Uuid;

use support::{PgDatabase, SqliteFile};

/// What an append did, as every store can say it: the stream's version after it, or the
/// rule that refused it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Appended { version: Version },
    Duplicate,
    Refused(AppendError),
}

/// One way to append and to read a stream's version.
trait Appender {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Outcome;
    async fn version(&self, stream: &StreamId) -> Version;
}

/// The store's error as the rule it reports.
fn refused(error: StoreError) -> Outcome {
    Outcome::Refused(match error {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => AppendError::Conflict {
            stream,
            expected,
            actual,
        },
        StoreError::PartialDuplicate { found, total } => {
            AppendError::PartialDuplicate { found, total }
        }
        StoreError::PayloadTooLarge { index, size, limit } => {
            AppendError::PayloadTooLarge { index, size, limit }
        }
        StoreError::Invalid(message) => AppendError::Invalid(message),
        other => panic!("not an append rule: {other:?}"),
    })
}

/// PostgreSQL and SQLite.
struct Database<S>(S);

impl<S: EventStore> Appender for Database<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Outcome {
        match self.0.append(stream, expected, events).await {
            Ok(appended) if appended.duplicate => Outcome::Duplicate,
            Ok(appended) => Outcome::Appended {
                version: appended.last_version(),
            },
            Err(error) => refused(error),
        }
    }

    async fn version(&self, stream: &StreamId) -> Version {
        self.0.stream_version(stream).await.unwrap()
    }
}

impl Appender for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Outcome {
        match MemoryStore::append(self, stream, expected, events.to_vec()) {
            // An append carries at least one event: none stored means a duplicate.
            Ok(stored) if stored.is_empty() => Outcome::Duplicate,
            Ok(stored) => Outcome::Appended {
                version: stored.last().map_or(0, |event| event.version),
            },
            Err(error) => Outcome::Refused(error),
        }
    }

    async fn version(&self, stream: &StreamId) -> Version {
        self.events()
            .iter()
            .filter(|event| event.stream() == *stream)
            .count() as Version
    }
}

fn with_id(event_type: &str, id: Uuid) -> NewEvent {
    NewEvent {
        id: Some(id),
        ..NewEvent::new(event_type, json!({ "k": event_type }))
    }
}

/// Every rule, in one scenario; returns what each step did, for comparison across stores.
async fn every_rule(store: &impl Appender) -> Vec<Outcome> {
    let order = StreamId::new("order", "o-1");
    let other = StreamId::new("order", "o-2");
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut outcomes = Vec::new();
    let events = [with_id("a", a), with_id("b", b)];
    outcomes.push(
        store
            .append(&order, ExpectedVersion::NoStream, &events)
            .await,
    );
    // A retry of the same append writes nothing, whatever its expected version.
    outcomes.push(
        store
            .append(&order, ExpectedVersion::NoStream, &events)
            .await,
    );
    // One id stored, one new: refused, or a retry would write half an append.
    let half = [with_id("b", b), with_id("c", c)];
    outcomes.push(store.append(&order, ExpectedVersion::Any, &half).await);
    // A stored id in another stream.
    outcomes.push(
        store
            .append(&other, ExpectedVersion::Any, &[with_id("a", a)])
            .await,
    );
    // An id twice in one append.
    let twice = [with_id("c", c), with_id("c", c)];
    outcomes.push(store.append(&other, ExpectedVersion::Any, &twice).await);
    // Version checks.
    let fresh = [NewEvent::new("d", json!(1))];
    outcomes.push(
        store
            .append(&order, ExpectedVersion::NoStream, &fresh)
            .await,
    );
    outcomes.push(
        store
            .append(&order, ExpectedVersion::Exact(5), &fresh)
            .await,
    );
    outcomes.push(
        store
            .append(&order, ExpectedVersion::Exact(2), &fresh)
            .await,
    );
    // Invalid input.
    outcomes.push(store.append(&other, ExpectedVersion::Any, &[]).await);
    let nameless = [NewEvent::new("", json!(1))];
    outcomes.push(store.append(&other, ExpectedVersion::Any, &nameless).await);
    let huge = [
        NewEvent::new("ok", json!(1)),
        NewEvent::new("big", json!("x".repeat(1024 * 1024))),
    ];
    outcomes.push(store.append(&other, ExpectedVersion::Any, &huge).await);
    assert_eq!(store.version(&order).await, 3);
    assert_eq!(
        store.version(&other).await,
        0,
        "nothing refused was written"
    );
    outcomes
}

/// The outcomes with what may differ between stores (messages of invalid input) blanked.
fn comparable(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Refused(AppendError::Invalid(_)) => {
                Outcome::Refused(AppendError::Invalid(String::new()))
            }
            other => other,
        })
        .collect()
}

fn expected() -> Vec<Outcome> {
    let order = StreamId::new("order", "o-1");
    let conflict = |expected, actual| {
        Outcome::Refused(AppendError::Conflict {
            stream: order.clone(),
            expected,
            actual,
        })
    };
    let invalid = Outcome::Refused(AppendError::Invalid(String::new()));
    vec![
        Outcome::Appended { version: 2 },
        Outcome::Duplicate,
        Outcome::Refused(AppendError::PartialDuplicate { found: 1, total: 2 }),
        Outcome::Refused(AppendError::PartialDuplicate { found: 1, total: 1 }),
        invalid.clone(),
        conflict(ExpectedVersion::NoStream, 2),
        conflict(ExpectedVersion::Exact(5), 2),
        Outcome::Appended { version: 3 },
        invalid.clone(),
        invalid,
        Outcome::Refused(AppendError::PayloadTooLarge {
            index: 1,
            size: 1024 * 1024 + 2,
            limit: 1024 * 1024,
        }),
    ]
}

#[tokio::test]
async fn postgres_applies_the_append_rules() {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url, Default::default()).await.unwrap();
    assert_eq!(comparable(every_rule(&Database(store)).await), expected());
}

#[tokio::test]
async fn sqlite_applies_the_append_rules() {
    let file = SqliteFile::create();
    let store = SqliteStore::connect(&file.url, Default::default())
        .await
        .unwrap();
    assert_eq!(comparable(every_rule(&Database(store)).await), expected());
}

#[tokio::test]
async fn the_harness_store_applies_the_append_rules() {
    assert_eq!(
        comparable(every_rule(&MemoryStore::new()).await),
        expected()
    );
}

#[tokio::test]
async fn postgres_sql_function_refuses_what_the_rules_refuse() {
    let db = PgDatabase::create().await;
    PgStore::connect(&db.url, Default::default()).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let id = Uuid::now_v7();
    let long = "x".repeat(1025);
    let cases = [
        (
            "an id twice in one append",
            "o-1".to_owned(),
            json!([
                { "id": id, "event_type": "a", "payload": {} },
                { "id": id, "event_type": "a", "payload": {} }
            ]),
        ),
        (
            "a metadata value that is not a string",
            "o-1".to_owned(),
            json!([{ "event_type": "a", "payload": {}, "metadata": { "k": 1 } }]),
        ),
        (
            "an aggregate id over 1024 bytes",
            long.clone(),
            json!([{ "event_type": "a", "payload": {} }]),
        ),
        (
            "an event type over 1024 bytes",
            "o-1".to_owned(),
            json!([{ "event_type": long, "payload": {} }]),
        ),
    ];
    for (case, aggregate_id, events) in cases {
        let error = sqlx::query("SELECT * FROM eventhost.append('order', $1, NULL, $2)")
            .bind(&aggregate_id)
            .bind(&events)
            .execute(&pool)
            .await
            .expect_err(case);
        let code = error
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("22023"), "{case}: {error}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM eventhost.events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}
