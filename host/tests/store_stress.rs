//! The stress test behind the gap-free subscription order on PostgreSQL (docs/architecture.md, the path of one event).
//!
//! For a few seconds, writers append through `eventhost.append()` inside transactions held
//! open for random times -- racing on the same streams with expected versions read just
//! before, some taking their transaction id early (so an older transaction appends a later
//! version), some rolling back on purpose -- and through `PgStore::append`, while one reader
//! follows live with `read_batch`. The reader must end with exactly the committed events,
//! each once, and every stream's versions in order 1, 2, 3...

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId, Version};
use eventhost_store::{Checkpoint, EventStore, Filter, PgStore, StoreError, StoreLimits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::postgres::{PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use uuid::Uuid;

use support::PgDatabase;

const SQL_WRITERS: usize = 8;
const STORE_WRITERS: usize = 2;
/// How long writers keep starting transactions.
const WRITE_FOR: Duration = Duration::from_secs(6);
/// A bound on each writer's work, whatever the timing.
const MAX_TRANSACTIONS_PER_WRITER: usize = 1_000;
/// Streams every writer races on, and streams appended to more rarely.
const HOT_STREAMS: usize = 4;
const COLD_STREAMS: usize = 40;
const PAGE: usize = 50;
/// How long the reader may take to catch up once the writers have stopped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const AGGREGATE_TYPE: &str = "stress";
const SEED: u64 = 0x5eed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reader_gets_every_committed_event_once_in_stream_order_under_racing_writers() {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url, StoreLimits::default())
        .await
        .expect("connect the store");
    let app = PgPoolOptions::new()
        .max_connections(SQL_WRITERS as u32)
        .connect(&db.url)
        .await
        .expect("connect the writers' pool");

    let (total_tx, total_rx) = watch::channel(None);
    let reader = tokio::spawn(follow_live(store.clone(), total_rx));
    let stop_at = Instant::now() + WRITE_FOR;
    let mut writers = Vec::new();
    for writer in 0..SQL_WRITERS {
        writers.push(tokio::spawn(sql_writer(app.clone(), writer, stop_at)));
    }
    for writer in 0..STORE_WRITERS {
        writers.push(tokio::spawn(store_writer(store.clone(), writer, stop_at)));
    }
    let mut log = WriterLog::default();
    for writer in writers {
        log.merge(writer.await.expect("a writer panicked"));
    }
    // A failed send means the reader has stopped: awaiting it reports why.
    let _ = total_tx.send(Some(log.committed.len()));
    let read = reader.await.expect("the reader failed");

    let inverted = inverted_version_pairs(&app).await;
    println!(
        "stress: {} transactions, {} events committed ({} through PgStore::append), \
         {} conflicts, {} rolled back on purpose ({} events), {} early transaction ids, \
         {} multi-event appends, {} two-stream transactions, {} inverted-xid version pairs; \
         reader: {} reads ({} empty), {} events read after a higher position",
        log.transactions,
        log.committed.len(),
        log.committed_through_store,
        log.conflicts,
        log.rollbacks,
        log.rolled_back.len(),
        log.early_xids,
        log.multi_event_appends,
        log.two_stream_transactions,
        inverted,
        read.reads,
        read.empty_reads,
        read.late_positions,
    );
    assert_exactly_the_committed_events_were_read(&log, &read);
    assert_stream_versions_are_gap_free(&log, &app).await;
}

// ---------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------

/// An event a writer saw commit.
#[derive(Debug, Clone)]
struct Committed {
    id: Uuid,
    stream: String,
    version: Version,
}

#[derive(Debug, Default)]
struct WriterLog {
    committed: Vec<Committed>,
    committed_through_store: usize,
    rolled_back: Vec<Uuid>,
    transactions: usize,
    conflicts: usize,
    rollbacks: usize,
    early_xids: usize,
    multi_event_appends: usize,
    two_stream_transactions: usize,
}

impl WriterLog {
    fn merge(&mut self, other: WriterLog) {
        self.committed.extend(other.committed);
        self.committed_through_store += other.committed_through_store;
        self.rolled_back.extend(other.rolled_back);
        self.transactions += other.transactions;
        self.conflicts += other.conflicts;
        self.rollbacks += other.rollbacks;
        self.early_xids += other.early_xids;
        self.multi_event_appends += other.multi_event_appends;
        self.two_stream_transactions += other.two_stream_transactions;
    }
}

fn pick_stream(rng: &mut StdRng) -> String {
    if rng.random_bool(0.6) {
        format!("hot-{}", rng.random_range(0..HOT_STREAMS))
    } else {
        format!("cold-{:02}", rng.random_range(0..COLD_STREAMS))
    }
}

fn pick_event_count(rng: &mut StdRng) -> usize {
    if rng.random_bool(0.3) {
        rng.random_range(2..=5)
    } else {
        1
    }
}

/// What one application transaction will do.
#[derive(Debug)]
struct Plan {
    /// One or two distinct streams, in name order so transactions never deadlock.
    streams: Vec<String>,
    take_xid_early: bool,
    any_version: bool,
    hold_before: Duration,
    hold_after: Duration,
    roll_back: bool,
}

impl Plan {
    fn random(rng: &mut StdRng) -> Self {
        let mut streams = vec![pick_stream(rng)];
        if rng.random_bool(0.15) {
            let second = pick_stream(rng);
            if second != streams[0] {
                streams.push(second);
                streams.sort();
            }
        }
        Self {
            streams,
            take_xid_early: rng.random_bool(0.3),
            any_version: rng.random_bool(0.15),
            hold_before: Duration::from_millis(rng.random_range(0..=10)),
            hold_after: Duration::from_millis(rng.random_range(0..=10)),
            roll_back: rng.random_bool(0.1),
        }
    }
}

async fn sql_writer(pool: PgPool, writer: usize, stop_at: Instant) -> WriterLog {
    let mut rng = StdRng::seed_from_u64(SEED + writer as u64);
    let mut log = WriterLog::default();
    for _ in 0..MAX_TRANSACTIONS_PER_WRITER {
        if Instant::now() >= stop_at {
            break;
        }
        let plan = Plan::random(&mut rng);
        sql_transaction(&pool, &plan, &mut rng, &mut log).await;
    }
    log
}

/// One application transaction: appends per `plan`, holding the transaction open around
/// the appends; a conflict rolls it back.
async fn sql_transaction(pool: &PgPool, plan: &Plan, rng: &mut StdRng, log: &mut WriterLog) {
    log.transactions += 1;
    let mut tx = pool.begin().await.expect("begin");
    if plan.take_xid_early {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await
            .expect("take a transaction id");
        log.early_xids += 1;
    }
    sleep(plan.hold_before).await;
    let mut appended = Vec::new();
    for stream in &plan.streams {
        let expected = if plan.any_version {
            None
        } else {
            Some(current_version(&mut tx, stream).await)
        };
        let ids: Vec<Uuid> = (0..pick_event_count(rng)).map(|_| Uuid::new_v4()).collect();
        if ids.len() > 1 {
            log.multi_event_appends += 1;
        }
        match sql_append(&mut tx, stream, expected, &ids).await {
            Ok(versions) => appended.extend(versions),
            Err(error) if sqlstate(&error).as_deref() == Some("EH409") => {
                log.conflicts += 1;
                tx.rollback().await.expect("roll back after a conflict");
                return;
            }
            Err(error) => panic!("append to {stream} failed: {error}"),
        }
    }
    if plan.streams.len() > 1 {
        log.two_stream_transactions += 1;
    }
    sleep(plan.hold_after).await;
    if plan.roll_back {
        tx.rollback().await.expect("roll back");
        log.rollbacks += 1;
        log.rolled_back
            .extend(appended.iter().map(|event| event.id));
    } else {
        tx.commit().await.expect("commit");
        log.committed.extend(appended);
    }
}

/// The stream's version as the application reads it just before appending.
async fn current_version(conn: &mut PgConnection, stream: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(version), 0) FROM eventhost.streams
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(AGGREGATE_TYPE)
    .bind(stream)
    .fetch_one(&mut *conn)
    .await
    .expect("read the stream's version")
}

