//! What a guest said on stderr about why it trapped, made into one line for the batch's
//! error: the message operators read in `eventhost test`, the log, `subscriptions list` and
//! `parked list`.
//!
//! A trap's own text says only how the guest stopped (``wasm `unreachable` instruction
//! executed``); the cause is in what the guest wrote to stderr just before. Languages write it
//! in their own shape, and the runtime a language brings adds lines of its own: an exception
//! escaping a Python plugin prints its traceback and then a Rust panic of componentize-py's
//! (`Python function threw an unexpected exception`) with Rust's hint to set
//! `RUST_BACKTRACE`, which a plugin's author cannot act on. So:
//! - a Python traceback gives its exception and its innermost frames;
//! - else a Rust panic gives its location and message;
//! - else the last lines are quoted as they are.
//!
//! Rust's backtrace hint is never quoted.

/// How many stderr lines, at most, a quoted tail holds.
const TAIL_LINES: usize = 3;

/// How many of a traceback's innermost frames the line names.
const FRAMES: usize = 3;

/// The line a Python traceback starts with.
const TRACEBACK: &str = "Traceback (most recent call last):";

/// The one line saying why the guest trapped, from its last stderr `lines`, if they say.
pub(crate) fn explain(lines: &[String]) -> Option<String> {
    python_exception(lines)
        .or_else(|| rust_panic(lines))
        .or_else(|| tail(lines))
}

/// The exception of the last traceback, with the innermost frames it passed through.
fn python_exception(lines: &[String]) -> Option<String> {
    let start = lines.iter().rposition(|line| line == TRACEBACK)?;
    let mut frames = Vec::new();
    let mut exception = Vec::new();
    for line in &lines[start + 1..] {
        if let Some(frame) = line.strip_prefix("  File ") {
            frames.push(frame.trim());
        } else if line.starts_with("    ") && exception.is_empty() {
            // The source line of the frame above, or a caret marker under it.
        } else if is_panic_start(line) {
            break;
        } else {
            exception.push(line.trim());
        }
    }
    if exception.is_empty() {
        return None;
    }
    let inner = &frames[frames.len().saturating_sub(FRAMES)..];
    let mut text = format!("Python exception: {}", exception.join(" "));
    if !inner.is_empty() {
        let skipped = frames.len() - inner.len();
        let more = if skipped > 0 { "...; " } else { "" };
        text.push_str(&format!(" (at {more}{})", inner.join("; ")));
    }
    Some(text)
}

/// The location and message of the last Rust panic.
fn rust_panic(lines: &[String]) -> Option<String> {
    let start = lines.iter().rposition(|line| is_panic_start(line))?;
    let location = lines[start]
        .split_once("panicked at ")
        .map_or("", |(_, at)| at.trim_end_matches(':'));
    let message: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|line| !is_backtrace_hint(line))
        .map(|line| line.trim())
        .collect();
    Some(match message.as_slice() {
        [] => format!("panicked at {location}"),
        message => format!("panicked at {location}: {}", message.join(" ")),
    })
}

/// The last few lines, as they are.
fn tail(lines: &[String]) -> Option<String> {
    let said: Vec<&str> = lines
        .iter()
        .filter(|line| !is_backtrace_hint(line))
        .map(String::as_str)
        .collect();
    let last = &said[said.len().saturating_sub(TAIL_LINES)..];
    (!last.is_empty()).then(|| format!("stderr: {}", last.join(" | ")))
}

fn is_panic_start(line: &str) -> bool {
    line.starts_with("thread '") && line.contains(" panicked at ")
}

fn is_backtrace_hint(line: &str) -> bool {
    line.starts_with("note: run with `RUST_BACKTRACE=1`")
}

#[cfg(test)]
mod tests {
    use super::explain;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// What a Python plugin built with componentize-py 0.17 writes when `uuid.uuid5` is first
    /// called inside `handle` (its lazy `import hashlib` fails: the component has no files).
    const PYTHON: &str = r#"Traceback (most recent call last):
  File "/0/app.py", line 15, in handle
  File "/python/uuid.py", line 785, in uuid5
ModuleNotFoundError: No module named 'hashlib'
thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:
Python function threw an unexpected exception
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"#;

    #[test]
    fn a_python_exception_is_named_with_its_frames_without_the_runtimes_panic() {
        assert_eq!(
            explain(&lines(PYTHON)).unwrap(),
            "Python exception: ModuleNotFoundError: No module named 'hashlib' \
             (at \"/0/app.py\", line 15, in handle; \"/python/uuid.py\", line 785, in uuid5)"
        );
    }

    #[test]
    fn the_last_of_chained_tracebacks_is_the_one_named_and_deep_stacks_keep_their_inner_frames() {
        let chained = r#"Traceback (most recent call last):
  File "/0/app.py", line 3, in decode
    return json.loads(text)
ValueError: bad
During handling of the above exception, another exception occurred:
Traceback (most recent call last):
  File "/0/app.py", line 20, in handle
    apply(event)
  File "/0/app.py", line 12, in apply
    total = decode(event.payload)
  File "/0/app.py", line 9, in decode
    raise KeyError(key)
  File "/0/app.py", line 5, in fail
    raise KeyError(key)
    ^^^^^^^^^^^^^^^^^^^
KeyError: 'customer'
thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:
Python function threw an unexpected exception"#;
        assert_eq!(
            explain(&lines(chained)).unwrap(),
            "Python exception: KeyError: 'customer' (at ...; \"/0/app.py\", line 12, in apply; \
             \"/0/app.py\", line 9, in decode; \"/0/app.py\", line 5, in fail)"
        );
    }

    #[test]
    fn a_rust_panic_gives_its_location_and_message_without_the_backtrace_hint() {
        let panic = "thread '<unnamed>' panicked at plugins/hostile/panic/src/lib.rs:19:9:\n\
                     hostile-panic: panicking in handle on purpose\n\
                     note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        assert_eq!(
            explain(&lines(panic)).unwrap(),
            "panicked at plugins/hostile/panic/src/lib.rs:19:9: \
             hostile-panic: panicking in handle on purpose"
        );
    }

    #[test]
    fn other_output_is_quoted_as_its_last_lines_and_silence_says_nothing() {
        let other = "one\ntwo\nthree\nfour\nnote: run with `RUST_BACKTRACE=1` environment variable";
        assert_eq!(
            explain(&lines(other)).unwrap(),
            "stderr: two | three | four"
        );
        assert_eq!(explain(&[]), None);
    }
}
