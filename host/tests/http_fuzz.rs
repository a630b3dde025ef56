//! Property-based fuzzing of the HTTP API from its own OpenAPI document: schemathesis
//! (from PyPI; `scripts/test.sh` installs it into the tools virtualenv) generates valid and
//! invalid requests for every operation the document describes, against the real binary on
//! PostgreSQL, for a bounded number of examples. Every check must hold: no 5xx, every
//! status and body as documented, invalid data refused, authentication enforced. Afterwards
//! the daemon still serves, and every stream's versions run 1, 2, 3... without a gap:
//! nothing a refused request sent was half-written.
//!
//! One check is left out: `positive_data_acceptance`, which expects every schema-valid
//! request to succeed. Some refusals depend on the store's state or rules a schema cannot
//! state (a position no event has, a name over 1024 bytes, a NUL character, a parked id that
//! does not exist), and are correct.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use api::ApiClient;
use daemon::{Deployment, TestDatabase};
use reqwest::StatusCode;

const TOKEN: &str = "fuzzing-token-0123456789";
/// Examples per operation and phase: enough to find what the earlier runs found, within a
/// minute or two.
const EXAMPLES: &str = "25";

fn schemathesis() -> PathBuf {
    let tools = std::env::var_os("EVENTHOST_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/eventhost-tools")
        },
        PathBuf::from,
    );
    let path = tools.join("python/bin/schemathesis");
    assert!(
        path.is_file(),
        "schemathesis is not installed at {}: run scripts/test.sh (it installs host/tests/fuzz/requirements.txt)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_api_holds_under_schema_driven_fuzzing() {
    let schemathesis = schemathesis();
    let database = TestDatabase::postgres().await;
    let mut deployment = Deployment::new(database.url());
    deployment.env("EVENTHOST_API_TOKEN", TOKEN);
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut daemon = deployment.start(&[]);
    let base = daemon.api().await;
    let api = ApiClient::new(&base).with_token(TOKEN);
    daemon
        .wait_until(
            "the daemon to be ready",
            Duration::from_secs(30),
            || async {
                match api.get("/health/ready").await.status {
                    StatusCode::OK => Ok(()),
                    status => Err(status.to_string()),
                }
            },
        )
        .await;

    let run = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&schemathesis)
            .args(["run", &format!("{base}/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--checks", "all"])
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", EXAMPLES])
            .arg("--no-color")
            // Its crash cache goes to the working directory: the deployment's, not the tree.
            .current_dir(deployment.path(""))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the fuzzing run ends within 10 minutes")
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        run.status
    );

    // Still serving, and every stream gap-free.
    daemon.assert_running();
    assert_eq!(api.get("/health/ready").await.status, StatusCode::OK);
    // Each stream's versions are unique (a constraint), so a stream whose highest version
    // equals its number of events runs 1, 2, 3... without a gap.
    let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
    let streams: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (aggregate_type, aggregate_id)) FROM eventhost.events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let gapped: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id FROM eventhost.events
         GROUP BY aggregate_type, aggregate_id HAVING max(version) <> count(*)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(gapped.is_empty(), "streams with a gap: {gapped:?}");
    eprintln!("{streams} streams written by the fuzzer, none with a gap");
    daemon.stop().await;
}
