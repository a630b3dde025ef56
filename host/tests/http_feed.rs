//! The live feed (`GET /v1/feed`, Server-Sent Events) through the real binary on PostgreSQL
//! and SQLite: a client that drops its connection and resumes with `Last-Event-ID` misses
//! nothing and gets nothing twice; new events arrive live; filters and `from=now` apply; on
//! PostgreSQL an event committed after a later one still comes first (the gap-free order);
//! bad or foreign ids are refused; the daemon's stop ends open feeds; the cap on feeds holds.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use api::{ApiClient, FeedEvent};
use daemon::{Deployment, TestDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

const WAIT: Duration = Duration::from_secs(10);

fn events(aggregate_type: &str, ids: std::ops::Range<usize>) -> Value {
    let events: Vec<Value> = ids
        .map(|i| json!({"aggregate_type": aggregate_type, "aggregate_id": format!("{aggregate_type}-{i}"), "event_type": "x.happened", "payload": {"i": i}}))
        .collect();
    json!({ "events": events })
}

async fn append(api: &ApiClient, body: &Value) {
    let reply = api.post("/v1/events", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

fn positions(events: &[FeedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event.data["position"].as_u64().unwrap())
        .collect()
}

async fn resume_without_loss_or_repeat(database: TestDatabase) {
    let postgres = matches!(database, TestDatabase::Postgres(_));
    let mut deployment = Deployment::new(database.url());
    let mut daemon = deployment.start(&[]);
    let api = ApiClient::new(&daemon.api().await);
    append(&api, &events("item", 0..5)).await;

    // Three events, then the connection drops; three more are appended meanwhile.
    let mut feed = api.feed("/v1/feed", None).await;
    let first = feed.take(3, WAIT).await;
    drop(feed);
    append(&api, &events("item", 5..8)).await;
    let last_seen = first[2].id.clone();
    let mut feed = api.feed("/v1/feed", Some(&last_seen)).await;
    let rest = feed.take(5, WAIT).await;
    let all: Vec<FeedEvent> = first.iter().chain(&rest).cloned().collect();
    let listed = api.get("/v1/events?limit=100").await.body["events"].clone();
    let listed: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions(&all), listed, "every event once, in order");
    assert_eq!(all[7].data["payload"], json!({"i": 7}));
    assert_eq!(all[0].event, None);

    // Live: an event appended now arrives on the open feed.
    append(&api, &events("item", 8..9)).await;
    let live = feed.take(1, WAIT).await;
    assert_eq!(live[0].data["aggregate_id"], "item-8");

    // Filters and `from=now`.
    let mut orders = api.feed("/v1/feed?aggregate_type=order", None).await;
    let mut later = api.feed("/v1/feed?from=now", None).await;
    append(&api, &events("order", 0..2)).await;
    let got = orders.take(2, WAIT).await;
    assert!(
        got.iter()
            .all(|event| event.data["aggregate_type"] == "order")
    );
    let got = later.take(2, WAIT).await;
    assert_eq!(got[0].data["aggregate_id"], "order-0");
    let got = feed.take(2, WAIT).await;
    assert_eq!(got[1].data["aggregate_id"], "order-1");

    if postgres {
        // An event whose transaction began first comes first, even when it commits after
        // a later one: the later one waits.
        let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
        let mut transaction = connection.begin().await.unwrap();
        sqlx::query("SELECT * FROM eventhost.append('slow', 's-1', NULL, '[{\"event_type\": \"x.happened\", \"payload\": {}}]'::jsonb)")
            .execute(&mut *transaction)
            .await
            .unwrap();
        append(&api, &events("fast", 0..1)).await;
        assert!(
            feed.next(Duration::from_millis(700)).await.is_none(),
            "nothing passes the open transaction's event"
        );
        transaction.commit().await.unwrap();
        let got = feed.take(2, WAIT).await;
        let streams: Vec<&str> = got
            .iter()
            .map(|event| event.data["aggregate_type"].as_str().unwrap())
            .collect();
        assert_eq!(streams, ["slow", "fast"]);
    }

    // Refusals: not an id, an id of no event here, an unknown start.
    for (last_event_id, path) in [
        (Some("yesterday"), "/v1/feed"),
        (Some("0:987654321"), "/v1/feed"),
        (None, "/v1/feed?from=yesterday"),
        (None, "/v1/feed?after=12"),
    ] {
        let mut request = reqwest::Client::new().get(format!("{}{path}", api.base));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(
            reply.status(),
            StatusCode::BAD_REQUEST,
            "{path} {last_event_id:?}"
        );
    }

    // The daemon's stop ends the open feeds, and does not wait for them.
    let (status, took) = daemon.stop_with("TERM", Duration::from_secs(10)).await;
    assert!(status.success());
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    assert!(feed.ended(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn postgres_feed_resumes_without_loss_or_repeat() {
    resume_without_loss_or_repeat(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_feed_resumes_without_loss_or_repeat() {
    resume_without_loss_or_repeat(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn feeds_over_the_cap_are_refused() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let config = deployment.config("[http]\nmax_feeds = 1\n");
    let mut daemon = deployment.start(&["--config", &config]);
    let api = ApiClient::new(&daemon.api().await);
    let first = api.feed("/v1/feed", None).await;
    let refused = api.get("/v1/feed").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.code(), "too_many_feeds");
    drop(first);
    daemon
        .wait_until("the feed's slot to free", WAIT, || async {
            let reply = reqwest::Client::new()
                .get(format!("{}/v1/feed", api.base))
                .send()
                .await
                .map_err(|error| error.to_string())?;
            match reply.status() {
                StatusCode::OK => Ok(()),
                status => Err(status.to_string()),
            }
        })
        .await;
    daemon.stop().await;
}
