//! PostgreSQL-only guarantees: the outbox way in (`eventhost.append()` called inside an
//! application's own transaction), the wake-up it sends on commit, the errors it raises, and
//! the gap-free subscription order when transaction ids disagree with commit order or a
//! transaction stays open for long. Each test gets a database of its own (tests/support).
//!
//! Reads that must return something poll with a deadline: `read_batch` waits for every older
//! transaction in the whole cluster, and other tests may hold one open for a moment.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId, Version};
use eventhost_store::{
    BatchCommit, BatchEntry, Checkpoint, EventStore, Filter, Member, PgStore, Plugins, StoreError,
    StoreLimits, SubscriptionDefinition, SubscriptionStore,
};
use serde_json::{Value, json};
use sqlx::postgres::{PgDatabaseError, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::time::{Instant, sleep, timeout};
use uuid::Uuid;

use support::PgDatabase;

/// How long a read that must return something may take before the test fails.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// How long we watch for something that must not happen.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// A database with the store's schema, the store, and a pool playing the application.
struct Fixture {
    store: PgStore,
    app: PgPool,
    db: PgDatabase,
}

async fn fixture() -> Fixture {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url, StoreLimits::default())
        .await
        .expect("connect the store");
    let app = PgPoolOptions::new()
        .max_connections(8)
        .connect(&db.url)
        .await
        .expect("connect the application's pool");
    sqlx::query("CREATE TABLE app_orders (id text PRIMARY KEY, total bigint NOT NULL)")
        .execute(&app)
        .await
        .expect("create the application's own table");
    Fixture { store, app, db }
}

fn order(id: &str) -> StreamId {
    StreamId::new("order", id)
}

/// The JSON `eventhost.append()` takes for one event.
fn event_json(id: Uuid, event_type: &str, payload: Value) -> Value {
    json!({ "id": id, "event_type": event_type, "payload": payload })
}

/// One row of what `eventhost.append()` returns.
#[derive(Debug)]
struct SqlAppended {
    position: i64,
    version: i64,
    id: Uuid,
    duplicate: bool,
}

/// Calls `eventhost.append()` on an `order` stream the way an application would.
async fn sql_append(
    conn: &mut PgConnection,
    aggregate_id: &str,
    expected_version: Option<i64>,
    events: Value,
) -> Result<Vec<SqlAppended>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_position, event_version, event_id, duplicate
         FROM eventhost.append('order', $1, $2, $3)",
    )
    .bind(aggregate_id)
    .bind(expected_version)
    .bind(events)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SqlAppended {
                position: row.try_get("event_position")?,
                version: row.try_get("event_version")?,
                id: row.try_get("event_id")?,
                duplicate: row.try_get("duplicate")?,
            })
        })
        .collect()
}

/// Appends one fresh event with `eventhost.append()` and returns its id.
async fn sql_append_one(
    conn: &mut PgConnection,
    aggregate_id: &str,
    expected_version: Option<i64>,
) -> Uuid {
    let id = Uuid::new_v4();
    let appended = sql_append(
        conn,
        aggregate_id,
        expected_version,
        json!([event_json(
            id,
            "order.changed",
            json!({ "stream": aggregate_id })
        )]),
    )
    .await
    .unwrap_or_else(|error| panic!("append to {aggregate_id}: {error}"));
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].id, id);
    id
}

/// Appends one fresh event through the Rust store and returns its id.
async fn store_append_one(store: &PgStore, aggregate_id: &str) -> Uuid {
    let appended = store
        .append(
            &order(aggregate_id),
            ExpectedVersion::Any,
            &[NewEvent::new(
                "order.changed",
                json!({ "stream": aggregate_id }),
            )],
        )
        .await
        .expect("append through the store");
    appended.events[0].id
}

/// Takes the transaction's id now (PostgreSQL assigns one lazily, on the first write).
async fn take_xid(conn: &mut PgConnection) -> u64 {
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *conn)
        .await
        .expect("take a transaction id");
    xid.parse().expect("a transaction id is a number")
}

/// The SQLSTATE, message and detail of a database error.
fn pg_error(error: &sqlx::Error) -> (String, String, String) {
    let pg = error
        .as_database_error()
        .and_then(|error| error.try_downcast_ref::<PgDatabaseError>())
        .unwrap_or_else(|| panic!("expected a PostgreSQL error, got {error:?}"));
    (
        pg.code().to_owned(),
        pg.message().to_owned(),
        pg.detail().unwrap_or_default().to_owned(),
    )
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// A subscriber following `read_batch` as the dispatcher does, in small pages, checking on
/// every event that checkpoints only grow, that no event comes twice and that each stream's
/// versions come one after the other.
struct Follower<'a> {
    store: &'a PgStore,
    checkpoint: Checkpoint,
    from_origin: bool,
    seen: HashSet<Uuid>,
    last_version: HashMap<StreamId, Version>,
    read: Vec<BatchEntry>,
}

impl<'a> Follower<'a> {
    const PAGE: usize = 2;

    fn from_origin(store: &'a PgStore) -> Self {
        Self::after(store, Checkpoint::ORIGIN)
    }

    fn after(store: &'a PgStore, checkpoint: Checkpoint) -> Self {
        Self {
            store,
            checkpoint,
            from_origin: checkpoint == Checkpoint::ORIGIN,
            seen: HashSet::new(),
            last_version: HashMap::new(),
            read: Vec::new(),
        }
    }

    /// Reads every page available now; returns how many events were new.
    async fn poll(&mut self) -> usize {
        let before = self.read.len();
        loop {
            let batch = self
                .store
                .read_batch(self.checkpoint, &Filter::default(), Self::PAGE)
                .await
                .expect("read_batch");
            assert!(batch.len() <= Self::PAGE);
            if batch.is_empty() {
                return self.read.len() - before;
            }
            for entry in batch {
                self.accept(entry);
            }
        }
    }

