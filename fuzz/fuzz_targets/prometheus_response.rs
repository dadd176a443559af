//! The Prometheus query-response parser: any status and body give a result, never a panic.
#![no_main]

use deploy_watchdog::probes::prometheus::{self, QueryResult};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 600, rest),
        _ => (200, data),
    };
    let requests = prometheus::parse(status, body);
    // Whatever a value is, combining it with another answer must not panic either.
    let _ = prometheus::combine(requests.clone(), QueryResult::Empty);
    let _ = prometheus::combine(QueryResult::Value(100.0), requests);
});
