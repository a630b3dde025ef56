//! `eventhost test` and `eventhost plugins check` load a plugin as the daemon does: with the
//! limits and batch-size cap of the sidecar `NAME.toml` beside it, and refuse a bad sidecar.
//!
//! Uses `dist/plugins/counter.wasm` (batches of 1000), built by `bash scripts/build-plugins.sh`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use daemon::{EVENTHOST, compile_cache, dist};

/// A folder holding `counter.wasm` and, when given, its sidecar `counter.toml`.
struct Deployed {
    dir: PathBuf,
}

impl Deployed {
    fn counter(sidecar: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "eventhost-sidecar-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the folder");
        std::fs::copy(dist("plugins/counter.wasm"), dir.join("counter.wasm"))
            .expect("copy the plugin");
        if let Some(toml) = sidecar {
            std::fs::write(dir.join("counter.toml"), toml).expect("write the sidecar");
        }
        Self { dir }
    }

    fn wasm(&self) -> PathBuf {
        self.dir.join("counter.wasm")
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn eventhost(args: &[&str], plugin: &Path) -> Output {
    let mut command = Command::new(EVENTHOST);
    command.args(args).arg(plugin);
    if args[0] == "test" {
        let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders.jsonl");
        command.arg("--events").arg(events);
    }
    command
        .arg("--cache-dir")
        .arg(compile_cache())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {EVENTHOST}: {error}"))
}

fn batches(output: &Output) -> u64 {
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "no report ({error}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    report["batches"]
        .as_u64()
        .expect("the report counts batches")
}

#[test]
fn the_sidecar_s_grants_let_the_harness_record_messages_and_check_shows_them() {
    let wasm = dist("examples/order-notifier.wasm");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tested = Command::new(EVENTHOST)
        .arg("test")
        .arg(&wasm)
        .arg("--events")
        .arg(root.join("examples/orders.jsonl"))
        .arg("--expect")
        .arg(root.join("examples/order-notifier.expect.json"))
        .arg("--cache-dir")
        .arg(compile_cache())
        .output()
        .expect("run eventhost test");
    let stderr = String::from_utf8_lossy(&tested.stderr);
    assert!(tested.status.success(), "{stderr}");
    assert!(stderr.contains("expectations met"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&tested.stdout).unwrap();
    assert_eq!(
        report["messages"][0]["id"], "order-notifier.paid:3:0",
        "{report}"
    );

    let check = |config: Option<&str>| {
        let mut command = Command::new(EVENTHOST);
        command.args(["plugins", "check"]).arg(&wasm);
        if let Some(config) = config {
            command.arg("--config").arg(root.join(config));
        }
        command
            .arg("--cache-dir")
            .arg(compile_cache())
            .env(
                "BILLING_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .env("BILLING_API_TOKEN", "Bearer t")
            .env_remove("EVENTHOST_CONFIG")
            .output()
            .expect("run eventhost plugins check")
    };
    let granted = check(Some("examples/eventhost.toml"));
    let stdout = String::from_utf8_lossy(&granted.stdout);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert!(
        stdout.contains("sinks granted: billing-webhook, order-events"),
        "{stdout}"
    );
    let unconfigured = check(None);
    let stderr = String::from_utf8_lossy(&unconfigured.stderr);
    assert_eq!(unconfigured.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("its sidecar grants sink `billing-webhook`, which is not configured"),
        "{stderr}"
    );
}

#[test]
fn the_harness_caps_batches_as_the_sidecar_says() {
    let plain = Deployed::counter(None);
    let capped = Deployed::counter(Some("batch_size = 2\n"));
    let whole = eventhost(&["test"], &plain.wasm());
    assert!(whole.status.success(), "{whole:?}");
    assert_eq!(batches(&whole), 1, "5 events in one batch of up to 1000");
    let split = eventhost(&["test"], &capped.wasm());
    assert!(split.status.success(), "{split:?}");
    assert_eq!(batches(&split), 3, "5 events in batches of at most 2");
}

#[test]
fn a_sidecar_memory_cap_too_small_for_the_plugin_is_enforced_by_check_and_test() {
    let starved = Deployed::counter(Some("[limits]\nmemory_bytes = 65536\n"));
    for args in [&["plugins", "check"][..], &["test"][..]] {
        let output = eventhost(args, &starved.wasm());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("memory"),
            "{args:?} names the cap: {stderr}"
        );
    }
}

#[test]
fn a_bad_sidecar_is_refused_naming_its_file() {
    let broken = Deployed::counter(Some("batch_size = \"many\"\n"));
    for args in [&["plugins", "check"][..], &["test"][..]] {
        let output = eventhost(args, &broken.wasm());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("counter.toml"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_sidecar_payload_cap_above_the_stores_is_refused() {
    let too_big = Deployed::counter(Some("[limits]\npayload_bytes = 2000000\n"));
    for args in [&["plugins", "check"][..], &["test"][..]] {
        let output = eventhost(args, &too_big.wasm());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("counter.toml"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("store's cap of 1048576"),
            "{args:?}: {stderr}"
        );
    }
    let at_the_cap = Deployed::counter(Some("[limits]\npayload_bytes = 1048576\n"));
    let output = eventhost(&["plugins", "check"], &at_the_cap.wasm());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `eventhost test` and `plugins check` leave no `data/cache` in the directory they run in:
/// without `--cache-dir` they cache compiled plugins in the user's cache folder.
#[test]
fn test_and_check_cache_in_the_users_cache_folder_not_the_working_directory() {
    let plugin = Deployed::counter(None);
    let home = plugin.dir.join("home");
    let work = plugin.dir.join("work");
    std::fs::create_dir_all(&work).expect("create the working directory");
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders.jsonl");
    let (wasm, events) = (plugin.wasm(), events.to_owned());
    let runs: [Vec<&std::ffi::OsStr>; 2] = [
        vec![
            "test".as_ref(),
            wasm.as_ref(),
            "--events".as_ref(),
            events.as_ref(),
        ],
        vec!["plugins".as_ref(), "check".as_ref(), wasm.as_ref()],
    ];
    for args in runs {
        let output = Command::new(EVENTHOST)
            .args(&args)
            .current_dir(&work)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("EVENTHOST_CACHE_DIR")
            .output()
            .expect("run eventhost");
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
    assert!(!work.join("data").exists(), "nothing written where it ran");
    let cached = std::fs::read_dir(home.join(".cache/eventhost"))
        .expect("the user's cache folder")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
        .count();
    assert_eq!(
        cached, 2,
        "an artifact each: the harness's engine counts fuel, check's is the daemon's"
    );
}

/// `eventhost test` uses no database: its help does not offer `--database-url`, and a
/// `--database-url` after `test` is refused rather than silently ignored.
#[test]
fn test_offers_no_database_url_and_refuses_one() {
    let help = Command::new(EVENTHOST)
        .args(["test", "--help"])
        .output()
        .expect("run eventhost test --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--events") && !help.contains("--database-url"),
        "{help}"
    );
    let plugin = Deployed::counter(None);
    let refused = eventhost(&["test", "--database-url", "sqlite://x.db"], &plugin.wasm());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("eventhost test uses no database"),
        "{stderr}"
    );
}
