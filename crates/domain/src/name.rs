//! The rule for the names operators and plugins give things that become parts of durable
//! names, file fields and log fields: plugins, subscriptions, sinks. Short and plain, so that
//! `<plugin>.<subscription>` needs no quoting anywhere.

/// The longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// What is wrong with `name` as a name of `what` (e.g. "plugin name"), if anything: it must
/// be 1 to [`MAX_NAME_BYTES`] bytes of lowercase ASCII letters, digits, `-` and `_`.
pub fn name_problem(what: &str, name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "{what} is {} bytes, over the cap of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    name.chars().find(|&c| !allowed(c)).map(|bad| {
        format!("{what} `{name}` contains {bad:?}; use lowercase letters, digits, `-` and `_`")
    })
}
