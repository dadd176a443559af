//! Entry points for fuzzing: every parser that reads input from outside the process, driven by
//! arbitrary bytes. The cargo-fuzz targets in `fuzz/` and the quick fuzz smoke in the test suite
//! (`tests/fuzz_smoke.rs`) call exactly these. Each must return for any input, never panic.

use std::collections::BTreeMap;

use crate::config::{Config, HealthConfig, PrometheusConfig};
use crate::overrides::{self, KNOWN, PREFIX};
use crate::probes::{datadog, health, prometheus};

/// The health body parser; the first byte picks odd pointer configurations.
pub fn health_body(data: &[u8]) {
    let mut cfg = HealthConfig::default();
    let (pick, body) = data.split_first().map_or((0, data), |(p, b)| (*p, b));
    if pick & 1 == 1 {
        cfg.version_pointer = String::new();
    }
    if pick & 2 == 2 {
        cfg.checks_pointer = "/a/0/checks".into();
    }
    let _ = health::parse(&cfg, body);
}

/// A Prometheus query answer; two bytes of HTTP status, then the body.
pub fn prometheus_response(data: &[u8]) {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 600, rest),
        _ => (200, data),
    };
    let requests = prometheus::parse(status, body);
    // Whatever a value is, combining it with another answer must not panic either.
    let _ = prometheus::combine(requests.clone(), prometheus::QueryResult::Empty);
    let _ = prometheus::combine(prometheus::QueryResult::Value(100.0), requests);
}

/// A Datadog timeseries answer; two bytes of HTTP status, one of formula count, then the body.
pub fn datadog_response(data: &[u8]) {
    let (status, formulas, body) = match data {
        [a, b, f, rest @ ..] => (
            u16::from_le_bytes([*a, *b]) % 600,
            usize::from(*f % 4),
            rest,
        ),
        _ => (200, 2, data),
    };
    let _ = datadog::parse(status, body, formulas);
}

/// A query of the simulated Datadog API (scenarios and users write these).
#[cfg(feature = "sim")]
pub fn datadog_query(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::sim::services::datadog_query::parse(text);
    }
}

/// The config file; a config that loads must also build a judge policy.
pub fn config_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = Config::from_yaml(text)
    {
        let _ = crate::judge::Policy::from_config(&config);
    }
}

/// A scenario file.
#[cfg(feature = "sim")]
pub fn scenario_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(s) = crate::sim::scenario::Scenario::parse(text, "fuzz.yaml")
    {
        let _ = s.behaviours();
        let _ = s.script_end();
    }
}

/// A Deployment's annotations: lines of `<pick byte><key>=<value>`; the pick byte mostly
/// chooses a known override, so values are what gets exercised.
pub fn annotations(data: &[u8]) {
    let (flags, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    let mut base = Config::default();
    if flags & 1 == 1 {
        base.providers.prometheus = Some(PrometheusConfig::default());
    }
    let text = String::from_utf8_lossy(rest);
    let map: BTreeMap<String, String> = text
        .split('\n')
        .filter_map(|line| {
            let mut chars = line.chars();
            let pick = chars.next()? as usize;
            let (key, value) = chars
                .as_str()
                .split_once('=')
                .unwrap_or((chars.as_str(), ""));
            let key = match KNOWN.get(pick % (KNOWN.len() + 2)) {
                Some((k, _)) => format!("{PREFIX}{k}"),
                None if pick.is_multiple_of(2) => format!("{PREFIX}{key}"),
                None => key.to_string(),
            };
            Some((key, value.to_string()))
        })
        .collect();
    if let Ok(c) = overrides::effective(&base, "prod", "app", &map) {
        let _ = crate::judge::Policy::from_config(&c);
    }
}

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target by name, for the runners (the simulation's parsers only when it is built).
pub const TARGETS: &[(&str, Target)] = &[
    ("health_body", health_body),
    ("prometheus_response", prometheus_response),
    ("datadog_response", datadog_response),
    #[cfg(feature = "sim")]
    ("datadog_query", datadog_query),
    ("config_yaml", config_yaml),
    #[cfg(feature = "sim")]
    ("scenario_yaml", scenario_yaml),
    ("annotations", annotations),
];
