//! A transaction left open holds back, on PostgreSQL, every event committed after it began
//! (the store's ordering rule: nothing committed later may be read before it), for every
//! subscription. Nothing is lost, and the daemon says why it waits: its log names the
//! transaction once it has held events back for `--held-back-warning`, `subscriptions list`
//! shows the subscriptions waiting on it as `held back` with the holder, and the log says when
//! the events are readable again.
//!
//! Uses `dist/plugins/counter.wasm` (built by `bash scripts/build-plugins.sh`).

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::str::FromStr;
use std::time::Duration;

use daemon::{Deployment, TestDatabase};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const SETTLE: Duration = Duration::from_secs(30);
const APPLICATION: &str = "held-back-test";

#[tokio::test]
async fn an_open_transaction_is_named_while_it_holds_events_back_and_its_end_is_told() {
    let db = TestDatabase::postgres().await;
    let mut deployment = Deployment::new(db.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut daemon = deployment.start(&["--held-back-warning", "1"]);
    deployment.append_items(1).await;
    daemon.until_counted(&deployment, 1).await;

    // An application's session opens a transaction, writes (so it holds a transaction id),
    // and stays open.
    let mut app = PgConnectOptions::from_str(db.url())
        .expect("the test database URL")
        .application_name(APPLICATION)
        .connect()
        .await
        .expect("connect the application");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut app)
        .await
        .unwrap();
    let mut open = app.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    deployment.append_items(2).await;

    // The log names it (once other tests' shorter transactions, older than it, have ended).
    daemon.wait_for_log(APPLICATION, 1, SETTLE).await;
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|line| line.contains("events are held back") && line.contains(APPLICATION))
        .expect("a warning naming the transaction");
    assert!(warning.contains(&pid.to_string()), "{warning}");
    assert!(warning.contains("idle in transaction"), "{warning}");

    let listed = daemon
        .wait_until(
            "counter.all shown held back by the test's session",
            SETTLE,
            || async {
                let subscriptions = deployment.subscriptions().await;
                let counter = subscriptions
                    .iter()
                    .find(|subscription| subscription["name"] == "counter.all")
                    .cloned()
                    .ok_or("no counter.all")?;
                if counter["status"] == "held back" && counter["held_back_by"]["pid"] == pid {
                    Ok(counter)
                } else {
                    Err(counter.to_string())
                }
            },
        )
        .await;
    assert_eq!(listed["lag"], 2);
    assert_eq!(listed["held_back_by"]["application"], APPLICATION);
    let table = deployment.cli_ok(&["subscriptions", "list"]).await;
    assert!(
        table
            .stdout
            .contains(&format!("held back by session pid {pid}")),
        "{}",
        table.stdout
    );
    assert_eq!(
        deployment.counted().await,
        1,
        "nothing is read past the holder"
    );

    open.commit().await.unwrap();
    daemon.until_counted(&deployment, 3).await;
    daemon
        .wait_for_log("events are readable again", 1, SETTLE)
        .await;
    let after = deployment.subscriptions().await;
    assert!(
        after
            .iter()
            .all(|subscription| subscription["status"] == "running"
                && subscription.get("held_back_by").is_none()),
        "{after:?}"
    );
    daemon.stop().await;
}