    fn accept(&mut self, entry: BatchEntry) {
        let event = &entry.event;
        assert!(entry.checkpoint > self.checkpoint, "checkpoints only grow");
        assert!(
            self.seen.insert(event.id),
            "event {} delivered twice",
            event.id
        );
        match self.last_version.insert(event.stream(), event.version) {
            Some(last) => assert_eq!(event.version, last + 1, "{} out of order", event.stream()),
            None if self.from_origin => {
                assert_eq!(event.version, 1, "{} did not start at 1", event.stream())
            }
            None => {}
        }
        self.checkpoint = entry.checkpoint;
        self.read.push(entry);
    }

    /// Polls until `total` events have been read in all.
    async fn wait_for(&mut self, total: usize) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        while self.read.len() < total {
            if Instant::now() >= deadline {
                panic!(
                    "only {} of {total} events delivered after {DELIVERY_DEADLINE:?}; {}",
                    self.read.len(),
                    support::oldest_open_transaction(self.store.pool()).await
                );
            }
            if self.poll().await == 0 {
                sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(
            self.read.len(),
            total,
            "more events than expected: {:?}",
            self.read
        );
    }

    /// Polls for `period`, failing if anything new arrives.
    async fn expect_nothing_new_for(&mut self, period: Duration) {
        let end = Instant::now() + period;
        while Instant::now() < end {
            let new = self.poll().await;
            assert_eq!(
                new,
                0,
                "unexpected events: {:?}",
                &self.read[self.read.len() - new..]
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn ids(&self) -> Vec<Uuid> {
        self.read.iter().map(|entry| entry.event.id).collect()
    }
}

async fn listen(url: &str) -> PgListener {
    let mut listener = PgListener::connect(url).await.expect("connect a listener");
    listener
        .listen("eventhost")
        .await
        .expect("LISTEN eventhost");
    listener
}

async fn expect_notification(listener: &mut PgListener) {
    let notification = timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("no notification within 5 s")
        .expect("receive a notification");
    assert_eq!(notification.channel(), "eventhost");
}

async fn expect_no_notification(listener: &mut PgListener, period: Duration) {
    if let Ok(notification) = timeout(period, listener.recv()).await {
        panic!("unexpected notification: {notification:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The outbox way in: eventhost.append() inside an application transaction.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rolled_back_application_transaction_leaves_no_event_and_no_stream_version() {
    let f = fixture().await;
    let mut tx = f.app.begin().await.unwrap();
    sqlx::query("INSERT INTO app_orders VALUES ('o-1', 42)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sql_append_one(&mut tx, "o-1", Some(0)).await;
    sql_append_one(&mut tx, "o-1", Some(1)).await;
    sql_append_one(&mut tx, "o-2", None).await;
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM eventhost.events")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(inside, 3, "the transaction sees its own appends");
    tx.rollback().await.unwrap();

    assert_eq!(f.store.stream_version(&order("o-1")).await.unwrap(), 0);
    assert_eq!(f.store.stream_version(&order("o-2")).await.unwrap(), 0);
    assert!(
        f.store
            .read_stream(&order("o-1"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        count(&f.app, "SELECT count(*) FROM eventhost.events").await,
        0
    );
    assert_eq!(
        count(&f.app, "SELECT count(*) FROM eventhost.streams").await,
        0
    );
    assert_eq!(count(&f.app, "SELECT count(*) FROM app_orders").await, 0);

    // The stream starts afresh, and a subscriber sees only what committed.
    let committed = store_append_one(&f.store, "o-1").await;
    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(1).await;
    assert_eq!(follower.ids(), [committed]);
    assert_eq!(follower.read[0].event.version, 1);
}

#[tokio::test]
async fn an_append_rolled_back_to_a_savepoint_leaves_no_event_while_the_transaction_commits() {
    let f = fixture().await;
    let mut tx = f.app.begin().await.unwrap();
    sqlx::query("SAVEPOINT before_append")
        .execute(&mut *tx)
        .await
        .unwrap();
    let undone = sql_append_one(&mut tx, "o-1", Some(0)).await;
    sqlx::query("ROLLBACK TO SAVEPOINT before_append")
        .execute(&mut *tx)
        .await
        .unwrap();
    let kept = sql_append_one(&mut tx, "o-1", Some(0)).await;
    tx.commit().await.unwrap();

    let stored = f.store.read_stream(&order("o-1"), 1, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| (e.id, e.version)).collect::<Vec<_>>(),
        [(kept, 1)]
    );
    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(1).await;
    assert!(!follower.seen.contains(&undone));
}

#[tokio::test]
async fn a_committed_application_transaction_makes_its_events_readable_through_the_store() {
    let f = fixture().await;
    let ids = [Uuid::new_v4(), Uuid::new_v4()];
    let events = json!([
        { "id": ids[0], "event_type": "order.placed", "payload": { "total": 42 },
          "metadata": { "correlation-id": "c-1" } },
        { "id": ids[1], "event_type": "order.paid", "payload": { "amount": 42 } },
    ]);
    let mut tx = f.app.begin().await.unwrap();
    sqlx::query("INSERT INTO app_orders VALUES ('o-1', 42)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let appended = sql_append(&mut tx, "o-1", Some(0), events).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(appended.iter().map(|a| a.id).collect::<Vec<_>>(), ids);
    assert!(appended.iter().all(|a| !a.duplicate));
    assert!(appended[0].position < appended[1].position);

    let stored = f.store.read_stream(&order("o-1"), 1, 10).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(stored[0].event_type, "order.placed");
    assert_eq!(stored[0].payload, json!({ "total": 42 }));
    assert_eq!(stored[0].metadata["correlation-id"], "c-1");
    assert!(stored[1].metadata.is_empty());
    assert_eq!(f.store.stream_version(&order("o-1")).await.unwrap(), 2);

    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(2).await;
    assert_eq!(follower.ids(), ids);
    let positions: Vec<_> = follower.read.iter().map(|e| e.event.position).collect();
    let returned: Vec<_> = appended.iter().map(|a| a.position as u64).collect();
    assert_eq!(positions, returned);
    follower.expect_nothing_new_for(QUIET_PERIOD).await;
}

// ---------------------------------------------------------------------------------------
// Wake-up: NOTIFY on channel 'eventhost', once per committed transaction.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn one_committed_transaction_wakes_listeners_once_however_many_appends_it_makes() {
    let f = fixture().await;
    let mut listener = listen(&f.db.url).await;
    let mut tx = f.app.begin().await.unwrap();
    sql_append_one(&mut tx, "o-1", Some(0)).await;
    sql_append_one(&mut tx, "o-1", Some(1)).await;
    sql_append_one(&mut tx, "o-2", None).await;
    expect_no_notification(&mut listener, Duration::from_millis(100)).await;
    tx.commit().await.unwrap();

    expect_notification(&mut listener).await;
    expect_no_notification(&mut listener, QUIET_PERIOD).await;
}

#[tokio::test]
async fn a_rolled_back_transaction_wakes_nobody() {
    let f = fixture().await;
    let mut listener = listen(&f.db.url).await;
    let mut tx = f.app.begin().await.unwrap();
    sql_append_one(&mut tx, "o-1", Some(0)).await;
    sql_append_one(&mut tx, "o-2", Some(0)).await;
    tx.rollback().await.unwrap();
    expect_no_notification(&mut listener, QUIET_PERIOD).await;

    // The listener works: a committed append does wake it.
    let mut conn = f.app.acquire().await.unwrap();
    sql_append_one(&mut conn, "o-1", Some(0)).await;
    expect_notification(&mut listener).await;
}

#[tokio::test]
async fn an_append_through_the_store_wakes_listeners_once() {
    let f = fixture().await;
    let mut listener = listen(&f.db.url).await;
    let events = [
        NewEvent::new("order.placed", json!({})),
        NewEvent::new("order.paid", json!({})),
    ];
    f.store
        .append(&order("o-1"), ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    expect_notification(&mut listener).await;
    expect_no_notification(&mut listener, QUIET_PERIOD).await;
}

#[tokio::test]
async fn a_store_closed_right_after_an_append_has_sent_its_notification() {
    let f = fixture().await;
    let mut listener = listen(&f.db.url).await;
    f.store
        .append(
            &order("o-1"),
            ExpectedVersion::NoStream,
            &[NewEvent::new("order.placed", json!({}))],
        )
        .await
        .unwrap();
    // What a process that exits after appending does: close() returns once it is sent.
    f.store.close().await;
    let sent = timeout(Duration::from_millis(50), listener.recv())
        .await
        .expect("the notification was sent before close() returned")
        .expect("receive a notification");
    assert_eq!(sent.channel(), "eventhost");
}

#[tokio::test]
async fn concurrent_appends_share_their_notifications_and_the_last_is_heard() {
    const APPENDS: usize = 200;
    let f = fixture().await;
    let mut listener = listen(&f.db.url).await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            for n in (task..APPENDS).step_by(8) {
                let event = NewEvent::new("order.placed", json!({}));
                store
                    .append(
                        &order(&format!("o-{n}")),
                        ExpectedVersion::NoStream,
                        &[event],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    f.store.close().await;
    let mut heard = 0;
    while let Ok(received) = timeout(QUIET_PERIOD, listener.recv()).await {
        received.expect("receive a notification");
        heard += 1;
    }
    assert!(
        (1..=APPENDS).contains(&heard),
        "{heard} notifications for {APPENDS} appends"
    );
}

// ---------------------------------------------------------------------------------------
// Errors from the SQL function.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_version_conflict_in_sql_raises_eh409_naming_both_versions_and_writes_nothing() {
    let f = fixture().await;
    let mut conn = f.app.acquire().await.unwrap();
    sql_append_one(&mut conn, "o-1", Some(0)).await;
    sql_append_one(&mut conn, "o-1", Some(1)).await;
    drop(conn);

    let cases = [
        ("o-1", 5, "expected=5 actual=2"),
        ("o-1", 0, "expected=0 actual=2"),
        ("o-new", 1, "expected=1 actual=0"),
    ];
    for (stream, expected, detail) in cases {
        let mut tx = f.app.begin().await.unwrap();
        // An earlier append in the same transaction must vanish with it.
        sql_append_one(&mut tx, "o-bystander", None).await;
        let error = sql_append(
            &mut tx,
            stream,
            Some(expected),
            json!([event_json(Uuid::new_v4(), "x", json!({}))]),
        )
        .await
        .expect_err("a wrong expected version must fail");
        let (code, message, actual_detail) = pg_error(&error);
        assert_eq!(code, "EH409", "{message}");
        assert_eq!(actual_detail, detail);
        assert!(message.contains(&format!("order/{stream}")), "{message}");
        tx.rollback().await.unwrap();
    }

    assert_eq!(f.store.stream_version(&order("o-1")).await.unwrap(), 2);
    assert_eq!(f.store.stream_version(&order("o-new")).await.unwrap(), 0);
    assert_eq!(
        f.store.stream_version(&order("o-bystander")).await.unwrap(),
        0
    );
    assert_eq!(
        count(&f.app, "SELECT count(*) FROM eventhost.events").await,
        2
    );
}

/// An append `eventhost.append()` must refuse, and the error it must raise.
struct Refused {
    what: &'static str,
    aggregate_id: &'static str,
    expected_version: Option<i64>,
    events: Value,
    sqlstate: &'static str,
    message: &'static str,
}

fn refused(
    what: &'static str,
    events: Value,
    sqlstate: &'static str,
    message: &'static str,
) -> Refused {
    Refused {
        what,
        aggregate_id: "o-1",
        expected_version: None,
        events,
        sqlstate,
        message,
    }
}

#[tokio::test]
async fn the_sql_function_rejects_bad_input_with_a_clear_error_and_writes_nothing() {
    let f = fixture().await;
    let good = || event_json(Uuid::new_v4(), "order.placed", json!({ "total": 1 }));
    let too_big = json!({ "event_type": "big", "payload": "x".repeat(100) });
    let no_payload = json!([{ "event_type": "a" }]);
    let bad_metadata = json!([{ "event_type": "a", "payload": 1, "metadata": [1] }]);
    let cases = [
        refused("not an array", good(), "22023", "non-empty JSON array"),
        refused("an empty array", json!([]), "22023", "non-empty JSON array"),
        refused(
            "no event_type",
            json!([{ "payload": {} }]),
            "22023",
            "event_type",
        ),
        refused(
            "an empty event_type",
            json!([{ "event_type": "", "payload": {} }]),
            "22023",
            "event_type",
        ),
        refused("no payload", no_payload, "22023", "payload"),
        refused("metadata not an object", bad_metadata, "22023", "metadata"),
        refused(
            "a bad event after a good one",
            json!([good(), { "payload": 1 }]),
            "22023",
            "event_type",
        ),
        Refused {
            aggregate_id: "",
            ..refused(
                "an empty aggregate id",
                json!([good()]),
                "22023",
                "must not be empty",
            )
        },
        Refused {
            expected_version: Some(-1),
            ..refused(
                "a negative expected version",
                json!([good()]),
                "22023",
                "expected_version",
            )
        },
        refused(
            "a payload over the cap",
            json!([good(), too_big]),
            "54000",
            "larger than 64 bytes",
        ),
    ];
    for case in cases {
        let what = case.what;
        let mut tx = f.app.begin().await.unwrap();
        sqlx::query("SET LOCAL eventhost.max_payload_bytes = 64")
            .execute(&mut *tx)
            .await
            .unwrap();
        let error = sql_append(
            &mut tx,
            case.aggregate_id,
            case.expected_version,
            case.events,
        )
        .await
        .expect_err(what);
        let (code, message, _) = pg_error(&error);
        assert_eq!(code, case.sqlstate, "{what}: {message}");
        assert!(
            message.starts_with("eventhost.append: "),
            "{what}: {message}"
        );
        assert!(message.contains(case.message), "{what}: {message}");
        tx.rollback().await.unwrap();
    }
    assert_eq!(
        count(&f.app, "SELECT count(*) FROM eventhost.events").await,
        0
    );
    assert_eq!(
        count(&f.app, "SELECT count(*) FROM eventhost.streams").await,
        0
    );

    // The cap applies to its own transaction only, and payloads within it pass.
    let mut tx = f.app.begin().await.unwrap();
    sqlx::query("SET LOCAL eventhost.max_payload_bytes = 64")
        .execute(&mut *tx)
        .await
        .unwrap();
    sql_append_one(&mut tx, "o-1", Some(0)).await;
    tx.commit().await.unwrap();
    let mut conn = f.app.acquire().await.unwrap();
    let big = json!([{ "event_type": "big", "payload": "x".repeat(100) }]);
    sql_append(&mut conn, "o-1", Some(1), big)
        .await
        .expect("the default cap is back");
    assert_eq!(f.store.stream_version(&order("o-1")).await.unwrap(), 2);
}

// ---------------------------------------------------------------------------------------
// Payload caps: PgStore's limits are the ones that apply to its appends.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_store_accepts_a_payload_within_its_cap_counted_in_compact_json() {
    let f = fixture().await;
    // 800,001 bytes of compact JSON, under the default 1 MiB cap; its jsonb text form
    // ("[0, 0, ...]") is 1,200,000 bytes.
    let payload = Value::Array(vec![json!(0); 400_000]);
    assert!(payload.to_string().len() < StoreLimits::default().max_payload_bytes);
    let result = f
        .store
        .append(
            &order("o-1"),
            ExpectedVersion::Any,
            &[NewEvent::new("big", payload)],
        )
        .await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn the_store_honours_a_payload_cap_above_the_sql_default() {
    let f = fixture().await;
    let limits = StoreLimits {
        max_payload_bytes: 4 * 1024 * 1024,
        ..StoreLimits::default()
    };
    let store = PgStore::connect(&f.db.url, limits).await.unwrap();
    let payload = json!("x".repeat(2 * 1024 * 1024));
    let result = store
        .append(
            &order("o-1"),
            ExpectedVersion::Any,
            &[NewEvent::new("big", payload)],
        )
        .await;
    assert!(result.is_ok(), "{result:?}");
}

// ---------------------------------------------------------------------------------------
// Subscription order when transaction ids and commit order disagree.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_version_appended_by_an_older_transaction_is_read_after_the_version_before_it() {
    let f = fixture().await;
    let mut a = f.app.begin().await.unwrap();
    let xid_a = take_xid(&mut a).await;

    let mut b = f.app.begin().await.unwrap();
    let v1 = sql_append_one(&mut b, "s", Some(0)).await;
    let xid_b = take_xid(&mut b).await;
    b.commit().await.unwrap();

    let v2 = sql_append_one(&mut a, "s", Some(1)).await;
    a.commit().await.unwrap();
    assert!(xid_a < xid_b, "A took its transaction id first");

    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(2).await;
    assert_eq!(follower.ids(), [v1, v2]);
    follower.expect_nothing_new_for(QUIET_PERIOD).await;

    // Read one at a time, resuming from each checkpoint, the order is the same.
    let first = f
        .store
        .read_batch(Checkpoint::ORIGIN, &Filter::default(), 1)
        .await
        .unwrap();
    let second = f
        .store
        .read_batch(first[0].checkpoint, &Filter::default(), 1)
        .await
        .unwrap();
    assert_eq!([first[0].event.id, second[0].event.id], [v1, v2]);
}

/// `subscriptions reset --to P` hands back every event after position P, in the
/// subscription's own order: an event whose transaction took its id before P's, and its
/// position after P, comes before P in that order, and is handled again too.
#[tokio::test]
async fn a_reset_to_a_position_hands_back_a_later_position_that_an_older_transaction_took() {
    let f = fixture().await;
    let name = "probe.all";
    let defined = f
        .store
        .define_subscriptions(
            "probe",
            &[SubscriptionDefinition {
                name: name.to_owned(),
                filter: Filter::default(),
                start: Checkpoint::ORIGIN,
            }],
        )
        .await
        .expect("define the subscription");
    let mut a = f.app.begin().await.unwrap();
    let xid_a = take_xid(&mut a).await;
    let mut b = f.app.begin().await.unwrap();
    let at_p = sql_append(
        &mut b,
        "b",
        None,
        json!([event_json(Uuid::new_v4(), "order.changed", json!({}))]),
    )
    .await
    .expect("B appends");
    let xid_b = take_xid(&mut b).await;
    b.commit().await.unwrap();
    let after_p = sql_append(
        &mut a,
        "a",
        None,
        json!([event_json(Uuid::new_v4(), "order.changed", json!({}))]),
    )
    .await
    .expect("A appends");
    a.commit().await.unwrap();
    assert!(
        xid_a < xid_b && at_p[0].position < after_p[0].position,
        "inverted"
    );
    let p = at_p[0].position as u64;

    // The subscription handles both (A's first), and an operator resets it to P.
    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(2).await;
    assert_eq!(follower.ids(), [after_p[0].id, at_p[0].id], "commit order");
    let handled = f
        .store
        .read_batch(Checkpoint::ORIGIN, &Filter::default(), 10)
        .await
        .unwrap();
    let last = handled.last().expect("two events").checkpoint;
    f.store
        .commit_batch(&BatchCommit::advance(
            name,
            defined[0].record.revision,
            Checkpoint::ORIGIN,
            last,
        ))
        .await
        .expect("handle both");
    assert_eq!(f.store.lag(name).await.unwrap(), 0);

    let reset = f.store.reset(name, p, false).await.expect("reset to P");
    let again: Vec<Uuid> = f
        .store
        .read_batch(reset.checkpoint, &Filter::default(), 10)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.event.id)
        .collect();
    assert!(
        again.contains(&after_p[0].id),
        "the event after P is handled again: {again:?} after {:?}",
        reset.checkpoint
    );
    assert_eq!(f.store.lag(name).await.unwrap(), again.len() as u64);

    // Without an inversion, a reset to P hands back exactly what follows P.
    let reset = f
        .store
        .reset(name, after_p[0].position as u64, false)
        .await
        .expect("reset to the later position");
    let again = f
        .store
        .read_batch(reset.checkpoint, &Filter::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|entry| entry.event.id).collect::<Vec<_>>(),
        [at_p[0].id],
        "after A's event in commit order comes B's alone"
    );
}

#[tokio::test]
async fn a_transaction_open_between_two_inverted_writers_holds_back_both_until_it_commits() {
    inverted_writers_around_an_open_transaction(Ending::Commit).await;
}

#[tokio::test]
async fn a_transaction_open_between_two_inverted_writers_holds_back_both_until_it_rolls_back() {
    inverted_writers_around_an_open_transaction(Ending::Rollback).await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Commit,
    Rollback,
}

/// A takes its xid, then X, then B; B appends version 1 of S and commits, A appends
/// version 2 and commits, while X stays open; X then appends an event of its own (which
/// sorts before both of S's) and ends.
async fn inverted_writers_around_an_open_transaction(ending: Ending) {
    let f = fixture().await;
    let mut a = f.app.begin().await.unwrap();
    let xid_a = take_xid(&mut a).await;
    let mut x = f.app.begin().await.unwrap();
    let xid_x = take_xid(&mut x).await;
    let mut b = f.app.begin().await.unwrap();
    let xid_b = take_xid(&mut b).await;
    assert!(
        xid_a < xid_x && xid_x < xid_b,
        "{xid_a} < {xid_x} < {xid_b}"
    );

    let v1 = sql_append_one(&mut b, "s", Some(0)).await;
    b.commit().await.unwrap();
    let v2 = sql_append_one(&mut a, "s", Some(1)).await;
    a.commit().await.unwrap();

    let mut follower = Follower::from_origin(&f.store);
    follower.expect_nothing_new_for(QUIET_PERIOD).await;
    assert!(
        follower.read.is_empty(),
        "nothing passes the open transaction X"
    );

    let from_x = sql_append_one(&mut x, "x-side", Some(0)).await;
    let expected = match ending {
        Ending::Commit => {
            x.commit().await.unwrap();
            vec![from_x, v1, v2]
        }
        Ending::Rollback => {
            x.rollback().await.unwrap();
            vec![v1, v2]
        }
    };
    follower.wait_for(expected.len()).await;
    assert_eq!(follower.ids(), expected);
    follower.expect_nothing_new_for(QUIET_PERIOD).await;
}

// ---------------------------------------------------------------------------------------
// A transaction that stays open delays delivery but loses nothing.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_long_open_unrelated_transaction_delays_later_events_but_loses_none() {
    let f = fixture().await;
    let before = store_append_one(&f.store, "before").await;

    let mut long = f.app.begin().await.unwrap();
    take_xid(&mut long).await;
    sqlx::query("INSERT INTO app_orders VALUES ('unrelated', 1)")
        .execute(&mut *long)
        .await
        .unwrap();

    let during_store = store_append_one(&f.store, "during-1").await;
    let mut conn = f.app.acquire().await.unwrap();
    let during_sql = sql_append_one(&mut conn, "during-2", Some(0)).await;

    // While it is open, only what sorts before it is delivered, to old and new readers alike.
    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(1).await;
    assert_eq!(follower.ids(), [before]);
    follower
        .expect_nothing_new_for(Duration::from_millis(700))
        .await;
    let checkpoint_while_open = follower.checkpoint;
    let head_while_open = f.store.head().await.unwrap();
    assert_eq!(head_while_open, checkpoint_while_open);

    long.commit().await.unwrap();
    follower.wait_for(3).await;
    assert_eq!(follower.ids(), [before, during_store, during_sql]);
    follower.expect_nothing_new_for(QUIET_PERIOD).await;

    for checkpoint in [checkpoint_while_open, head_while_open] {
        let mut resumed = Follower::after(&f.store, checkpoint);
        resumed.wait_for(2).await;
        assert_eq!(resumed.ids(), [during_store, during_sql]);
    }
}

#[tokio::test]
async fn events_a_long_transaction_appends_late_are_not_skipped_by_checkpoints_taken_meanwhile() {
    let f = fixture().await;
    let first = store_append_one(&f.store, "o-0").await;
    let mut long = f.app.begin().await.unwrap();
    take_xid(&mut long).await;

    let early = store_append_one(&f.store, "o-1").await;
    let mut conn = f.app.acquire().await.unwrap();
    let later = sql_append_one(&mut conn, "o-2", Some(0)).await;

    let mut follower = Follower::from_origin(&f.store);
    follower.wait_for(1).await;
    follower.expect_nothing_new_for(QUIET_PERIOD).await;
    let checkpoint_while_open = follower.checkpoint;
    let head_while_open = f.store.head().await.unwrap();
    assert_eq!(head_while_open, checkpoint_while_open);

    // Committed last, but its transaction id is the oldest: it is delivered right after
    // `first`, before the events that committed while it was open.
    let late = sql_append_one(&mut long, "o-long", Some(0)).await;
    long.commit().await.unwrap();
    follower.wait_for(4).await;
    assert_eq!(follower.ids(), [first, late, early, later]);

    for checkpoint in [checkpoint_while_open, head_while_open] {
        let mut resumed = Follower::after(&f.store, checkpoint);
        resumed.wait_for(3).await;
        assert_eq!(resumed.ids(), [late, early, later]);
        resumed.expect_nothing_new_for(QUIET_PERIOD).await;
    }
}

/// Transaction ids are compared as numbers, not as text: an event of transaction 9 comes
/// before one of transaction 10 (as text, "10" sorts first), in `read_batch` and in `head`.
#[tokio::test]
async fn events_are_ordered_by_transaction_id_as_a_number_across_a_change_in_digit_count() {
    let f = fixture().await;
    let insert = "INSERT INTO eventhost.events
                      (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload)
                  VALUES ($1::text::xid8, $2, 'order', $3, 1, 'order.created', '{}')";
    let (ten, nine) = (Uuid::new_v4(), Uuid::new_v4());
    for (tx, id, stream) in [("10", ten, "o-10"), ("9", nine, "o-9")] {
        sqlx::query(insert)
            .bind(tx)
            .bind(id)
            .bind(stream)
            .execute(&f.app)
            .await
            .expect("insert an event with a chosen transaction id");
    }

    let first = f
        .store
        .read_batch(Checkpoint::ORIGIN, &Filter::default(), 1)
        .await
        .expect("read_batch");
    assert_eq!(first[0].event.id, nine);
    assert!(first[0].checkpoint.to_string().starts_with("9:"));
    let second = f
        .store
        .read_batch(first[0].checkpoint, &Filter::default(), 10)
        .await
        .expect("read_batch");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event.id, ten);
    assert_eq!(f.store.head().await.expect("head"), second[0].checkpoint);
}

/// An application role with only `USAGE` on the schema and `EXECUTE` on `eventhost.append()`
/// appends through it, and can neither write the tables directly nor call `append_quiet()`.
#[tokio::test]
async fn an_application_role_appends_through_the_function_only() {
    let f = fixture().await;
    let role = format!("eventhost_test_app_{}", Uuid::new_v4().simple());
    for grant in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA eventhost TO {role}"),
        format!("GRANT EXECUTE ON FUNCTION eventhost.append(text, text, bigint, jsonb) TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(grant))
            .execute(&f.app)
            .await
            .expect("set up the application role");
    }
    let options =
        f.db.url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("the test database's URL")
            .username(&role);
    let mut app = <PgConnection as sqlx::Connection>::connect_with(&options)
        .await
        .expect("connect as the application role");

    let appended = sql_append_one(&mut app, "o-1", Some(0)).await;
    let stored = f
        .store
        .read_stream(&order("o-1"), 0, 10)
        .await
        .expect("read the stream");
    assert_eq!(
        stored.iter().map(|event| event.id).collect::<Vec<_>>(),
        [appended]
    );

    let denied = [
        "INSERT INTO eventhost.streams (aggregate_type, aggregate_id, version, order_tx)
         VALUES ('order', 'o-2', 1, pg_current_xact_id())",
        "SELECT count(*) FROM eventhost.events",
        "SELECT * FROM eventhost.append_quiet('order', 'o-3', NULL, '[{\"event_type\": \"e\", \"payload\": {}}]', NULL)",
    ];
    for statement in denied {
        let error = sqlx::query(statement)
            .execute(&mut app)
            .await
            .expect_err("the application role has no such right");
        let code = error
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }

    drop(app);
    for cleanup in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(cleanup))
            .execute(&f.app)
            .await
            .expect("drop the application role");
    }
}

/// A member for the lease tests: `pid` on a machine whose boot is `boot`.
fn member(pid: u32, boot: &str) -> Member {
    Member {
        id: Uuid::now_v7(),
        host: "test-host".to_owned(),
        boot_id: Some(boot.to_owned()),
        pid,
        version: "test".to_owned(),
    }
}

/// Each of `members` joins (or renews) with nothing installed, its peers all alive.
async fn join(store: &PgStore, members: &[&Member], ttl: Duration) {
    for member in members {
        store
            .renew_leases(member, &Plugins::new(), ttl, |_| true)
            .await
            .expect("join");
    }
}

async fn define(store: &PgStore, names: &[&str]) {
    let definitions: Vec<SubscriptionDefinition> = names
        .iter()
        .map(|name| SubscriptionDefinition {
            name: (*name).to_owned(),
            filter: Filter::default(),
            start: Checkpoint::ORIGIN,
        })
        .collect();
    store
        .define_subscriptions("probe", &definitions)
        .await
        .expect("define the subscriptions");
}

/// A commit that only moves nothing, made under `lease` at `revision`.
fn leased(name: &str, revision: u64, lease: &Member) -> BatchCommit {
    let mut commit = BatchCommit::advance(name, revision, Checkpoint::ORIGIN, Checkpoint::ORIGIN);
    commit.lease = Some(lease.id);
    commit
}

/// Several daemons: a lease is taken by one member at a time; a take raises the epoch and
/// the revision; a commit under a lease that expired, or that another member took, fails
/// with `LeaseLost`, whatever revision it names.
#[tokio::test]
async fn a_commit_needs_an_unexpired_lease_of_its_own() {
    let f = fixture().await;
    let name = "probe.all";
    define(&f.store, &[name]).await;
    let ttl = Duration::from_secs(2);
    let always = |_| true;
    let (x, y) = (member(1, "boot"), member(2, "boot"));
    for joining in [&x, &y] {
        let renewal = f
            .store
            .renew_leases(joining, &Plugins::new(), ttl, always)
            .await
            .unwrap();
        assert!(renewal.held.is_empty());
    }
    let wanted = [name.to_owned()];
    let taken = f.store.acquire_leases(x.id, &wanted, 1, ttl).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].epoch, taken[0].revision), (1, 1));
    assert!(
        f.store
            .acquire_leases(y.id, &wanted, 1, ttl)
            .await
            .unwrap()
            .is_empty(),
        "held: nobody else takes it"
    );
    f.store
        .commit_batch(&leased(name, 1, &x))
        .await
        .expect("the holder commits");
    assert!(matches!(
        f.store.commit_batch(&leased(name, 2, &y)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let renewal = f
        .store
        .renew_leases(&x, &Plugins::new(), ttl, always)
        .await
        .unwrap();
    assert_eq!(renewal.held, wanted);
    assert_eq!(renewal.members(), 2);

    // Expired, even with nobody else taking it: the holder commits nothing more.
    sleep(ttl + Duration::from_millis(200)).await;
    assert!(matches!(
        f.store.commit_batch(&leased(name, 2, &x)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let taken = f.store.acquire_leases(y.id, &wanted, 1, ttl).await.unwrap();
    assert_eq!((taken[0].epoch, taken[0].revision), (2, 3));
    let record = f.store.subscription(name).await.unwrap().unwrap();
    assert_eq!(record.owner, Some(y.id));
    assert!(
        f.store
            .renew_leases(&x, &Plugins::new(), ttl, always)
            .await
            .unwrap()
            .held
            .is_empty(),
        "the old holder's renewal finds the lease gone"
    );
    for revision in [2, 3] {
        assert!(matches!(
            f.store.commit_batch(&leased(name, revision, &x)).await,
            Err(StoreError::LeaseLost { .. })
        ));
    }
    f.store
        .commit_batch(&leased(name, 3, &y))
        .await
        .expect("the new holder commits");

    // Released, it is anyone's at once; leaving releases everything and the membership.
    f.store.release_leases(y.id, &wanted).await.unwrap();
    assert_eq!(
        f.store.subscription(name).await.unwrap().unwrap().owner,
        None
    );
    let taken = f.store.acquire_leases(x.id, &wanted, 1, ttl).await.unwrap();
    assert_eq!(taken[0].epoch, 3);
    join(&f.store, &[&x, &y], ttl).await;
    let daemons = f.store.daemons().await.unwrap();
    assert_eq!(daemons.len(), 2);
    assert_eq!(daemons[0].id, x.id);
    assert_eq!(daemons[0].subscriptions, wanted);
    f.store.leave(x.id).await.unwrap();
    assert_eq!(
        f.store.subscription(name).await.unwrap().unwrap().owner,
        None
    );
    let daemons = f.store.daemons().await.unwrap();
    assert_eq!(daemons.iter().map(|d| d.id).collect::<Vec<_>>(), [y.id]);
}

/// Takes are bounded and never overlap: two members taking at once from ten subscriptions,
/// five each at most, get disjoint sets.
#[tokio::test]
async fn members_taking_at_once_get_disjoint_leases() {
    let f = fixture().await;
    let names: Vec<String> = (0..10).map(|i| format!("probe.s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    define(&f.store, &refs).await;
    let ttl = Duration::from_secs(30);
    let (x, y) = (member(1, "boot"), member(2, "boot"));
    join(&f.store, &[&x, &y], ttl).await;
    let (a, b) = tokio::join!(
        f.store.acquire_leases(x.id, &names, 5, ttl),
        f.store.acquire_leases(y.id, &names, 5, ttl),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.len() <= 5 && b.len() <= 5);
    let a: HashSet<String> = a.into_iter().map(|lease| lease.subscription).collect();
    let b: HashSet<String> = b.into_iter().map(|lease| lease.subscription).collect();
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    let rest = f.store.acquire_leases(x.id, &names, 10, ttl).await.unwrap();
    assert_eq!(a.len() + b.len() + rest.len(), 10, "every one taken once");
}

/// A member that ran on this machine and whose process is gone frees its leases at the next
/// renewal of a member on the same machine, not at their expiry; one on another machine, or
/// whose process runs, keeps them.
#[tokio::test]
async fn a_gone_process_on_this_machine_frees_its_leases_at_once() {
    let f = fixture().await;
    let names = ["probe.a".to_owned(), "probe.b".to_owned()];
    define(&f.store, &["probe.a", "probe.b"]).await;
    let ttl = Duration::from_secs(60);
    let (dead, elsewhere, me) = (
        member(101, "boot"),
        member(101, "other-boot"),
        member(102, "boot"),
    );
    for (joining, name) in [(&dead, &names[0]), (&elsewhere, &names[1])] {
        f.store
            .renew_leases(joining, &Plugins::new(), ttl, |_| true)
            .await
            .unwrap();
        let taken = f
            .store
            .acquire_leases(joining.id, std::slice::from_ref(name), 1, ttl)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
    }
    let alive = f
        .store
        .renew_leases(&me, &Plugins::new(), ttl, |_| true)
        .await
        .unwrap();
    assert!(alive.gone.is_empty());
    assert!(
        f.store
            .acquire_leases(me.id, &names, 2, ttl)
            .await
            .unwrap()
            .is_empty()
    );

    let renewal = f
        .store
        .renew_leases(&me, &Plugins::new(), ttl, |pid| pid != 101)
        .await
        .unwrap();
    assert_eq!(
        renewal.gone.iter().map(|m| m.id).collect::<Vec<_>>(),
        [dead.id]
    );
    assert_eq!(renewal.members(), 2, "the gone member is no longer counted");
    let taken = f.store.acquire_leases(me.id, &names, 2, ttl).await.unwrap();
    assert_eq!(
        taken
            .iter()
            .map(|lease| lease.subscription.as_str())
            .collect::<Vec<_>>(),
        ["probe.a"]
    );
}

/// A lease row edited by hand is never a lease nobody can take: one held by an owner that is
/// no live member, or running longer than any daemon takes one for, is free.
#[tokio::test]
async fn a_lease_edited_by_hand_is_free_for_live_members() {
    let f = fixture().await;
    let name = "probe.all";
    define(&f.store, &[name]).await;
    let wanted = [name.to_owned()];
    let ttl = Duration::from_secs(60);
    let (x, y) = (member(1, "boot"), member(2, "other-boot"));
    join(&f.store, &[&x, &y], ttl).await;
    sqlx::query(
        "UPDATE eventhost.subscriptions
         SET owner = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'",
    )
    .execute(&f.app)
    .await
    .unwrap();
    let taken = f.store.acquire_leases(x.id, &wanted, 1, ttl).await.unwrap();
    assert_eq!(taken.len(), 1, "an owner that is no member holds nothing");

    sqlx::query(
        "UPDATE eventhost.subscriptions SET owner = $1, lease_expires_at = now() + interval '10 years'",
    )
    .bind(y.id)
    .execute(&f.app)
    .await
    .unwrap();
    let taken = f.store.acquire_leases(x.id, &wanted, 1, ttl).await.unwrap();
    assert_eq!(taken.len(), 1, "a lease of ten years was never a daemon's");
    assert!(
        f.store
            .acquire_leases(y.id, &wanted, 1, ttl)
            .await
            .unwrap()
            .is_empty(),
        "taken, it is x's"
    );
}

/// A renewal writes what the daemon runs and tells it what its peers run; `daemons` lists it.
#[tokio::test]
async fn members_see_the_plugins_their_peers_run() {
    let f = fixture().await;
    let ttl = Duration::from_secs(60);
    let (x, y) = (member(1, "boot"), member(2, "boot"));
    let runs = |label: &str| -> Plugins {
        [("order-totals".to_owned(), label.to_owned())]
            .into_iter()
            .collect()
    };
    f.store
        .renew_leases(&x, &runs("0.1.0 #aaaa"), ttl, |_| true)
        .await
        .unwrap();
    let renewal = f
        .store
        .renew_leases(&y, &runs("0.2.0 #bbbb"), ttl, |_| true)
        .await
        .unwrap();
    assert_eq!(renewal.members(), 2);
    assert_eq!(renewal.peers.len(), 1);
    assert_eq!(renewal.peers[0].id, x.id);
    assert_eq!(renewal.peers[0].plugins, runs("0.1.0 #aaaa"));
    let daemons = f.store.daemons().await.unwrap();
    assert_eq!(daemons[1].plugins, runs("0.2.0 #bbbb"));
}

/// Two daemons starting together define the same new subscription at once: the one whose
/// insert waits for the other's commit takes the row the other made, rather than failing
/// (it once failed on the primary key, and that daemon rejected the plugin).
#[tokio::test]
async fn a_subscription_defined_by_two_daemons_at_once_is_defined_for_both() {
    let f = fixture().await;
    let name = "probe.all";
    let mut other = f.app.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO eventhost.subscriptions
             (name, plugin, aggregate_types, event_types, checkpoint_tx, checkpoint_position)
         VALUES ($1, 'probe', '{}', '{}', 0, 0)",
    )
    .bind(name)
    .execute(&mut *other)
    .await
    .expect("the other daemon creates the row");
    let store = f.store.clone();
    let defining = tokio::spawn(async move {
        store
            .define_subscriptions(
                "probe",
                &[SubscriptionDefinition {
                    name: name.to_owned(),
                    filter: Filter::default(),
                    start: Checkpoint::ORIGIN,
                }],
            )
            .await
    });
    // Until the store's insert waits on the other daemon's row.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&f.app)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store's definition never waited"
        );
        sleep(Duration::from_millis(10)).await;
    }
    other.commit().await.unwrap();
    let defined = defining
        .await
        .unwrap()
        .expect("the definition takes the row the other daemon made");
    assert_eq!(defined[0].record.name, name);
    assert!(!defined[0].restarted);
}
