//! `eventhost new NAME --lang L`: for each language, the project it writes builds with its own
//! `build.sh` (installing its tools as a new user's machine would: componentize-py into
//! `.venv`, componentize-js into `node_modules`, the Rust crate's dependencies) and passes its
//! own expectations in `eventhost test`; the Rust crate's harness test passes in `cargo test`.
//! Needs what the language's build needs: cargo with the wasm32-wasip2 target, python3 with
//! venv and pip (PyPI), node 20+ with npm (npm's registry).

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use daemon::{EVENTHOST, compile_cache};

const NAME: &str = "stock-levels";

/// Runs `command`, panicking with its output unless it succeeds.
fn succeed(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot run: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// This workspace's target folder (the test binary runs from `<target>/debug/deps`): the
/// Rust project builds there, so that the crates it shares with the workspace are built once.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .expect("the test binary runs inside a cargo target folder")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Makes the project with `eventhost new` in a fresh folder; returns the folder holding it.
fn new_project(lang: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("a temporary folder");
    let dir = root.path().join(NAME);
    let output = succeed(
        Command::new(EVENTHOST)
            .args(["new", NAME, "--lang", lang, "--dir"])
            .arg(&dir),
        "eventhost new",
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("bash build.sh") && said.contains("--expect expect.json"),
        "eventhost new says what to do next: {said}"
    );
    (root, dir)
}

/// Builds the project with its `build.sh` and checks both fixtures with `eventhost test`.
fn build_and_meet_expectations(dir: &Path, lang: &str) {
    let built = succeed(
        Command::new("bash")
            .arg("build.sh")
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("VIRTUAL_ENV"),
        &format!("{lang}: bash build.sh"),
    );
    let wasm = dir.join(format!("{NAME}.wasm"));
    assert!(
        wasm.is_file(),
        "{lang}: no {NAME}.wasm after the build: {}",
        String::from_utf8_lossy(&built.stdout)
    );
    for (events, expect) in [
        ("events.jsonl", "expect.json"),
        ("bad.jsonl", "bad.expect.json"),
    ] {
        let output = succeed(
            Command::new(EVENTHOST)
                .args(["test", &format!("{NAME}.wasm"), "--events", events])
                .args(["--expect", expect, "--cache-dir"])
                .arg(compile_cache())
                .current_dir(dir),
            &format!("{lang}: eventhost test --events {events} --expect {expect}"),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("expectations met"), "{lang}: {stderr}");
    }
    let report = Command::new(EVENTHOST)
        .args(["test", &format!("{NAME}.wasm"), "--events", "events.jsonl"])
        .arg("--cache-dir")
        .arg(compile_cache())
        .current_dir(dir)
        .output()
        .expect("run eventhost test");
    let report: serde_json::Value =
        serde_json::from_slice(&report.stdout).expect("the report is JSON");
    assert_eq!(report["plugin"]["name"], NAME, "{lang}: {report}");
    let alert = &report["emitted"][0];
    assert_eq!(
        alert["id"],
        uuid_v5(&format!(
            "eventhost:{NAME}:stock.low:{}",
            report_event_id(&report, alert)
        )),
        "{lang}: the alert's id is the v5 UUID of the sale's id: {report}"
    );
}

/// The id of the event that caused `emitted` (its `causation-id`).
fn report_event_id<'a>(report: &serde_json::Value, emitted: &'a serde_json::Value) -> &'a str {
    emitted["metadata"]["causation-id"]
        .as_str()
        .unwrap_or_else(|| panic!("no causation-id: {report}"))
}

fn uuid_v5(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[test]
fn a_new_rust_plugin_builds_and_passes_its_expectations_and_its_cargo_tests() {
    let (_root, dir) = new_project("rust");
    build_and_meet_expectations(&dir, "rust");
    // The workspace's lock file pins the crates it shares with the project to the versions
    // already built in the shared target folder; without it Cargo resolves (and builds) the
    // newest, as on a new user's machine.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .expect("copy the lock file");
    let tested = succeed(
        Command::new(cargo())
            .arg("test")
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", target_dir()),
        "rust: cargo test",
    );
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");
}

#[test]
fn a_new_python_plugin_builds_and_passes_its_expectations() {
    let (_root, dir) = new_project("python");
    build_and_meet_expectations(&dir, "python");
}

#[test]
fn a_new_javascript_plugin_builds_and_passes_its_expectations() {
    let (_root, dir) = new_project("javascript");
    build_and_meet_expectations(&dir, "javascript");
}

#[test]
fn a_taken_folder_or_an_unknown_language_fails_with_one_clear_line() {
    let root = tempfile::tempdir().expect("a temporary folder");
    let taken = root.path().join("taken");
    std::fs::create_dir(&taken).expect("create");
    std::fs::write(taken.join("notes.txt"), "mine").expect("write");
    let output = Command::new(EVENTHOST)
        .args(["new", "stock", "--lang", "python", "--dir"])
        .arg(&taken)
        .output()
        .expect("run eventhost new");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("not an empty folder"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(root.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["taken"], "nothing else was written");

    let output = Command::new(EVENTHOST)
        .args(["new", "stock", "--lang", "cobol"])
        .current_dir(root.path())
        .output()
        .expect("run eventhost new");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'cobol'") && stderr.contains("javascript"),
        "{stderr}"
    );

    // `new` has no use for a database: its help does not offer one, and one given is refused.
    let help = Command::new(EVENTHOST)
        .args(["new", "--help"])
        .output()
        .expect("run eventhost new --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--lang") && !help.contains("--database-url"),
        "{help}"
    );
    let url = ["--database-url", "sqlite://x.db"];
    let new = ["new", "stock", "--lang", "rust"];
    for args in [[&url[..], &new[..]].concat(), [&new[..], &url[..]].concat()] {
        let output = Command::new(EVENTHOST)
            .args(&args)
            .current_dir(root.path())
            .output()
            .expect("run eventhost new");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--database-url does not apply"),
            "{args:?}: {stderr}"
        );
        assert!(!root.path().join("stock").exists(), "nothing was written");
    }
}
