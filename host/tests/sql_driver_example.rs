//! The documented way in from application code: `examples/sql/append_order.py`, a Python
//! script using psycopg 3, stores a `shop_orders` row and appends its `order.created` event
//! through `eventhost.append()` in one transaction. Run against a fresh, migrated database,
//! it must store both (written by the same transaction), neither when it fails after the
//! append, and neither on a version conflict (SQLSTATE EH409).
//!
//! The interpreter is `EVENTHOST_PYTHON`, or the tools venv
//! (`${EVENTHOST_TOOLS:-$HOME/.cache/eventhost-tools}/python/bin/python`); it needs
//! `examples/sql/requirements.txt` installed. A missing interpreter or psycopg fails the test.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{EventStore, PgStore, StoreLimits};
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio::process::Command;

use support::PgDatabase;

/// A migrated database, the store over it, and a pool for checking the application's table.
struct Fixture {
    store: PgStore,
    pool: PgPool,
    db: PgDatabase,
}

async fn fixture() -> Fixture {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url, StoreLimits::default())
        .await
        .expect("connect and migrate the store");
    let pool = PgPool::connect(&db.url)
        .await
        .expect("connect a checking pool");
    Fixture { store, pool, db }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sql/append_order.py")
}

/// The tools venv (scripts/test.sh installs psycopg there): `${EVENTHOST_TOOLS:-$HOME/.cache/eventhost-tools}/python`.
fn tools_venv() -> PathBuf {
    std::env::var_os("EVENTHOST_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/eventhost-tools"))
        })
        .expect("neither EVENTHOST_PYTHON, EVENTHOST_TOOLS nor HOME is set")
        .join("python")
}

/// The interpreter the example runs with; panics, saying how to install it, when it is
/// missing or lacks psycopg.
async fn python() -> PathBuf {
    let (python, install) = match std::env::var_os("EVENTHOST_PYTHON") {
        Some(path) => {
            let install = format!(
                "install psycopg into it with `{} -m pip install -r examples/sql/requirements.txt`, \
                 or point EVENTHOST_PYTHON at an interpreter that has psycopg 3",
                Path::new(&path).display()
            );
            (PathBuf::from(path), install)
        }
        None => {
            let venv = tools_venv();
            let install = format!(
                "create it with:\n  python3 -m venv {venv}\n  {venv}/bin/pip install -r examples/sql/requirements.txt\n\
                 (or set EVENTHOST_PYTHON to a Python interpreter that has psycopg 3)",
                venv = venv.display()
            );
            (venv.join("bin/python"), install)
        }
    };
    let probe = Command::new(&python)
        .args(["-c", "import psycopg"])
        .output()
        .await;
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "this test runs examples/sql/append_order.py with {}, which cannot import psycopg ({}); {install}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!(
            "this test runs examples/sql/append_order.py with {}, which cannot be started ({error}); {install}",
            python.display()
        ),
    }
}

async fn run_script(db: &PgDatabase, args: &[&str]) -> Output {
    Command::new(python().await)
        .arg(script())
        .arg(&db.url)
        .args(args)
        .output()
        .await
        .expect("run append_order.py")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The order's `shop_orders` row: customer, total and the id of the transaction that wrote
/// it (`xmin`, 32 bits), or `None`.
async fn order_row(pool: &PgPool, order_id: &str) -> Option<(String, i64, i64)> {
    sqlx::query(
        "SELECT customer, total_cents, xmin::text::bigint AS xmin
         FROM shop_orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
    .expect("query shop_orders")
    .map(|row| (row.get("customer"), row.get("total_cents"), row.get("xmin")))
}

/// The 32-bit id of the transaction that appended the stream's first event.
async fn event_xid(pool: &PgPool, order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (order_tx::text::bigint % 4294967296) FROM eventhost.events
         WHERE aggregate_type = 'order' AND aggregate_id = $1 AND version = 1",
    )
    .bind(order_id)
    .fetch_one(pool)
    .await
    .expect("query the event's transaction")
}

#[tokio::test]
async fn the_order_row_and_its_event_commit_in_one_transaction() {
    let Fixture { store, pool, db } = fixture().await;
    let output = run_script(&db, &["--order-id", "o-1001", "--customer", "ada"]).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("new version 1"),
        "{}",
        describe(&output)
    );

    let (customer, total_cents, row_xid) = order_row(&pool, "o-1001")
        .await
        .expect("the shop_orders row is stored");
    assert_eq!((customer.as_str(), total_cents), ("ada", 3000));
    let events = store
        .read_stream(&StreamId::new("order", "o-1001"), 1, 10)
        .await
        .expect("read the order's stream");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        (event.event_type.as_str(), event.version),
        ("order.created", 1)
    );
    assert_eq!(
        event.payload.value().expect("the payload")["customer"],
        json!("ada")
    );
    assert_eq!(event.metadata["correlation-id"], "o-1001");
    assert_eq!(
        event_xid(&pool, "o-1001").await,
        row_xid,
        "the row and the event were written by different transactions"
    );
}

#[tokio::test]
async fn a_failure_after_the_append_stores_neither_the_row_nor_the_event() {
    let Fixture { store, pool, db } = fixture().await;
    let output = run_script(&db, &["--order-id", "o-2002", "--fail-after-append"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("rolled back"),
        "{}",
        describe(&output)
    );

    assert_eq!(order_row(&pool, "o-2002").await, None);
    let version = store
        .stream_version(&StreamId::new("order", "o-2002"))
        .await
        .expect("read the stream's version");
    assert_eq!(version, 0, "the event of a rolled-back transaction exists");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM eventhost.events")
        .fetch_one(&pool)
        .await
        .expect("count events");
    assert_eq!(events, 0);
}

#[tokio::test]
async fn an_order_whose_stream_exists_is_a_version_conflict_and_stores_nothing() {
    let Fixture { store, pool, db } = fixture().await;
    let stream = StreamId::new("order", "o-3003");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            &[NewEvent::new("order.imported", json!({}))],
        )
        .await
        .expect("append an earlier event to the stream");

    let output = run_script(&db, &["--order-id", "o-3003"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("version conflict") && stderr.contains("expected=0 actual=1"),
        "{}",
        describe(&output)
    );
    assert_eq!(order_row(&pool, "o-3003").await, None);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 1);

    // The same order twice: the second run finds the row and stores nothing more.
    let first = run_script(&db, &["--order-id", "o-4004"]).await;
    assert!(first.status.success(), "{}", describe(&first));
    let second = run_script(&db, &["--order-id", "o-4004"]).await;
    assert_eq!(second.status.code(), Some(3), "{}", describe(&second));
    let version = store
        .stream_version(&StreamId::new("order", "o-4004"))
        .await
        .unwrap();
    assert_eq!(version, 1);
}
