//! Every `eventhost` command shown in README.md and docs/ parses: its subcommands and flags
//! exist and its values are of the right kind. A renamed flag, a dropped subcommand or a
//! documented value the command line refuses fails here, before a reader finds it.
//!
//! Commands are taken from fenced code blocks (`sh`, `bash`, `console`, `text` or none):
//! each line, joined with its continuation lines, is split at `&&`, `||`, `;`, `|` and `&`,
//! and each part that runs `eventhost` (after an optional `$ ` prompt) with a subcommand or
//! an option is parsed as the binary would. A part holding `...` is a sketch, not a
//! command, and is left out. Usage lines are read as the reader would: `[--json]` is the
//! option, and an upper-case placeholder (`NAME`, `ID`, `POSITION`) stands for a value (`1`).

use std::path::{Path, PathBuf};

use clap::Parser;
use clap::error::ErrorKind;

use super::Cli;

/// The documents a reader follows.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The command lines of `markdown`'s shell code blocks, continuation lines joined, with the
/// line each starts on.
fn shell_lines(markdown: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_shell = None;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = match in_shell {
                Some(_) => None,
                None => Some(matches!(
                    info.trim(),
                    "" | "sh" | "bash" | "console" | "text"
                )),
            };
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or_else(|| (index + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                text.push_str(head);
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(trimmed);
                lines.push((start, text));
            }
        }
    }
    lines
}

/// The `eventhost` invocations of one shell line, as argument lists.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let Some(words) = shlex::split(&strip_comment(line)) else {
        return Vec::new();
    };
    words
        .split(|word| matches!(word.as_str(), "&&" | "||" | ";" | "|" | "&"))
        .filter(|part| part.first().is_some_and(|word| word == "eventhost"))
        .filter(|part| {
            part.get(1)
                .is_some_and(|word| word.starts_with(|c: char| c.is_ascii_lowercase() || c == '-'))
        })
        .filter(|part| !part.iter().any(|word| word.contains("...")))
        .map(|part| {
            part.iter()
                .take_while(|word| !word.starts_with('>') && !word.starts_with('<'))
                .map(|word| usage_word(word))
                .collect()
        })
        .collect()
}

/// A word of a usage line as a command would have it: `[--json]` is `--json`, and a
/// placeholder (`NAME`, `[ID]`, `POSITION]`) is the value `1`. Other words are kept.
fn usage_word(word: &str) -> String {
    let bare = word.trim_start_matches('[').trim_end_matches(']');
    let option = bare.len() > 2
        && bare.starts_with("--")
        && bare[2..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-');
    let placeholder = bare.len() >= 2
        && bare.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && bare.starts_with(|c: char| c.is_ascii_uppercase());
    if placeholder {
        "1".to_owned()
    } else if option {
        bare.to_owned()
    } else {
        word.to_owned()
    }
}

/// `line` without a `# comment` that starts outside quotes.
fn strip_comment(line: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return line[..at].to_owned();
            }
            _ => {}
        }
        previous = c;
    }
    line.to_owned()
}

#[test]
fn every_documented_eventhost_command_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for document in documents() {
        let markdown = std::fs::read_to_string(&document).expect("read the document");
        for (line_number, line) in shell_lines(&markdown) {
            for args in invocations(&line) {
                checked += 1;
                if let Err(error) = Cli::try_parse_from(&args) {
                    if matches!(
                        error.kind(),
                        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                    ) {
                        continue;
                    }
                    let first = error.to_string();
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    failures.push(format!(
                        "{}:{line_number}: {}\n    {first}",
                        document.display(),
                        args.join(" ")
                    ));
                }
            }
        }
    }
    eprintln!("{checked} documented eventhost commands checked");
    assert!(
        checked >= 40,
        "only {checked} commands found: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} documented commands do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn commands_are_found_in_shell_blocks_only_with_their_continuations() {
    let markdown = "text eventhost run\n```sh\neventhost read all # all of it\n\
                    eventhost append --file x.jsonl \\\n    --log-format json && eventhost migrate\n\
                    eventhost append ... | head\n\
                    eventhost parked list [NAME] [--json] --payload '[1]' &\n\
                    eventhost (host/) the binary\n```\n```rust\neventhost run\n```\n";
    let found: Vec<Vec<String>> = shell_lines(markdown)
        .iter()
        .flat_map(|(_, line)| invocations(line))
        .collect();
    assert_eq!(
        found,
        [
            vec!["eventhost", "read", "all"],
            vec![
                "eventhost",
                "append",
                "--file",
                "x.jsonl",
                "--log-format",
                "json"
            ],
            vec!["eventhost", "migrate"],
            vec![
                "eventhost",
                "parked",
                "list",
                "1",
                "--json",
                "--payload",
                "[1]"
            ],
        ]
    );
}
