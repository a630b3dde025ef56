//! The plugin guides' examples work as written: each guide's files and commands, marked in
//! its markdown, run in order as one shell script in an empty folder, as a reader would type
//! them: the set-up (a virtualenv with componentize-py from PyPI, componentize-js from npm),
//! the example plugin's source, the build, and `eventhost test` of its fixtures against their
//! expectations files. A guide that drifts from the tools or the contract fails here.
//!
//! The markers are HTML comments (invisible when the guide is rendered) on the line before a
//! code block: `<!-- test: file PATH -->` writes the block to PATH, `<!-- test: run -->` runs
//! its lines there, `<!-- test: run at end -->` after every other step (a command shown
//! before the files it reads). `<!-- test: setup COMMAND -->`, alone on its line, runs what
//! the guide assumes done (the Rust guide's eventhost checkout beside the crate). The script
//! runs with `EVENTHOST_REPO` set to this checkout and the `eventhost` binary first on
//! `PATH`, as the guides' set-up asks, and no `CARGO_TARGET_DIR` (the guides name the
//! component under the crate's `target/`).

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::Path;
use std::process::Command;

use daemon::{EVENTHOST, compile_cache};

/// One marked code block, or set-up line.
enum Step {
    File { path: String, text: String },
    Run(String),
    RunAtEnd(String),
}

/// The marked blocks of `markdown`, in order.
fn steps(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!-- test: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        if let Some(command) = marker.strip_prefix("setup ") {
            steps.push(Step::Run(format!("{command}\n")));
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        let indent = fence.len() - fence.trim_start().len();
        assert!(
            fence.trim_start().starts_with("```"),
            "the marker `{marker}` is not followed by a code block"
        );
        let mut text = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            text.push_str(line.get(indent..).unwrap_or(line.trim_start()));
            text.push('\n');
        }
        steps.push(match marker.strip_prefix("file ") {
            Some(path) => Step::File {
                path: path.to_owned(),
                text,
            },
            None if marker == "run" => Step::Run(text),
            None if marker == "run at end" => Step::RunAtEnd(text),
            None => panic!("unknown marker `{marker}`"),
        });
    }
    steps
}

/// The guide's steps as one bash script.
fn script(steps: &[Step]) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut at_end = String::new();
    for step in steps {
        match step {
            Step::File { path, text } => {
                assert!(
                    !text.contains("\nEOF_GUIDE\n"),
                    "{path} holds the heredoc's end"
                );
                script.push_str(&format!(
                    "mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'EOF_GUIDE'\n{text}EOF_GUIDE\n"
                ));
            }
            Step::Run(text) => script.push_str(text),
            Step::RunAtEnd(text) => at_end.push_str(text),
        }
    }
    script + &at_end
}

/// Runs the marked steps of `guide` (a path from the repository root) in an empty folder.
fn run_guide(guide: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(repo.join(guide)).expect("read the guide");
    let steps = steps(&markdown);
    let expects = steps
        .iter()
        .filter_map(|step| match step {
            Step::Run(text) | Step::RunAtEnd(text) => Some(text.matches("eventhost test ").count()),
            Step::File { .. } => None,
        })
        .sum::<usize>();
    assert!(
        expects >= 1,
        "{guide}: no `eventhost test` is marked to run"
    );
    let folder = tempfile::tempdir().expect("a temporary folder");
    let bin = Path::new(EVENTHOST).parent().expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(script(&steps))
        .current_dir(folder.path())
        .env(
            "EVENTHOST_REPO",
            repo.canonicalize().expect("the repository"),
        )
        .env("EVENTHOST_CACHE_DIR", compile_cache())
        .env("PATH", path)
        .env_remove("VIRTUAL_ENV")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{guide}: its commands failed ({}):\n{stderr}\nstdout:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        stderr.matches("expectations met").count(),
        expects,
        "{guide}: every `eventhost test` meets its expectations:\n{stderr}"
    );
}

#[test]
fn the_python_guide_builds_and_tests_its_example_as_written() {
    run_guide("docs/plugin-python.md");
}

#[test]
fn the_javascript_guide_builds_and_tests_its_example_as_written() {
    run_guide("docs/plugin-javascript.md");
}

#[test]
fn the_rust_guide_builds_and_tests_its_example_as_written() {
    run_guide("docs/plugin-rust.md");
}
