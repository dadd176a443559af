//! See `deploy_watchdog::fuzzing::health_body`: any input returns, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| deploy_watchdog::fuzzing::health_body(data));
