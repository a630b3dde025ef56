//! The configuration file (`eventhost.toml`): a configuration or one error naming the file,
//! never a panic; secrets named in it come from the environment and never appear in the
//! error.
#![no_main]

use std::path::Path;

use eventhost::config::Config;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "s3cr3t-v4lue-never-shown";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains(SECRET) {
        return;
    }
    if let Err(error) = Config::parse(Path::new("eventhost.toml"), text, |_| {
        Some(SECRET.to_owned())
    }) {
        let message = error.to_string();
        assert!(message.contains("eventhost.toml"), "{message}");
        assert!(!message.contains(SECRET), "a secret in an error: {message}");
    }
});
