//! The plans of the subscription reads and lag counts on a large table: each filtered read on
//! its index and touching only the rows it returns, under custom and generic plans alike; a
//! lag count near the head on its index; an append's look-up of its event ids on their index.
//! Needs PostgreSQL at `DATABASE_URL` (default `postgres://root@127.0.0.1:5432/test`); makes a
//! database of its own.

use eventhost_domain::NewEvent;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::*;

const EVENTS: i64 = 200_000;
const LIMIT: i64 = 100;

/// A database of its own on the test server, dropped at the end (left behind for the
/// server's clean-up when the test fails).
struct Database {
    url: String,
    admin_url: String,
    name: String,
}

impl Database {
    async fn create() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("this test needs PostgreSQL at {admin_url}: {error}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let name = format!("eventhost_plans_{}_{nanos}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("DATABASE_URL ends with a database name");
        Self {
            url: format!("{base}/{name}"),
            admin_url: admin_url.clone(),
            name,
        }
    }

    async fn drop_it(self) {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("reconnect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    }
}

/// `EVENTS` events, ten per transaction id: 2% of aggregate type `customer`, the rest
/// `order`; 1% `order.paid`, the rest `order.line-added`. (On a young cluster the later ones
/// may not be readable yet: the plans are the same.)
async fn fill(store: &PgStore) {
    sqlx::query(
        "INSERT INTO eventhost.events
             (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload)
         SELECT (g / 10)::text::xid8, gen_random_uuid(),
                CASE WHEN g % 50 = 1 THEN 'customer' ELSE 'order' END, 'a-' || g, 1,
                CASE WHEN g % 100 = 0 THEN 'order.paid' ELSE 'order.line-added' END, '{}'
         FROM generate_series(1, $1) AS g",
    )
    .bind(EVENTS)
    .execute(&store.pool)
    .await
    .expect("fill the log");
}

async fn analyze(store: &PgStore) {
    sqlx::query("ANALYZE eventhost.events")
        .execute(&store.pool)
        .await
        .expect("analyze");
}

/// The checkpoint of the event `offset` events into the log.
async fn checkpoint_at(store: &PgStore, offset: i64) -> Checkpoint {
    let (tx, position): (String, i64) = sqlx::query_as(
        "SELECT order_tx::text, position FROM eventhost.events ORDER BY position OFFSET $1 LIMIT 1",
    )
    .bind(offset)
    .fetch_one(&store.pool)
    .await
    .expect("a checkpoint");
    Checkpoint::new(
        tx.parse().expect("a transaction id"),
        u64::try_from(position).expect("a position"),
    )
}

/// The plan `sql` runs with under `mode`, run for real (`EXPLAIN ANALYZE`), after `after`.
async fn plan(
    store: &PgStore,
    mode: &str,
    sql: &str,
    after: Checkpoint,
    limit: Option<i64>,
    filter: &Filter,
) -> Value {
    let mut conn = store.pool.acquire().await.expect("a connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
        .execute(&mut *conn)
        .await
        .expect("set the plan cache mode");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
    )))
    .bind(after.tx().to_string())
    .bind(i64::try_from(after.position()).expect("a position"));
    if let Some(limit) = limit {
        query = query.bind(limit);
    }
    let row = bind_filter(query, filter)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("explain {sql}: {error}"));
    sqlx::query("RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .expect("reset the plan cache mode");
    row.try_get::<Json<Value>, _>(0).expect("a JSON plan").0[0]["Plan"].clone()
}

/// The plan's nodes that read the events table.
fn event_scans(node: &Value, found: &mut Vec<Value>) {
    if node["Relation Name"] == "events" {
        found.push(node.clone());
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        event_scans(child, found);
    }
}

