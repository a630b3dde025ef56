//! A plugin's sidecar file (`<plugin>.toml`) as any bytes an operator, or a process that can
//! write the plugins folder, might leave: a sidecar or one error naming the file, never a
//! panic; the error never quotes the file's values.
#![no_main]

use std::path::Path;

use eventhost_domain::StoreLimits;
use eventhost_runtime::parse_sidecar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse_sidecar(
        Path::new("plugin.wasm"),
        data.to_vec(),
        StoreLimits::default(),
    ) {
        let message = error.to_string();
        assert!(message.contains("plugin.toml"), "{message}");
    }
});
