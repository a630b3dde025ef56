//! `/metrics` after known work, through the real binary on PostgreSQL and SQLite: events
//! appended over HTTP, batches and handled events by subscription, a parked event, lag in
//! events and seconds of a subscription whose plugin is gone, plugin instantiation and
//! memory, HTTP requests by route and status; on PostgreSQL the age of the oldest writing
//! transaction of the cluster.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use api::ApiClient;
use daemon::{Deployment, TestDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

fn must(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

fn items(n: usize, poison: Option<usize>) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let mut payload = json!({"n": i});
            if poison == Some(i) {
                payload["poison"] = json!(true);
            }
            json!({"aggregate_type": "item", "aggregate_id": format!("i-{i}"), "event_type": "item.added", "payload": payload})
        })
        .collect();
    json!({ "events": events })
}

async fn metrics_after_known_work(database: TestDatabase) {
    let postgres = matches!(database, TestDatabase::Postgres(_));
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    deployment.install("hostile/hostile-fail-on.wasm", "hostile-fail-on.wasm");
    let mut daemon = deployment.start(&["--max-attempts", "2"]);
    let api = ApiClient::new(&daemon.api().await);
    let appended = api.post("/v1/events", &items(10, Some(4))).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{:?}", appended.body);
    daemon.until_counted(&deployment, 10).await;
    daemon
        .wait_until("one parked event", Duration::from_secs(30), || async {
            match deployment.parked().await.len() {
                1 => Ok(()),
                n => Err(format!("{n} parked")),
            }
        })
        .await;

    let scraped = api.get("/metrics").await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(
        scraped.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = scraped
        .body
        .as_str()
        .expect("the metrics are text")
        .to_owned();
    let counter = [("subscription", "counter.all")];
    let failing = [("subscription", "hostile-fail-on.all")];
    assert_eq!(
        must(
            &text,
            "eventhost_events_appended_total",
            &[("source", "http")]
        ),
        10.0
    );
    assert_eq!(
        must(&text, "eventhost_events_handled_total", &counter),
        10.0
    );
    assert!(
        must(
            &text,
            "eventhost_batches_total",
            &[("subscription", "counter.all"), ("outcome", "committed")]
        ) >= 1.0
    );
    assert!(
        must(
            &text,
            "eventhost_batches_total",
            &[
                ("subscription", "hostile-fail-on.all"),
                ("outcome", "failed")
            ]
        ) >= 1.0
    );
    assert!(must(&text, "eventhost_batch_duration_seconds_count", &counter) >= 1.0);
    assert!(
        must(
            &text,
            "eventhost_batch_duration_seconds_bucket",
            &[("subscription", "counter.all"), ("le", "+Inf")]
        ) >= 1.0
    );
    assert_eq!(must(&text, "eventhost_events_parked_total", &failing), 1.0);
    assert_eq!(must(&text, "eventhost_parked_events", &failing), 1.0);
    assert_eq!(must(&text, "eventhost_parked_events", &counter), 0.0);
    assert!(must(&text, "eventhost_parked_oldest_age_seconds", &failing) >= 0.0);
    assert_eq!(
        must(&text, "eventhost_subscription_lag_events", &counter),
        0.0
    );
    assert_eq!(
        must(&text, "eventhost_subscription_lag_seconds", &counter),
        0.0
    );
    assert!(
        must(
            &text,
            "eventhost_plugin_instantiation_seconds_count",
            &[("plugin", "counter")]
        ) >= 1.0
    );
    assert!(
        must(
            &text,
            "eventhost_plugin_memory_high_water_bytes",
            &[("plugin", "counter")]
        ) >= 65536.0
    );
    assert_eq!(
        must(
            &text,
            "eventhost_http_requests_total",
            &[
                ("route", "/v1/events"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(text.contains("# HELP eventhost_batches_total"), "{text}");

    // A subscription whose plugin is gone lags by what is appended since, and by its age.
    std::fs::remove_file(deployment.plugin_path("counter.wasm")).unwrap();
    daemon
        .wait_for_log("plugin file removed", 1, Duration::from_secs(30))
        .await;
    let one = api.post("/v1/events", &items(1, None)).await;
    assert_eq!(one.status, StatusCode::CREATED, "{:?}", one.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = api.get("/metrics").await.body.as_str().unwrap().to_owned();
    assert_eq!(
        must(&text, "eventhost_subscription_lag_events", &counter),
        1.0
    );
    assert!(must(&text, "eventhost_subscription_lag_seconds", &counter) >= 1.0);
    assert_eq!(
        must(
            &text,
            "eventhost_events_appended_total",
            &[("source", "http")]
        ),
        11.0
    );
    let unknown = api.get("/v1/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let text = api.get("/metrics").await.body.as_str().unwrap().to_owned();
    assert_eq!(
        must(
            &text,
            "eventhost_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );

    if postgres {
        assert!(
            sample(
                &text,
                "eventhost_postgres_oldest_transaction_age_seconds",
                &[]
            )
            .is_some()
        );
        // A transaction that has written holds back reads: its age shows.
        let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
        let mut transaction = connection.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *transaction)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = api.get("/metrics").await.body.as_str().unwrap().to_owned();
        assert!(
            must(
                &text,
                "eventhost_postgres_oldest_transaction_age_seconds",
                &[]
            ) >= 1.0,
            "{text}"
        );
        transaction.rollback().await.unwrap();
    } else {
        assert_eq!(
            sample(
                &text,
                "eventhost_postgres_oldest_transaction_age_seconds",
                &[]
            ),
            None
        );
    }
    daemon.stop().await;
}

#[tokio::test]
async fn postgres_metrics_after_known_work() {
    metrics_after_known_work(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_metrics_after_known_work() {
    metrics_after_known_work(TestDatabase::sqlite()).await;
}
