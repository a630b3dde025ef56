//! The embedded store's file in trouble, under the real daemon: a full disk (a small tmpfs
//! the test mounts), a database file moved away and back while the daemon has it open, and
//! a read-only file system at start. Each ends in one clear message, a daemon that keeps
//! serving, and a database that passes `PRAGMA integrity_check` with every acknowledged
//! event in it and counted once. Mounting needs root (CAP_SYS_ADMIN), as CI runs.

#[path = "support/api.rs"]
mod api;
#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use api::ApiClient;
use daemon::{Daemon, Deployment};
use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{self as store, EventStore, Store, SubscriptionStore};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, SqliteConnection};

/// A tmpfs of its own, unmounted and removed when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("eventhost-tmpfs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let tmpfs = Self { dir };
        tmpfs.mount_with(&format!("size={size}"), false);
        tmpfs
    }

    /// `mount -o OPTIONS` (with `remount` when `again`), or a failure that says why.
    fn mount_with(&self, options: &str, again: bool) {
        let options = if again {
            format!("remount,{options}")
        } else {
            options.to_owned()
        };
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a tmpfs, which needs root (CAP_SYS_ADMIN): mount -o {options} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn resize(&self, size: &str) {
        self.mount_with(&format!("size={size}"), true);
    }

    fn read_only(&self) {
        self.mount_with("ro", true);
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("events.db").display())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn integrity(path: &Path) -> String {
    let mut connection = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the database");
    sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .expect("check the database")
}

async fn append_one(store: &Store, n: usize, payload_bytes: usize) -> Result<(), String> {
    store
        .append(
            &StreamId::new("item", format!("i-{n}")),
            ExpectedVersion::NoStream,
            &[NewEvent::new(
                "item.added",
                json!({"n": n, "padding": "x".repeat(payload_bytes)}),
            )],
        )
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

async fn counted(store: &Store) -> u64 {
    support::count_state(store, "counter.all").await
}

async fn wait_counted(daemon: &mut Daemon, store: &Store, n: u64) {
    daemon
        .wait_until(&format!("{n} counted"), Duration::from_secs(60), || async {
            match counted(store).await {
                count if count == n => Ok(()),
                count => Err(format!("count {count}")),
            }
        })
        .await;
}

fn start_counting(url: &str) -> (Deployment, Daemon) {
    let mut deployment = Deployment::new(url);
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let daemon = deployment.start(&[]);
    (deployment, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_clearly_and_loses_nothing_once_space_is_freed() {
    let disk = Tmpfs::mount("3m");
    let url = disk.url();
    let (_deployment, mut daemon) = start_counting(&url);
    let api = ApiClient::new(&daemon.api().await);
    let store = store::connect(&url).await.expect("open the database");

    // Appends through the daemon's API until the disk is full.
    let mut acknowledged = 0;
    let refusal = loop {
        let body = json!({
            "expected_version": "no-stream",
            "events": [{"event_type": "item.added", "payload": {"padding": "x".repeat(4000)}}],
        });
        let reply = api
            .post(&format!("/v1/streams/item/i-{acknowledged}/events"), &body)
            .await;
        if reply.status != StatusCode::CREATED {
            break reply;
        }
        acknowledged += 1;
        assert!(acknowledged < 5_000, "the 3 MiB disk never filled");
    };
    eprintln!(
        "the disk filled after {acknowledged} events: {} {:?}",
        refusal.status, refusal.body
    );
    assert_eq!(
        refusal.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refusal.body
    );
    assert!(
        refusal.message().contains("database or disk is full"),
        "the refusal says why: {:?}",
        refusal.body
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.assert_running();
    assert_eq!(
        api.get("/v1/subscriptions").await.status,
        StatusCode::OK,
        "the daemon still serves"
    );

    disk.resize("64m");
    for n in acknowledged..acknowledged + 10 {
        append_one(&store, n, 10)
            .await
            .expect("append once space is freed");
    }
    let total = acknowledged as u64 + 10;
    wait_counted(&mut daemon, &store, total).await;
    daemon.stop().await;
    let log = daemon.log();
    assert!(
        log.matches("the store is unavailable").count() <= 1,
        "the full disk is told once, not per subscription or retry:\n{log}"
    );
    assert_eq!(
        log.matches("the store is unavailable").count(),
        log.matches("the store is available again").count(),
        "an outage told is told ended:\n{log}"
    );
    assert_eq!(store.lag("counter.all").await.expect("lag"), 0);
    store.close().await;
    assert_eq!(integrity(&disk.dir.join("events.db")).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_moved_away_is_never_written_and_moved_back_goes_on() {
    let file = support::SqliteFile::create();
    let path = file.dir.join("events.db");
    let away = file.dir.join("events.db.away");
    let (_deployment, mut daemon) = start_counting(&file.url);
    let api = ApiClient::new(&daemon.api().await);
    let store = store::connect(&file.url).await.expect("open the database");
    let append = |n: usize| {
        json!({
            "expected_version": "no-stream",
            "events": [{"event_type": "item.added", "payload": {"n": n}}],
        })
    };
    for n in 0..3 {
        let reply = api
            .post(&format!("/v1/streams/item/i-{n}/events"), &append(n))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    wait_counted(&mut daemon, &store, 3).await;

    std::fs::rename(&path, &away).expect("move the database away");
    let refused = api.post("/v1/streams/item/i-3/events", &append(3)).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert!(
        refused
            .message()
            .contains("was deleted or replaced while it was open"),
        "the refusal says why: {:?}",
        refused.body
    );
    let library = append_one(&store, 3, 10)
        .await
        .expect_err("the library refuses too");
    assert!(library.contains(&path.display().to_string()), "{library}");
    assert!(!path.exists(), "nothing made a new file in its place");

    std::fs::rename(&away, &path).expect("move the database back");
    let accepted = api.post("/v1/streams/item/i-3/events", &append(3)).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);
    wait_counted(&mut daemon, &store, 4).await;
    daemon.assert_running();
    daemon.stop().await;
    store.close().await;
    assert_eq!(integrity(&path).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_refused_at_start_with_one_message_and_left_unchanged() {
    let disk = Tmpfs::mount("16m");
    let url = disk.url();
    let path = disk.dir.join("events.db");
    let store = store::connect(&url).await.expect("create the database");
    append_one(&store, 0, 10).await.expect("append");
    store.close().await;
    let before = std::fs::read(&path).expect("read the database");
    disk.read_only();

    let mut deployment = Deployment::new(&url);
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut daemon = deployment.start(&[]);
    let status = daemon.exit_status(Duration::from_secs(30)).await;
    let log = daemon.log();
    assert!(!status.success(), "the daemon refuses to start:\n{log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains("read-only"),
        "the message names the file and the cause:\n{log}"
    );
    let errors = log
        .lines()
        .filter(|line| line.contains("ERROR") || line.starts_with("error"))
        .count();
    assert_eq!(errors, 1, "one message:\n{log}");

    let append = deployment
        .cli(&[
            "append",
            "--aggregate-type",
            "item",
            "--aggregate-id",
            "i-1",
            "--event-type",
            "item.added",
        ])
        .await;
    assert!(!append.status.success(), "{append}");
    assert!(append.stderr.contains("read-only"), "{append}");
    assert_eq!(
        std::fs::read(&path).expect("read the database"),
        before,
        "unchanged"
    );
}
