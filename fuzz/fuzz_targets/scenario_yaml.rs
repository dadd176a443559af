//! The scenario parser: any text is a scenario or an error naming a field, never a panic.
#![no_main]

use deploy_watchdog::sim::scenario::Scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = Scenario::parse(text, "fuzz.yaml") {
            let _ = s.behaviours();
            let _ = s.script_end();
        }
    }
});