/// Checks that every read of the events table in `plan` goes through `index` and touches no
/// more than `most` rows, none of them discarded by a filter it could not push into the index.
fn assert_reads_on(plan: &Value, index: &str, most: f64, what: &str) {
    let mut scans = Vec::new();
    event_scans(plan, &mut scans);
    assert!(!scans.is_empty(), "{what}: no read of events in {plan:#}");
    let mut touched = 0.0;
    for scan in &scans {
        assert_eq!(scan["Index Name"], index, "{what}: {plan:#}");
        let removed = scan["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
        assert_eq!(removed, 0.0, "{what}: rows read and discarded: {plan:#}");
        touched += scan["Actual Rows"].as_f64().unwrap_or(0.0)
            * scan["Actual Loops"].as_f64().unwrap_or(1.0);
    }
    assert!(touched <= most, "{what}: {touched} rows touched: {plan:#}");
}

fn filter(aggregate_types: &[&str], event_types: &[&str]) -> Filter {
    Filter {
        aggregate_types: aggregate_types
            .iter()
            .map(|&name| name.to_owned())
            .collect(),
        event_types: event_types.iter().map(|&name| name.to_owned()).collect(),
    }
}

/// Checks that `plan` reads the events table through `index` and never scans it whole.
fn assert_searches(plan: &Value, index: &str, what: &str) {
    fn walk(node: &Value, indexes: &mut Vec<String>, scans: &mut usize) {
        if node["Node Type"]
            .as_str()
            .is_some_and(|kind| kind.contains("Seq Scan"))
        {
            *scans += 1;
        }
        if let Some(name) = node["Index Name"].as_str() {
            indexes.push(name.to_owned());
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            walk(child, indexes, scans);
        }
    }
    let (mut indexes, mut scans) = (Vec::new(), 0);
    walk(plan, &mut indexes, &mut scans);
    assert_eq!(scans, 0, "{what}: {plan:#}");
    assert_eq!(indexes, [index], "{what}: {plan:#}");
}

#[tokio::test]
async fn filtered_reads_use_their_index_whatever_the_plan_cache_does() {
    let db = Database::create().await;
    let store = PgStore::connect(&db.url, StoreLimits::default())
        .await
        .expect("connect the store");
    fill(&store).await;
    let limit = LIMIT as f64;
    let origin = Checkpoint::ORIGIN;
    let paid = filter(&[], &["order.paid"]);
    let customers = filter(&["customer"], &[]);
    let orders = filter(&["order"], &[]);

    // Before any ANALYZE (a log grown since the last one), a common aggregate type from the
    // middle of the log: the key of a stream's versions must not stand in for the category
    // index (it once did, reading every later event of the type and sorting them).
    let middle = checkpoint_at(&store, EVENTS / 2).await;
    let sql = filtered_batch_query!("aggregate_type", "");
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let read = plan(&store, mode, sql, middle, Some(LIMIT), &orders).await;
        let what = format!("98% by aggregate type, no statistics, {mode}");
        assert_reads_on(&read, "events_category_order", limit, &what);
    }

    analyze(&store).await;
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let read = plan(&store, mode, sql, middle, Some(LIMIT), &orders).await;
        let what = format!("98% by aggregate type, {mode}");
        assert_reads_on(&read, "events_category_order", limit, &what);
    }
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let sql = filtered_batch_query!("event_type", "");
        let read = plan(&store, mode, sql, origin, Some(LIMIT), &paid).await;
        assert_reads_on(
            &read,
            "events_type_order",
            limit,
            &format!("1% by type, {mode}"),
        );

        let absent_too = filter(&[], &["order.paid", "order.absent", "order.paid"]);
        let read = plan(&store, mode, sql, origin, Some(LIMIT), &absent_too).await;
        let what = format!("with an absent type, {mode}");
        assert_reads_on(&read, "events_type_order", limit, &what);

        let sql = filtered_batch_query!("aggregate_type", "");
        let read = plan(&store, mode, sql, origin, Some(LIMIT), &customers).await;
        let what = format!("2% by aggregate type, {mode}");
        assert_reads_on(&read, "events_category_order", limit, &what);

        let both = filter(&["order"], &["order.paid"]);
        let sql = filtered_batch_query!("event_type", "AND aggregate_type = ANY($5)");
        let read = plan(&store, mode, sql, origin, Some(LIMIT), &both).await;
        assert_reads_on(
            &read,
            "events_type_order",
            limit,
            &format!("both kinds, {mode}"),
        );
    }

    // A subscription near the head (the last 5% of the log left): its lag is counted on the
    // filtered column's index, whatever the log before its checkpoint holds.
    let near_head = checkpoint_at(&store, EVENTS * 95 / 100 - 1).await;
    let count = plan(
        &store,
        "auto",
        filtered_count_query!("event_type", ""),
        near_head,
        None,
        &paid,
    )
    .await;
    assert_searches(&count, "events_type_order", "lag by type");
    let count = plan(
        &store,
        "auto",
        filtered_count_query!("aggregate_type", ""),
        near_head,
        None,
        &customers,
    )
    .await;
    assert_searches(&count, "events_category_order", "lag by aggregate type");
    for (filter, total) in [(&paid, EVENTS / 100), (&customers, EVENTS / 50)] {
        let counted = count_after(&store.pool, near_head, filter)
            .await
            .expect("count");
        assert_eq!(
            counted,
            u64::try_from(total / 20).expect("a count"),
            "{filter:?}"
        );
    }
    store.close().await;
    db.drop_it().await;
}

