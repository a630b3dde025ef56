//! The daemon's HTTP API, through the real binary on PostgreSQL and SQLite: appends with
//! expected versions, idempotent retries and conflicts, paged reads of a stream, a category
//! and all events, the daemon's plugins reacting to what HTTP appended, bad requests refused
//! with one JSON error and nothing written, tokens and scopes, and start-up refusals.

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

const WAIT: Duration = Duration::from_secs(30);

/// Waits until `/health/ready` says ready.
async fn until_ready(daemon: &mut Daemon, api: &ApiClient) {
    daemon
        .wait_until(
            "the daemon to be ready",
            Duration::from_secs(30),
            || async {
                let reply = api.get("/health/ready").await;
                if reply.status == StatusCode::OK {
                    Ok(())
                } else {
                    Err(reply.body.to_string())
                }
            },
        )
        .await;
}

fn ids(reply: &api::Reply, field: &str) -> Vec<u64> {
    reply.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {}", reply.body))
        .iter()
        .map(|event| event[field].as_u64().unwrap())
        .collect()
}

async fn append_and_read(database: TestDatabase) {
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut daemon = deployment.start(&[]);
    let api = ApiClient::new(&daemon.api().await);
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);
    until_ready(&mut daemon, &api).await;

    // Two events to a new stream, with ids: created.
    let first = json!({
        "expected_version": "no-stream",
        "events": [
            {"event_type": "order.created", "payload": {"total": 5}, "id": "0190a1b2-0000-7000-8000-000000000001"},
            {"event_type": "order.paid", "payload": {}, "metadata": {"by": "http"}, "id": "0190a1b2-0000-7000-8000-000000000002"},
        ],
    });
    let created = api.post("/v1/streams/order/o-1/events", &first).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["duplicate"], false);
    assert_eq!(ids(&created, "version"), [1, 2]);
    let positions = ids(&created, "position");

    // The same request again is a retry: nothing written, the stored events returned.
    let retried = api.post("/v1/streams/order/o-1/events", &first).await;
    assert_eq!(retried.status, StatusCode::OK, "{:?}", retried.body);
    assert_eq!(retried.body["duplicate"], true);
    assert_eq!(ids(&retried, "position"), positions);

    // A stale expected version is a conflict naming both versions.
    let stale = json!({"expected_version": 1, "events": [{"event_type": "order.shipped"}]});
    let conflict = api.post("/v1/streams/order/o-1/events", &stale).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{:?}", conflict.body);
    assert_eq!(conflict.code(), "version_conflict");
    assert!(
        conflict.message().contains("expected 1, actual 2"),
        "{}",
        conflict.message()
    );

    // Several streams at once: all or nothing, the refused event named.
    let lines = json!({"events": [
        {"aggregate_type": "order", "aggregate_id": "o-2", "event_type": "order.created", "payload": {}},
        {"aggregate_type": "order", "aggregate_id": "o-1", "event_type": "order.created", "payload": {}, "expected_version": "no-stream"},
    ]});
    let refused = api.post("/v1/events", &lines).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert!(
        refused.message().starts_with("events[1]: "),
        "{}",
        refused.message()
    );
    let o2 = api.get("/v1/streams/order/o-2/events").await;
    assert_eq!(
        o2.body["events"],
        json!([]),
        "nothing of the refused append"
    );
    let lines = json!({"events": [
        {"aggregate_type": "order", "aggregate_id": "o-2", "event_type": "order.created", "payload": {}},
        {"aggregate_type": "invoice", "aggregate_id": "i-1", "event_type": "invoice.issued", "payload": {"n": 1}},
    ]});
    let both = api.post("/v1/events", &lines).await;
    assert_eq!(both.status, StatusCode::CREATED, "{:?}", both.body);

    // Reads, page by page, each page saying where the next starts.
    let page = api.get("/v1/streams/order/o-1/events?limit=1").await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(ids(&page, "version"), [1]);
    assert_eq!(page.body["events"][0]["payload"], json!({"total": 5}));
    assert_eq!(page.body["next_after"], 1);
    let page = api
        .get("/v1/streams/order/o-1/events?after=1&limit=5")
        .await;
    assert_eq!(ids(&page, "version"), [2]);
    assert_eq!(page.body["events"][0]["metadata"], json!({"by": "http"}));
    let past = api.get("/v1/streams/order/o-1/events?after=3").await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST, "{:?}", past.body);

    let all = api.get("/v1/events?limit=3").await;
    assert_eq!(all.body["events"].as_array().unwrap().len(), 3);
    let next = all.body["next_after"].as_u64().unwrap();
    let rest = api.get(&format!("/v1/events?after={next}")).await;
    assert_eq!(rest.status, StatusCode::OK, "{:?}", rest.body);
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["events"][0]["aggregate_type"], "invoice");
    let orders = api.get("/v1/categories/order/events").await;
    assert_eq!(ids(&orders, "version"), [1, 2, 1]);

    // A position no event of this database has: refused, not an empty page.
    let foreign = api.get("/v1/events?after=999999").await;
    assert_eq!(
        foreign.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        foreign.body
    );
    assert!(
        foreign.message().contains("999999"),
        "{}",
        foreign.message()
    );

    // The command line reads what HTTP appended, and the daemon's plugin handled it.
    let read = deployment.cli_ok(&["read", "all"]).await.json_lines();
    assert_eq!(read.len(), 4);
    assert_eq!(
        read,
        all.body["events"].as_array().unwrap()[..3]
            .iter()
            .chain(rest.body["events"].as_array().unwrap())
            .cloned()
            .collect::<Vec<Value>>()
    );
    daemon.until_counted(&deployment, 4).await;
    daemon.stop().await;
}

