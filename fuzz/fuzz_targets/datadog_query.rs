//! The Datadog metric-query parser of the simulated Datadog API (no Datadog provider yet).
#![no_main]

use deploy_watchdog::sim::services::datadog_query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = datadog_query::parse(text);
    }
});
