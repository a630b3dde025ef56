//! Writing to the daemon's log, where each line is tagged with the plugin and subscription.
//!
//! Every function takes anything that displays, so `log::info("done")` and
//! `log::warn(format_args!("order {id} unknown"))` both work. The host truncates lines to
//! 4 KiB and caps a batch's log output, dropping (and counting) lines past the cap.

use std::fmt::Display;

use crate::Level;
use crate::bindings::eventhost::plugin::host;

/// Writes `message` at `level`.
pub fn log(level: Level, message: impl Display) {
    host::log(level, &message.to_string());
}

/// Writes `message` at trace level.
pub fn trace(message: impl Display) {
    log(Level::Trace, message);
}

/// Writes `message` at debug level.
pub fn debug(message: impl Display) {
    log(Level::Debug, message);
}

/// Writes `message` at info level.
pub fn info(message: impl Display) {
    log(Level::Info, message);
}

/// Writes `message` at warn level.
pub fn warn(message: impl Display) {
    log(Level::Warn, message);
}

/// Writes `message` at error level.
pub fn error(message: impl Display) {
    log(Level::Error, message);
}
