//! Guest log output: the `log` host call and the guest's stdout/stderr, sent to `tracing`
//! tagged with the plugin and subscription, and kept for the batch's [`Effects`].
//!
//! All three sources share one per-batch byte budget; once it is spent, lines are dropped and
//! counted. Lines are truncated to the per-line cap. Stdout and stderr are split into lines
//! here (a guest may write a line in pieces); a partial last line is kept at the end of a call.
//!
//! [`Effects`]: super::Effects

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::effects::{LogLevel, LogLine, LogSource};
use super::limits::Limits;

/// Collects one call's log lines. Cheap to clone: clones share the same lines.
#[derive(Debug, Clone)]
pub(crate) struct LogSink(Arc<Mutex<SinkState>>);

#[derive(Debug)]
struct SinkState {
    plugin: Arc<str>,
    subscription: Option<String>,
    budget: u64,
    line_cap: usize,
    lines: Vec<LogLine>,
    dropped: u64,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl LogSink {
    pub(crate) fn new(plugin: Arc<str>, subscription: Option<String>, limits: &Limits) -> Self {
        Self(Arc::new(Mutex::new(SinkState {
            plugin,
            subscription,
            budget: limits.log_bytes,
            line_cap: usize::try_from(limits.log_line_bytes).unwrap_or(usize::MAX),
            lines: Vec::new(),
            dropped: 0,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        })))
    }

    /// Records one line from `log`.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        self.state().record(level, LogSource::Log, message);
    }

    /// Ends the call: flushes partial stdio lines and hands over the lines and the drop count.
    pub(crate) fn finish(&self) -> (Vec<LogLine>, u64) {
        let mut state = self.state();
        state.flush_partial(LogSource::Stdout);
        state.flush_partial(LogSource::Stderr);
        (std::mem::take(&mut state.lines), state.dropped)
    }

    /// The last few lines the guest wrote to stderr: where a panicking guest says why.
    pub(crate) fn stderr_tail(&self, lines: usize) -> Vec<String> {
        let mut state = self.state();
        state.flush_partial(LogSource::Stderr);
        let stderr: Vec<&LogLine> = state
            .lines
            .iter()
            .filter(|line| line.source == LogSource::Stderr)
            .collect();
        stderr[stderr.len().saturating_sub(lines)..]
            .iter()
            .map(|line| line.message.clone())
            .collect()
    }

    pub(crate) fn stdout(&self) -> GuestOutput {
        GuestOutput {
            sink: self.clone(),
            source: LogSource::Stdout,
        }
    }

    pub(crate) fn stderr(&self) -> GuestOutput {
        GuestOutput {
            sink: self.clone(),
            source: LogSource::Stderr,
        }
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        // A poisoned lock only means another thread panicked while logging; the lines are
        // still consistent enough to keep.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, source: LogSource, bytes: &[u8]) {
        self.state().write(source, bytes);
    }
}

impl SinkState {
    fn write(&mut self, source: LogSource, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
            self.partial(source).extend_from_slice(&rest[..newline]);
            self.flush_partial(source);
            rest = &rest[newline + 1..];
        }
        let cap = self.line_cap;
        let partial = self.partial(source);
        let room = cap.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    fn partial(&mut self, source: LogSource) -> &mut Vec<u8> {
        match source {
            LogSource::Stderr => &mut self.partial_stderr,
            LogSource::Stdout | LogSource::Log => &mut self.partial_stdout,
        }
    }

    fn flush_partial(&mut self, source: LogSource) {
        let bytes = std::mem::take(self.partial(source));
        if bytes.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&bytes);
        let level = if source == LogSource::Stderr {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        self.record(level, source, line.trim_end_matches('\r'));
    }

    fn record(&mut self, level: LogLevel, source: LogSource, message: &str) {
        let message = truncate(message, self.line_cap);
        let cost = message.len() as u64;
        if cost > self.budget {
            self.budget = 0;
            self.dropped += 1;
            return;
        }
        self.budget -= cost;
        emit_tracing(
            &self.plugin,
            self.subscription.as_deref(),
            level,
            source,
            &message,
        );
        self.lines.push(LogLine {
            level,
            source,
            message,
        });
    }
}

fn truncate(message: &str, cap: usize) -> String {
    if message.len() <= cap {
        return message.to_owned();
    }
    let mut end = cap;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The message with its control characters (newlines, carriage returns, terminal escape
/// sequences) written as escapes: a plugin's line stays one line of the daemon's log and
/// cannot forge a line of the daemon's own, or recolour it.
fn escaped(message: &str) -> Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn emit_tracing(
    plugin: &str,
    subscription: Option<&str>,
    level: LogLevel,
    source: LogSource,
    message: &str,
) {
    let subscription = subscription.unwrap_or("-");
    let message = escaped(message);
    let source = match source {
        LogSource::Log => "log",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
    };
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(target: "eventhost::plugin", $level, plugin, subscription, source, "{message}")
        };
    }
    match level {
        LogLevel::Trace => event!(tracing::Level::TRACE),
        LogLevel::Debug => event!(tracing::Level::DEBUG),
        LogLevel::Info => event!(tracing::Level::INFO),
        LogLevel::Warn => event!(tracing::Level::WARN),
        LogLevel::Error => event!(tracing::Level::ERROR),
    }
}

/// The guest's stdout or stderr: never blocks, never fails, feeds the [`LogSink`].
pub(crate) struct GuestOutput {
    sink: LogSink,
    source: LogSource,
}

/// Bytes a guest may hand over in one write; the sink accepts everything, this only keeps
/// single writes bounded.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.sink.write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(GuestOutput {
            sink: self.sink.clone(),
            source: self.source,
        })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestOutput {
            sink: self.sink.clone(),
            source: self.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_line_cannot_forge_a_daemon_line() {
        assert_eq!(
            escaped("plain text, with 'quotes'"),
            "plain text, with 'quotes'"
        );
        assert_eq!(
            escaped("done\n2026-01-01T00:00:00Z  INFO eventhost: stopped\r\u{1b}[31m"),
            "done\\n2026-01-01T00:00:00Z  INFO eventhost: stopped\\r\\u{1b}[31m"
        );
    }

    fn sink(log_bytes: u64, log_line_bytes: u64) -> LogSink {
        let limits = Limits {
            log_bytes,
            log_line_bytes,
            ..Limits::default()
        };
        LogSink::new(Arc::from("test"), None, &limits)
    }

    #[test]
    fn stdout_written_in_pieces_becomes_whole_lines() {
        let sink = sink(1024, 1024);
        sink.write(LogSource::Stdout, b"hel");
        sink.write(LogSource::Stdout, b"lo\nwor");
        sink.write(LogSource::Stdout, b"ld");
        let (lines, dropped) = sink.finish();
        let messages: Vec<&str> = lines.iter().map(|line| line.message.as_str()).collect();
        assert_eq!(messages, ["hello", "world"]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn long_lines_are_truncated_and_lines_past_the_budget_are_dropped_and_counted() {
        let sink = sink(20, 8);
        sink.log(LogLevel::Info, "0123456789abcdef");
        sink.log(LogLevel::Info, "short");
        sink.log(LogLevel::Info, "dropped");
        let (lines, dropped) = sink.finish();
        assert_eq!(lines[0].message, "01234567...");
        assert_eq!(lines[1].message, "short");
        assert_eq!(lines.len(), 2);
        assert_eq!(dropped, 1);
    }
}