async fn sql_append(
    conn: &mut PgConnection,
    stream: &str,
    expected: Option<i64>,
    ids: &[Uuid],
) -> Result<Vec<Committed>, sqlx::Error> {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "event_type": "stress.appended", "payload": { "stream": stream } }))
        .collect();
    let rows = sqlx::query("SELECT event_version, event_id FROM eventhost.append($1, $2, $3, $4)")
        .bind(AGGREGATE_TYPE)
        .bind(stream)
        .bind(expected)
        .bind(Value::Array(events))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Committed {
                id: row.try_get("event_id")?,
                stream: stream.to_owned(),
                version: row.try_get::<i64, _>("event_version")? as Version,
            })
        })
        .collect()
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    let pg = error
        .as_database_error()?
        .try_downcast_ref::<PgDatabaseError>()?;
    Some(pg.code().to_owned())
}

/// Appends through the Rust store, with the stream's version read just before.
async fn store_writer(store: PgStore, writer: usize, stop_at: Instant) -> WriterLog {
    let mut rng = StdRng::seed_from_u64(SEED + 1_000 + writer as u64);
    let mut log = WriterLog::default();
    for _ in 0..MAX_TRANSACTIONS_PER_WRITER {
        if Instant::now() >= stop_at {
            break;
        }
        log.transactions += 1;
        let stream = StreamId::new(AGGREGATE_TYPE, pick_stream(&mut rng));
        let expected = if rng.random_bool(0.2) {
            ExpectedVersion::Any
        } else {
            match store.stream_version(&stream).await.expect("stream_version") {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version),
            }
        };
        let count = pick_event_count(&mut rng);
        if count > 1 {
            log.multi_event_appends += 1;
        }
        let events: Vec<NewEvent> = (0..count)
            .map(|_| NewEvent::new("stress.appended", json!({ "stream": stream.aggregate_id })))
            .collect();
        match store.append(&stream, expected, &events).await {
            Ok(appended) => {
                log.committed_through_store += appended.events.len();
                log.committed
                    .extend(appended.events.iter().map(|event| Committed {
                        id: event.id,
                        stream: stream.aggregate_id.clone(),
                        version: event.version,
                    }));
            }
            Err(StoreError::Conflict { .. }) => log.conflicts += 1,
            Err(error) => panic!("PgStore::append to {stream} failed: {error}"),
        }
        sleep(Duration::from_millis(rng.random_range(0..=3))).await;
    }
    log
}

