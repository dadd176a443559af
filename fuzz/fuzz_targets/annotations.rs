//! Annotation overrides: any map of annotations gives a config or a list of bad annotations.
#![no_main]

use std::collections::BTreeMap;

use deploy_watchdog::config::{Config, PrometheusConfig};
use deploy_watchdog::overrides::{self, KNOWN, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, Vec<(u8, String, String)>)| {
    let (with_prometheus, pairs) = input;
    let mut base = Config::default();
    if with_prometheus {
        base.providers.prometheus = Some(PrometheusConfig::default());
    }
    // Mostly known keys (random ones rarely carry the prefix), some arbitrary ones.
    let map: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(pick, key, value)| {
            let key = match KNOWN.get(usize::from(pick) % (KNOWN.len() + 2)) {
                Some((k, _)) => format!("{PREFIX}{k}"),
                None if pick % 2 == 0 => format!("{PREFIX}{key}"),
                None => key,
            };
            (key, value)
        })
        .collect();
    if let Ok(c) = overrides::effective(&base, "prod", "app", &map) {
        let _ = deploy_watchdog::judge::Policy::from_config(&c);
    }
});