#[tokio::test]
async fn postgres_append_and_read_over_http() {
    append_and_read(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_append_and_read_over_http() {
    append_and_read(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn bad_requests_get_one_json_error_and_write_nothing() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let config = deployment.config("[http]\nmax_body_bytes = 4096\n");
    let mut daemon = deployment.start(&["--config", &config]);
    let api = ApiClient::new(&daemon.api().await);
    until_ready(&mut daemon, &api).await;
    let stream = "/v1/streams/order/o-1/events";

    let cases: Vec<(api::Reply, StatusCode, &str, &str)> = vec![
        (
            api.post_raw(stream, "application/json", b"{\"events\": [".to_vec()).await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "EOF",
        ),
        (
            api.post_raw(stream, "text/plain", b"{}".to_vec()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            api.post_raw(stream, "application/json", vec![b' '; 5000]).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "",
        ),
        (
            api.post(stream, &json!({"events": [{"event_type": "a", "colour": 1}]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "colour",
        ),
        (
            api.post(stream, &json!({"events": [{"payload": {}}]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "event_type",
        ),
        (
            api.post(stream, &json!([[{"event_type": "a"}]])).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "JSON object",
        ),
        (
            api.post("/v1/subscriptions/counter.all/reset", &json!([])).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "JSON object",
        ),
        (
            api.post(stream, &json!({"events": []})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "at least one event",
        ),
        (
            api.post(stream, &json!({"expected_version": -1, "events": [{"event_type": "a"}]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "expected_version",
        ),
        (
            api.post(stream, &json!({"events": [{"event_type": "a\u{0}b"}]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "NUL",
        ),
        (
            api.post("/v1/events", &json!({"events": [{"aggregate_type": "a", "aggregate_id": "", "event_type": "b", "payload": 1}]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "events[0]",
        ),
        (
            api.get("/v1/events?limit=-1").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "limit",
        ),
        (
            api.get("/v1/events?limit=1000000").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "limit",
        ),
        (
            api.get("/v1/events?after=99999999999999999999").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "after",
        ),
        (
            api.get("/v1/parked?subscription=a%00b").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "NUL",
        ),
        (
            api.get("/v1/categories/a%00b/events").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "NUL",
        ),
        (
            api.post("/v1/parked/replay", &json!({"subscription": "a\u{0}b"})).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "NUL",
        ),
        (
            api.get("/v1/nothing-here").await,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ),
        (
            api.request(reqwest::Method::DELETE, "/v1/events").await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "",
        ),
    ];
    for (reply, status, code, mentions) in cases {
        assert_eq!(reply.status, status, "{:?}", reply.body);
        assert_eq!(reply.code(), code, "{:?}", reply.body);
        assert!(reply.message().contains(mentions), "{:?}", reply.body);
    }
    let all = api.get("/v1/events").await;
    assert_eq!(all.body["events"], json!([]), "nothing written");
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);
    daemon.assert_running();
    daemon.stop().await;
}

#[tokio::test]
async fn tokens_and_scopes_guard_every_route_but_health() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.env("EVENTHOST_API_TOKEN", "admin-secret-0123456789");
    deployment.env("READER_TOKEN", "reader-secret-0123456789");
    let config = deployment
        .config("[http.tokens.reader]\nscopes = [\"read\"]\nsecret_env = \"READER_TOKEN\"\n");
    let mut daemon = deployment.start(&["--config", &config]);
    let open = ApiClient::new(&daemon.api().await);
    until_ready(&mut daemon, &open).await;
    let admin = open.with_token("admin-secret-0123456789");
    let reader = open.with_token("reader-secret-0123456789");
    let append = json!({"events": [{"event_type": "order.created"}]});

    let missing = open.get("/v1/events").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.code(), "unauthorized");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let wrong = open
        .with_token("admin-secret-0123456780")
        .get("/v1/events")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        open.post("/v1/streams/order/o-1/events", &append)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let refused = reader.post("/v1/streams/order/o-1/events", &append).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert!(
        refused.message().contains("`append`"),
        "{}",
        refused.message()
    );
    assert_eq!(reader.get("/v1/events").await.body["events"], json!([]));

    let created = admin.post("/v1/streams/order/o-1/events", &append).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let read = reader.get("/v1/events").await;
    assert_eq!(read.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(open.get("/health/live").await.status, StatusCode::OK);
    assert!(
        !daemon.log().contains("admin-secret-0123456789"),
        "a token's secret is never logged"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_network_address_without_a_token_or_one_in_use_stops_start_up() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let mut open = deployment.start(&["--http", "0.0.0.0:0"]);
    let status = open.exit_status(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        open.log()
            .contains("refusing to serve the HTTP API on 0.0.0.0:0 without a token"),
        "{}",
        open.log()
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut clash = deployment.start(&["--http", &address]);
    let status = clash.exit_status(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        clash
            .log()
            .contains(&format!("cannot listen on {address} for the HTTP API")),
        "{}",
        clash.log()
    );

    let bad = deployment
        .cli(&["run", "--http", "localhost", "--plugins", "nowhere"])
        .await;
    assert_eq!(bad.status.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("or `off`"), "{bad}");

    let mut off = deployment.start(&["--http", "off"]);
    off.wait_for_log("eventhost is running", 1, Duration::from_secs(30))
        .await;
    assert!(!off.log().contains("HTTP API listening"));
    off.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_a_subscription_lags_past_its_limit() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let config = deployment.config("[http]\nready_max_lag_seconds = 1\n");
    // A plugin that loops until its time limit: its batch is retried for minutes, and its
    // subscription lags meanwhile.
    deployment.install("hostile/hostile-loop.wasm", "hostile-loop.wasm");
    deployment.sidecar("hostile-loop.wasm", "[limits]\ntime_per_batch_ms = 100\n");
    let mut daemon = deployment.start(&["--config", &config, "--max-attempts", "100"]);
    let api = ApiClient::new(&daemon.api().await);
    until_ready(&mut daemon, &api).await;
    let event = json!({"events": [{"event_type": "item.added"}]});
    let appended = api.post("/v1/streams/item/i-1/events", &event).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{:?}", appended.body);
    let position = appended.body["events"][0]["position"].as_u64().unwrap();
    daemon
        .wait_until("the lag to make the daemon unready", WAIT, || async {
            let reply = api.get("/health/ready").await;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE
                && reply.body["lagging"] == json!(["hostile-loop.all"])
            {
                Ok(())
            } else {
                Err(format!("{} {}", reply.status, reply.body))
            }
        })
        .await;
    // Skipping the event ends the lag: ready again.
    let reset = api
        .post(
            "/v1/subscriptions/hostile-loop.all/reset",
            &json!({ "to": position }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    until_ready(&mut daemon, &api).await;
    daemon.stop().await;
}

#[tokio::test]
async fn cors_headers_go_to_configured_origins_only() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    let config = deployment.config("[http]\ncors_origins = [\"https://ops.example.com\"]\n");
    let mut daemon = deployment.start(&["--config", &config]);
    let base = daemon.api().await;
    let api = ApiClient::new(&base);
    until_ready(&mut daemon, &api).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/events"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let read = client
        .get(format!("{base}/v1/events"))
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    daemon.stop().await;

    // Without the setting, no origin gets a CORS header.
    let mut plain = deployment.start(&[]);
    let base = plain.api().await;
    let read = client
        .get(format!("{base}/v1/events"))
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert!(read.headers().get("access-control-allow-origin").is_none());
    plain.stop().await;
}