// ---------------------------------------------------------------------------------------
// The live reader
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ReadLog {
    events: Vec<Committed>,
    reads: usize,
    empty_reads: usize,
    /// Events read after one with a higher position: commits out of position order.
    late_positions: usize,
}

/// Follows `read_batch` from the origin, checking each event as it comes, until it has
/// read as many events as `total` says were committed; then makes sure nothing more comes.
async fn follow_live(store: PgStore, total: watch::Receiver<Option<usize>>) -> ReadLog {
    let mut log = ReadLog::default();
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut seen = HashSet::new();
    let mut last_version: HashMap<String, Version> = HashMap::new();
    let mut highest_position = 0;
    let mut drain_deadline = None;
    loop {
        let batch = store
            .read_batch(checkpoint, &Filter::default(), PAGE)
            .await
            .expect("read_batch");
        log.reads += 1;
        for entry in &batch {
            let event = &entry.event;
            assert!(entry.checkpoint > checkpoint, "checkpoints only grow");
            checkpoint = entry.checkpoint;
            assert!(seen.insert(event.id), "event {} read twice", event.id);
            let last = last_version.insert(event.aggregate_id.clone(), event.version);
            assert_eq!(
                event.version,
                last.unwrap_or(0) + 1,
                "stream {} out of order",
                event.aggregate_id
            );
            if event.position < highest_position {
                log.late_positions += 1;
            }
            highest_position = highest_position.max(event.position);
            log.events.push(Committed {
                id: event.id,
                stream: event.aggregate_id.clone(),
                version: event.version,
            });
        }
        if !batch.is_empty() {
            continue;
        }
        log.empty_reads += 1;
        let total = *total.borrow();
        if let Some(total) = total {
            if log.events.len() >= total {
                break;
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_DEADLINE);
            if Instant::now() >= deadline {
                panic!(
                    "the reader has {} of {total} committed events {DRAIN_DEADLINE:?} after the \
                     writers stopped; {}",
                    log.events.len(),
                    support::oldest_open_transaction(store.pool()).await
                );
            }
        }
        sleep(Duration::from_millis(2)).await;
    }
    sleep(Duration::from_millis(300)).await;
    let extra = store
        .read_batch(checkpoint, &Filter::default(), PAGE)
        .await
        .expect("read_batch");
    assert!(
        extra.is_empty(),
        "events after the last committed one: {extra:?}"
    );
    log
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn assert_exactly_the_committed_events_were_read(log: &WriterLog, read: &ReadLog) {
    let committed: HashSet<Uuid> = log.committed.iter().map(|event| event.id).collect();
    let was_read: HashSet<Uuid> = read.events.iter().map(|event| event.id).collect();
    assert_eq!(
        committed.len(),
        log.committed.len(),
        "a committed id reported twice"
    );
    assert!(
        !committed.is_empty() && log.rollbacks > 0,
        "the run did not exercise enough"
    );
    let rolled_back_read: Vec<_> = log
        .rolled_back
        .iter()
        .filter(|id| was_read.contains(id))
        .collect();
    assert!(
        rolled_back_read.is_empty(),
        "events of rolled-back transactions read: {rolled_back_read:?}"
    );
    let missing: Vec<_> = committed.difference(&was_read).take(10).collect();
    let unexpected: Vec<_> = was_read.difference(&committed).take(10).collect();
    assert!(
        missing.is_empty(),
        "committed events never read (first 10): {missing:?}"
    );
    assert!(
        unexpected.is_empty(),
        "events read that no writer committed (first 10): {unexpected:?}"
    );
    assert_eq!(read.events.len(), log.committed.len());
}

/// Every stream's committed versions are exactly 1..=n, and the store agrees on n.
async fn assert_stream_versions_are_gap_free(log: &WriterLog, pool: &PgPool) {
    let mut versions: BTreeMap<&str, Vec<Version>> = BTreeMap::new();
    for event in &log.committed {
        versions
            .entry(&event.stream)
            .or_default()
            .push(event.version);
    }
    for (stream, versions) in &mut versions {
        versions.sort_unstable();
        let expected: Vec<Version> = (1..=versions.len() as Version).collect();
        assert_eq!(*versions, expected, "stream {stream} has gaps or repeats");
        let stored: i64 = sqlx::query_scalar(
            "SELECT version FROM eventhost.streams WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(*stream)
        .fetch_one(pool)
        .await
        .expect("read a stream's version");
        assert_eq!(
            stored as usize,
            versions.len(),
            "stream {stream}'s stored version"
        );
    }
}

/// How many times a stream's version n+1 was written by a transaction older (by id) than
/// the one that wrote version n: the case the `order_tx` rule exists for.
async fn inverted_version_pairs(pool: &PgPool) -> i64 {
    sqlx::query(
        "SELECT count(*) AS inverted FROM (
             SELECT age(xmin) AS age,
                    lag(age(xmin)) OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY version)
                        AS previous_age
             FROM eventhost.events
         ) AS pairs
         WHERE age > previous_age",
    )
    .fetch_one(pool)
    .await
    .expect("count inverted version pairs")
    .get("inverted")
}
