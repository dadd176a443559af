//! The health body parser: any bytes give a sample, never a panic.
#![no_main]

use deploy_watchdog::config::HealthConfig;
use deploy_watchdog::probes::health;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cfg = HealthConfig::default();
    // The first byte picks the pointers, so odd pointer configurations are covered too.
    let (pick, body) = data.split_first().map_or((0, data), |(p, b)| (*p, b));
    if pick & 1 == 1 {
        cfg.version_pointer = String::new();
    }
    if pick & 2 == 2 {
        cfg.checks_pointer = "/a/0/checks".into();
    }
    let _ = health::parse(&cfg, body);
});
