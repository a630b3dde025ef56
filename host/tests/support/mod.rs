//! Shared test fixtures: a fresh PostgreSQL database or SQLite file per test.
//!
//! PostgreSQL tests use `DATABASE_URL` (default `postgres://root@127.0.0.1:5432/test`) only
//! to create a database of their own, and fail loudly when no server answers.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::path::PathBuf;

use eventhost_store::SubscriptionStore;
use sqlx::{Connection, PgConnection, PgPool};

pub const DEFAULT_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// A database created for one test and dropped when the test ends.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
            panic!(
                "these tests need PostgreSQL: cannot connect to {admin_url} (set DATABASE_URL): {error}"
            )
        });
        let name = format!("eventhost_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let url = replace_database(&admin_url, &name);
        Self {
            url,
            admin_url,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                            .execute(&mut admin)
                            .await;
                    }
                });
            }
        });
        let _ = cleanup.join();
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let prefix_end = base
        .rfind('/')
        .filter(|&slash| slash > "postgres://".len())
        .unwrap_or(base.len());
    let mut replaced = format!("{}/{}", &base[..prefix_end], name);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

/// A temporary directory holding one SQLite database file.
pub struct SqliteFile {
    pub url: String,
    pub dir: PathBuf,
}

impl SqliteFile {
    pub fn create() -> Self {
        let dir =
            std::env::temp_dir().join(format!("eventhost-test-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("events.db").display());
        Self { url, dir }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Declares, for each named `async fn(&Store)`, one test against a fresh PostgreSQL
/// database (module `postgres`) and one against a fresh SQLite file (module `sqlite`): one
/// suite of guarantees, run identically on both stores.
#[allow(unused_macros)] // Only the conformance suites use it.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::support::PgDatabase::create().await;
                    let store = eventhost_store::PgStore::connect(&db.url, Default::default()).await.unwrap();
                    super::$name(&store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let file = crate::support::SqliteFile::create();
                    let store = eventhost_store::SqliteStore::connect(&file.url, Default::default()).await.unwrap();
                    super::$name(&store).await;
                }
            )*
        }
    };
}

/// The oldest transaction in the cluster holding a transaction id: what holds `read_batch`
/// back when events do not arrive. For failure messages.
pub async fn oldest_open_transaction(pool: &PgPool) -> String {
    /// pid, database, age, query.
    type Activity = (i32, Option<String>, Option<String>, Option<String>);
    let row: Option<Activity> = sqlx::query_as(
        "SELECT pid, datname::text, (now() - xact_start)::text, left(query, 120)
         FROM pg_stat_activity WHERE backend_xid IS NOT NULL
         ORDER BY age(backend_xid) DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap_or(None);
    match row {
        None => "no transaction holds an id".to_owned(),
        Some((pid, database, age, query)) => format!(
            "oldest open transaction: pid {pid} in {database:?}, open for {age:?}, running {query:?}"
        ),
    }
}

/// The `count` key of `subscription`'s state, as the counter plugins keep it: 0 before
/// their first batch.
pub async fn count_state(store: &impl SubscriptionStore, subscription: &str) -> u64 {
    let value = store
        .state_get(subscription, "count")
        .await
        .expect("read the count");
    value.map_or(0, |text| {
        text.parse()
            .unwrap_or_else(|_| panic!("count is not an integer: {text}"))
    })
}
