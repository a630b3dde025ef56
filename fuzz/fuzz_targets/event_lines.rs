//! `eventhost append --file` and the harness's fixtures: JSONL event lines, then the rules
//! of an append for each. Any input ends in lines or one error, never a panic; what is
//! accepted is within the store's limits.
#![no_main]

use eventhost_domain::StoreLimits;
use eventhost_domain::append::prepare;
use eventhost_domain::input::read_event_lines;
use eventhost_fuzz::holds_nul;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(lines) = read_event_lines(data) else {
        return;
    };
    let limits = StoreLimits::default();
    for line in &lines {
        let event = line.new_event();
        if let Ok(prepared) = prepare(&line.stream(), std::slice::from_ref(&event), limits) {
            for event in prepared {
                assert!(event.payload.len() <= limits.max_payload_bytes);
                let payload: serde_json::Value =
                    serde_json::from_str(&event.payload).expect("payload JSON");
                assert!(!holds_nul(&payload));
                assert!(event.event_type.len() <= limits.max_name_bytes);
            }
        }
    }
});
