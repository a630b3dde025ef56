//! `eventhost append --file` keeps README's promise: the whole file is checked first, then
//! written in one transaction, so a bad line (too large, a NUL character, a name over the
//! index cap, a version conflict) writes nothing of the file and is named by its number. On
//! PostgreSQL and on SQLite, through the real binary; `eventhost read` on a closed pipe and
//! positions past the store's range are handled as the command line promises.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::process::Stdio;

use daemon::{Deployment, EVENTHOST, TestDatabase};
use serde_json::json;

fn line(aggregate_id: &str, payload: serde_json::Value) -> String {
    json!({
        "aggregate_type": "order",
        "aggregate_id": aggregate_id,
        "event_type": "order.created",
        "payload": payload,
    })
    .to_string()
}

/// Appends a three-line file whose third line is `bad`; returns the command's output.
async fn append_with_bad_third_line(deployment: &Deployment, bad: String) -> daemon::CliOutput {
    let file = deployment.path("events.jsonl");
    let text = [line("o-1", json!(1)), line("o-2", json!(2)), bad].join("\n");
    std::fs::write(&file, text).unwrap();
    deployment
        .cli(&["append", "--file", file.to_str().unwrap()])
        .await
}

async fn nothing_stored(deployment: &Deployment) {
    let read = deployment.cli_ok(&["read", "all"]).await;
    assert_eq!(read.stdout, "", "nothing of the file was written");
}

async fn a_bad_line_writes_nothing_of_the_file(database: TestDatabase) {
    let deployment = Deployment::new(database.url());
    let too_large = line("o-3", json!("x".repeat(1024 * 1024)));
    let nul = line("o-\u{0}3", json!(3));
    let long_id = line(&"x".repeat(1025), json!(3));
    for (what, bad) in [
        ("payload over 1 MiB", too_large),
        ("NUL character", nul),
        ("aggregate id over 1024 bytes", long_id),
    ] {
        let output = append_with_bad_third_line(&deployment, bad).await;
        assert_eq!(output.status.code(), Some(1), "{what}: {output}");
        assert!(
            output.stderr.contains("line 3"),
            "{what}: the line is named: {output}"
        );
        nothing_stored(&deployment).await;
    }
}

async fn a_conflict_on_the_last_line_writes_nothing_of_the_file(database: TestDatabase) {
    let deployment = Deployment::new(database.url());
    let mut conflict: serde_json::Value = serde_json::from_str(&line("o-1", json!(3))).unwrap();
    conflict["expected_version"] = json!("no-stream");
    let output = append_with_bad_third_line(&deployment, conflict.to_string()).await;
    assert_eq!(output.status.code(), Some(3), "a conflict: {output}");
    assert!(output.stderr.contains("line 3"), "{output}");
    assert!(output.stderr.contains("nothing"), "{output}");
    nothing_stored(&deployment).await;

    // The same file without the conflicting line is written whole.
    let file = deployment.path("good.jsonl");
    std::fs::write(
        &file,
        [line("o-1", json!(1)), line("o-2", json!(2))].join("\n"),
    )
    .unwrap();
    let output = deployment
        .cli_ok(&["append", "--file", file.to_str().unwrap()])
        .await;
    assert_eq!(output.json_lines().len(), 2);
}

async fn read_handles_a_closed_pipe_and_out_of_range_positions(database: TestDatabase) {
    let deployment = Deployment::new(database.url());
    let file = deployment.path("many.jsonl");
    let lines: Vec<String> = (0..3000)
        .map(|n| line(&format!("o-{n}"), json!(n)))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    deployment
        .cli_ok(&["append", "--file", file.to_str().unwrap()])
        .await;

    // `eventhost read all | head -n 1`: the reader goes away; that is no failure.
    let mut read = std::process::Command::new(EVENTHOST)
        .args(["--database-url", database.url(), "read", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = read.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let output = read.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");

    for scope in [
        &["read", "stream", "order", "o-1"][..],
        &["read", "all"][..],
    ] {
        let mut args = scope.to_vec();
        args.extend(["--after", "18446744073709551615"]);
        let output = deployment.cli(&args).await;
        assert_eq!(output.status.code(), Some(2), "a usage error: {output}");
        assert!(!output.stderr.contains("panicked"), "{output}");
    }
}

/// `read` prints a payload as its compact JSON on either store (PostgreSQL's `jsonb` would
/// print it with spaces), strings with spaces kept as they are.
async fn read_prints_payloads_compact(database: TestDatabase) {
    let deployment = Deployment::new(database.url());
    deployment
        .cli_ok(&[
            "append",
            "--aggregate-type",
            "order",
            "--aggregate-id",
            "o-1",
            "--event-type",
            "order.noted",
            "--payload",
            r#"{"a": "x, y: z", "b": [1, 2.5, {"c": null}]}"#,
        ])
        .await;
    let output = deployment.cli_ok(&["read", "all"]).await;
    assert!(
        output
            .stdout
            .contains(r#""payload":{"a":"x, y: z","b":[1,2.5,{"c":null}]}"#),
        "{output}"
    );
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn read_prints_payloads_compact() {
        super::read_prints_payloads_compact(TestDatabase::postgres().await).await;
    }

    #[tokio::test]
    async fn a_bad_line_writes_nothing_of_the_file() {
        super::a_bad_line_writes_nothing_of_the_file(TestDatabase::postgres().await).await;
    }

    #[tokio::test]
    async fn a_conflict_on_the_last_line_writes_nothing_of_the_file() {
        super::a_conflict_on_the_last_line_writes_nothing_of_the_file(
            TestDatabase::postgres().await,
        )
        .await;
    }

    #[tokio::test]
    async fn read_handles_a_closed_pipe_and_out_of_range_positions() {
        super::read_handles_a_closed_pipe_and_out_of_range_positions(
            TestDatabase::postgres().await,
        )
        .await;
    }
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn read_prints_payloads_compact() {
        super::read_prints_payloads_compact(TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn a_bad_line_writes_nothing_of_the_file() {
        super::a_bad_line_writes_nothing_of_the_file(TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn a_conflict_on_the_last_line_writes_nothing_of_the_file() {
        super::a_conflict_on_the_last_line_writes_nothing_of_the_file(TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn read_handles_a_closed_pipe_and_out_of_range_positions() {
        super::read_handles_a_closed_pipe_and_out_of_range_positions(TestDatabase::sqlite()).await;
    }
}
