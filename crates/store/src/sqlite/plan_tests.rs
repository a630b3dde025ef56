//! The plans of the filtered subscription reads and lag counts on a large log: each name read
//! on the index that leads with its column, never the whole log walked or sorted.

use super::*;

const EVENTS: i64 = 50_000;

/// `EVENTS` events: 2% of aggregate type `customer`, the rest `order`; 1% `order.paid`, the
/// rest `order.line-added`; then fresh statistics.
async fn filled_store() -> SqliteStore {
    let store = SqliteStore::connect("sqlite::memory:", StoreLimits::default())
        .await
        .expect("an in-memory store");
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
         INSERT INTO events
             (id, aggregate_type, aggregate_id, version, event_type, payload, recorded_at)
         SELECT 'id-' || n, CASE WHEN n % 50 = 1 THEN 'customer' ELSE 'order' END, 'a-' || n, 1,
                CASE WHEN n % 100 = 0 THEN 'order.paid' ELSE 'order.line-added' END, '{}',
                '2026-01-01T00:00:00Z'
         FROM g",
    )
    .bind(EVENTS)
    .execute(&store.pool)
    .await
    .expect("fill the log");
    sqlx::query("ANALYZE")
        .execute(&store.pool)
        .await
        .expect("analyze");
    store
}

/// SQLite's plan for `sql` with the parameters `leading` and then the filter's names, one
/// line per step.
async fn plan(store: &SqliteStore, sql: &str, leading: &[i64], by_name: ByName<'_>) -> Vec<String> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
    for &parameter in leading {
        query = query.bind(parameter);
    }
    by_name
        .bind(query)
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|error| panic!("explain {sql}: {error}"))
        .iter()
        .map(|row| row.try_get::<String, _>("detail").expect("a plan step"))
        .collect()
}

/// Checks that every step that reads events searches `index` (each name's rows are then
/// cut to the limit: only they are sorted for the merge).
fn assert_reads_on(plan: &[String], index: &str, names: usize, what: &str) {
    let reads: Vec<&String> = plan
        .iter()
        .filter(|step| step.contains(" events ") || step.ends_with(" events"))
        .collect();
    assert_eq!(reads.len(), names, "{what}: {plan:#?}");
    for read in reads {
        assert!(
            read.starts_with("SEARCH events USING ") && read.contains(index),
            "{what}: {plan:#?}"
        );
    }
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

#[tokio::test]
async fn filtered_reads_and_counts_search_the_index_of_their_column() {
    let store = filled_store().await;
    let cases = [
        (
            filter(&[], &["order.paid"]),
            "events_type (event_type=? AND position>?)",
            1,
        ),
        (
            filter(&[], &["order.paid", "order.absent", "order.paid"]),
            "events_type (event_type=? AND position>?)",
            2,
        ),
        (
            filter(&["customer"], &[]),
            "events_category (aggregate_type=? AND position>?)",
            1,
        ),
        (
            filter(&["order"], &["order.paid"]),
            "events_type (event_type=? AND position>?)",
            1,
        ),
    ];
    for (filter, index, names) in cases {
        let by_name = ByName::of(&filter).unwrap().expect("a filter");
        let read = plan(&store, &by_name.batch_sql(), &[0, 100], by_name).await;
        assert_reads_on(&read, index, names, &format!("read {filter:?}"));
        let by_name = ByName::of(&filter).unwrap().expect("a filter");
        let count = plan(&store, &by_name.count_sql(), &[0], by_name).await;
        assert_reads_on(&count, index, names, &format!("count {filter:?}"));
    }
    let paid = count_after(&store.pool, 0, &filter(&[], &["order.paid", "order.paid"]))
        .await
        .expect("count");
    assert_eq!(paid, (EVENTS / 100) as u64);
}
