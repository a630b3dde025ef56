//! The status page in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`host/tests/browser/status-page.mjs`, its packages installed by `scripts/test.sh`), on the
//! real binary and PostgreSQL. The page asks for the token, shows a subscription's lag
//! reaching 0 after appends, replays a parked event on a click (the fixed plugin then counts
//! it once), pages through events, fits a phone's width and loads nothing from elsewhere.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::Path;
use std::time::Duration;

use api::ApiClient;
use daemon::{Deployment, TestDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "status-page-token-0123456789";
const SUBSCRIPTION: &str = "hostile-fail-on.all";

fn ten_items_one_poison() -> Value {
    let events: Vec<Value> = (0..10)
        .map(|n| {
            let payload = if n == 4 {
                json!({"n": n, "poison": true})
            } else {
                json!({"n": n})
            };
            json!({"aggregate_type": "item", "aggregate_id": format!("i-{n}"), "event_type": "item.added", "payload": payload})
        })
        .collect();
    json!({ "events": events })
}

#[tokio::test]
async fn the_status_page_shows_lag_and_replays_a_parked_event_in_chromium() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/test.sh does)",
        browser.display()
    );
    let database = TestDatabase::postgres().await;
    let mut deployment = Deployment::new(database.url());
    deployment.env("EVENTHOST_API_TOKEN", TOKEN);
    deployment.install("hostile/hostile-fail-on.wasm", "hostile-fail-on.wasm");
    let mut daemon = deployment.start(&["--max-attempts", "2"]);
    let base = daemon.api().await;
    let api = ApiClient::new(&base).with_token(TOKEN);
    let appended = api.post("/v1/events", &ten_items_one_poison()).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{:?}", appended.body);
    daemon
        .wait_until("one parked event", Duration::from_secs(30), || async {
            match api.get("/v1/parked").await.body["parked"]
                .as_array()
                .map(Vec::len)
            {
                Some(1) => Ok(()),
                other => Err(format!("{other:?} parked")),
            }
        })
        .await;
    deployment.install("hostile/hostile-fail-on-fixed.wasm", "hostile-fail-on.wasm");
    daemon
        .wait_for_log("plugin running", 2, Duration::from_secs(60))
        .await;

    // The page's files come from the binary, under a policy that allows nothing else.
    let index = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    let policy = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");

    let run = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg("status-page.mjs")
            .args([base.as_str(), TOKEN, SUBSCRIPTION])
            .current_dir(&browser)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finishes within 2 minutes")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser run failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(stdout.contains("status page ok"), "{stdout}");

    // What the click did: the fixed plugin handled the parked event, once.
    let state = api
        .get(&format!(
            "/v1/subscriptions/{SUBSCRIPTION}/state?prefix=count"
        ))
        .await;
    assert_eq!(state.body["entries"][0]["value"], 60, "{:?}", state.body);
    assert_eq!(api.get("/v1/parked").await.body["parked"], json!([]));
    daemon.stop().await;
}
