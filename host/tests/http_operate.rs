//! Operating the daemon over HTTP, through the real binary on PostgreSQL and SQLite: the
//! API's subscriptions, parked events and plugins are what the command line lists (one
//! library call serves both); replaying a parked event after deploying the fixed plugin, a
//! reset with cleared state and a skip work as their commands do; unknown names are 404,
//! and only an admin token may act.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use api::ApiClient;
use daemon::{Daemon, Deployment, TestDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SUBSCRIPTION: &str = "hostile-fail-on.all";
const PLUGIN_FILE: &str = "hostile-fail-on.wasm";
const ADMIN: &str = "admin-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

/// Ten events of `item/i-<n>`; the fifth carries `poison`, which the failing plugin refuses.
fn ten_events_one_poison() -> Value {
    let events: Vec<Value> = (0..10)
        .map(|n| {
            json!({
                "aggregate_type": "item",
                "aggregate_id": format!("i-{n}"),
                "event_type": "item.added",
                "payload": if n == 4 { json!({"n": n, "poison": true}) } else { json!({"n": n}) },
            })
        })
        .collect();
    json!({ "events": events })
}

/// The plugin's count (its state entry `count`), through the API; an error while the
/// subscription is not defined yet (the daemon serves its API before its plugins load).
async fn count(api: &ApiClient) -> Result<u64, String> {
    let reply = api
        .get(&format!(
            "/v1/subscriptions/{SUBSCRIPTION}/state?prefix=count"
        ))
        .await;
    if reply.status != StatusCode::OK {
        return Err(format!("state: {} {:?}", reply.status, reply.body));
    }
    Ok(reply.body["entries"]
        .as_array()
        .and_then(|entries| entries.first())
        .map_or(0, |entry| {
            entry["value"]
                .as_u64()
                .or_else(|| entry["value"].as_str().and_then(|text| text.parse().ok()))
                .unwrap_or_else(|| panic!("count is not a number: {entry}"))
        }))
}

/// Waits until the API shows `counted` events counted, lag 0 and `parked` parked events.
async fn settle(daemon: &mut Daemon, api: &ApiClient, counted: u64, parked: usize) {
    let what = format!("count {counted}, lag 0, {parked} parked");
    daemon
        .wait_until(&what, Duration::from_secs(30), || async {
            let subscriptions = api.get("/v1/subscriptions").await.body;
            let lag = subscriptions["subscriptions"]
                .as_array()
                .and_then(|list| list.iter().find(|s| s["name"] == SUBSCRIPTION))
                .map(|s| s["lag"].as_u64().unwrap_or(u64::MAX));
            let seen = (
                count(api).await?,
                lag,
                api.get("/v1/parked").await.body["parked"]
                    .as_array()
                    .map_or(0, Vec::len),
            );
            if seen == (counted, Some(0), parked) {
                Ok(())
            } else {
                Err(format!("(count, lag, parked) = {seen:?}"))
            }
        })
        .await;
}

async fn operate(database: TestDatabase) {
    let mut deployment = Deployment::new(database.url());
    deployment.env("EVENTHOST_API_TOKEN", ADMIN);
    deployment.env("READER_TOKEN", READER);
    let config = deployment
        .config("[http.tokens.reader]\nscopes = [\"read\"]\nsecret_env = \"READER_TOKEN\"\n");
    deployment.install("hostile/hostile-fail-on.wasm", PLUGIN_FILE);
    let mut daemon = deployment.start(&["--config", &config, "--max-attempts", "2"]);
    let base = daemon.api().await;
    let admin = ApiClient::new(&base).with_token(ADMIN);
    let reader = ApiClient::new(&base).with_token(READER);
    let appended = admin.post("/v1/events", &ten_events_one_poison()).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{:?}", appended.body);
    settle(&mut daemon, &reader, 9, 1).await;

    // The API lists what the command line lists.
    let parked = reader.get("/v1/parked").await.body["parked"].clone();
    assert_eq!(parked.as_array().unwrap(), &deployment.parked().await);
    let entry = parked[0].clone();
    assert_eq!(entry["subscription"], SUBSCRIPTION);
    assert!(entry["error"].as_str().unwrap().contains("poison event"));
    let listed = reader.get("/v1/subscriptions").await.body["subscriptions"].clone();
    let from_cli = deployment.subscriptions().await;
    assert_eq!(listed.as_array().unwrap().len(), from_cli.len());
    for (api_view, cli_view) in listed.as_array().unwrap().iter().zip(&from_cli) {
        for field in [
            "name",
            "plugin",
            "checkpoint",
            "position",
            "lag",
            "parked",
            "status",
        ] {
            assert_eq!(api_view[field], cli_view[field], "{field}");
        }
    }
    let poisoned = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|view| view["name"] == SUBSCRIPTION)
        .expect("the poisoned subscription is listed");
    assert_eq!(poisoned["parked"], 1, "its parked event is counted");
    let table = deployment.cli_ok(&["subscriptions", "list"]).await.stdout;
    let header = table.lines().next().unwrap_or_default();
    let row = table
        .lines()
        .find(|line| line.starts_with(SUBSCRIPTION))
        .unwrap_or_default();
    let column: Vec<&str> = header.split_whitespace().collect();
    let at = column.iter().position(|name| *name == "PARKED");
    assert_eq!(
        at.and_then(|at| row.split_whitespace().nth(at)),
        Some("1"),
        "a PARKED column: {table}"
    );
    let plugins = reader.get("/v1/plugins").await.body["plugins"].clone();
    assert_eq!(plugins[0]["name"], "hostile-fail-on");
    assert_eq!(plugins[0]["status"], "running");
    let only = reader
        .get(&format!("/v1/parked?subscription={SUBSCRIPTION}"))
        .await;
    assert_eq!(only.body["parked"], parked);
    let none = reader.get("/v1/parked?subscription=nope.none").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{:?}", none.body);
    assert_eq!(none.message(), "subscription \"nope.none\" not found");

    // Acting needs the admin scope; unknown ids and names are 404, bad ones 400.
    let id = entry["id"].as_i64().unwrap();
    let refused = reader.post_empty(&format!("/v1/parked/{id}/replay")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let unknown = admin.post_empty("/v1/parked/424242/replay").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    assert_eq!(unknown.message(), "parked event 424242 not found");
    let unknown = admin.post_empty("/v1/parked/424242/skip").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    let bad = admin.post_empty("/v1/parked/four/replay").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    let unknown = admin
        .post("/v1/subscriptions/nope.none/reset", &json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    let unknown = reader.get("/v1/subscriptions/nope.none/state").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    let bad = reader.get("/v1/deliveries?status=lost").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    assert_eq!(
        reader.get("/v1/deliveries").await.body["deliveries"],
        json!([])
    );

    // The fix deployed, the parked event replayed: counted once, no longer parked.
    deployment.install("hostile/hostile-fail-on-fixed.wasm", PLUGIN_FILE);
    daemon
        .wait_for_log("plugin running", 2, Duration::from_secs(60))
        .await;
    let replayed = admin.post_empty(&format!("/v1/parked/{id}/replay")).await;
    assert_eq!(replayed.status, StatusCode::OK, "{:?}", replayed.body);
    assert_eq!(replayed.body["changed"], 1);
    settle(&mut daemon, &reader, 10, 0).await;

    // A reset with cleared state rebuilds the count from the beginning.
    let reset = admin
        .post(
            &format!("/v1/subscriptions/{SUBSCRIPTION}/reset"),
            &json!({"to": 0, "clear_state": true}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    assert_eq!(reset.body["position"], 0);
    settle(&mut daemon, &reader, 10, 0).await;
    daemon.stop().await;
}

#[tokio::test]
async fn postgres_operate_over_http() {
    operate(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_operate_over_http() {
    operate(TestDatabase::sqlite()).await;
}