/// An append looks up its event ids (is any already stored?) on `events_id_key` even on a
/// connection whose first appends carried many ids each while the table was small: such a
/// connection once kept a generic plan that scanned the whole table, on every append, until
/// the next ANALYZE (migration 0012).
#[tokio::test]
async fn an_append_looks_up_its_ids_on_the_index_whatever_its_connection_planned_before() {
    let db = Database::create().await;
    let store = PgStore::connect(&db.url, StoreLimits::default())
        .await
        .expect("connect the store");
    let mut connection = PgConnection::connect(&db.url).await.expect("a connection");
    let append = async |connection: &mut PgConnection, stream: StreamId, events: usize| {
        let events: Vec<NewEvent> = (0..events)
            .map(|n| NewEvent::new("item.added", serde_json::json!({ "n": n })))
            .collect();
        let prepared = eventhost_domain::append::prepare(&stream, &events, store.limits())
            .expect("valid events");
        append_rows(connection, &stream, ExpectedVersion::NoStream, &prepared)
            .await
            .expect("append");
    };
    // Ten appends of 100 events each on a table of a few pages: enough calls for PostgreSQL
    // to weigh a generic plan for the function's statements.
    for n in 0..10 {
        append(
            &mut connection,
            StreamId::new("bulk", format!("b-{n}")),
            100,
        )
        .await;
    }
    fill(&store).await;

    // This connection's scans of the events table not yet reported to the statistics
    // (earlier appends' among them): the difference is the next append's.
    let scans = async |connection: &mut PgConnection| -> (i64, i64) {
        sqlx::query_as(
            "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
             WHERE relid = 'eventhost.events'::regclass",
        )
        .fetch_one(connection)
        .await
        .expect("this connection's scans of the events table")
    };
    let mut tx = connection.begin().await.expect("begin");
    let (seq_before, index_before) = scans(&mut *tx).await;
    append(&mut *tx, StreamId::new("item", "i-1"), 1).await;
    let (seq_after, index_after) = scans(&mut *tx).await;
    assert_eq!(
        seq_after - seq_before,
        0,
        "the append scanned the whole events table ({} index scans)",
        index_after - index_before
    );
    assert!(
        index_after > index_before,
        "the append looked up no id on an index"
    );
    tx.rollback().await.expect("roll back");
    connection.close().await.expect("close");
    store.close().await;
    db.drop_it().await;
}
