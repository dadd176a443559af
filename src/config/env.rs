//! `DEPLOY_WATCHDOG__SECTION__FIELD` environment overrides, laid over the file's YAML before it
//! is read, so the file is parsed once and every value is checked by the same code.

use serde_norway::{Mapping, Value};

use super::{Config, ConfigError, DatadogConfig, PrometheusConfig};

/// The prefix and separator of the overrides: `DEPLOY_WATCHDOG__WATCH__WINDOW` is `watch.window`.
const PREFIX: &str = "DEPLOY_WATCHDOG__";
const SEPARATOR: &str = "__";
/// Fields given as a comma-separated list.
const LISTS: [&str; 2] = ["watch.namespaces", "annotations.allowed_hosts"];

/// Lays every `DEPLOY_WATCHDOG__…` pair of `vars` over `file`. A value is read as the field's
/// default is typed: text for text fields (an identity of `1234` stays text), YAML for numbers
/// and booleans, comma-separated for lists.
pub(super) fn overlay(
    file: &mut Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let shape = shape()?;
    for (key, raw) in vars {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split(SEPARATOR).map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Load(format!(
                "environment variable {key}: not of the form {PREFIX}SECTION{SEPARATOR}FIELD"
            )));
        }
        let dotted = path.join(".");
        let value = if LISTS.contains(&dotted.as_str()) {
            Value::Sequence(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            )
        } else {
            match lookup(&shape, &path) {
                Some(Value::String(_)) | Some(Value::Sequence(_)) | Some(Value::Mapping(_)) => {
                    Value::String(raw)
                }
                // Booleans, numbers and fields with no default (`null`): as YAML reads them.
                _ => match serde_norway::from_str::<Value>(&raw) {
                    Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
                    _ => Value::String(raw),
                },
            }
        };
        set(file, &path, value).map_err(|()| {
            ConfigError::Load(format!(
                "environment variable {key}: {dotted} is inside a value that is not a map"
            ))
        })?;
    }
    Ok(())
}

/// Every field with its default, the optional sections filled in: the types the overrides take.
fn shape() -> Result<Value, ConfigError> {
    let mut c = Config::default();
    c.providers.prometheus = Some(PrometheusConfig::default());
    c.providers.datadog = Some(DatadogConfig::default());
    serde_norway::to_value(&c).map_err(|e| ConfigError::Load(e.to_string()))
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_mapping()?.get(key.as_str()))
}

fn set(value: &mut Value, path: &[String], new: Value) -> Result<(), ()> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut here = value;
    for key in parents {
        if here.is_null() {
            *here = Value::Mapping(Mapping::new());
        }
        let map = here.as_mapping_mut().ok_or(())?;
        here = map
            .entry(Value::String(key.clone()))
            .or_insert(Value::Mapping(Mapping::new()));
    }
    if here.is_null() {
        *here = Value::Mapping(Mapping::new());
    }
    here.as_mapping_mut()
        .ok_or(())?
        .insert(Value::String(last.clone()), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_text(yaml, vars)
    }

    #[test]
    fn environment_overrides_take_each_fields_type() {
        let c = load(
            "watch: {window: 10m}\n",
            &[
                ("DEPLOY_WATCHDOG__WATCH__WINDOW", "30m"),
                ("DEPLOY_WATCHDOG__WATCH__NAMESPACES", "prod, payments"),
                ("DEPLOY_WATCHDOG__JUDGE__ERROR_RATE_THRESHOLD", "0.02"),
                ("DEPLOY_WATCHDOG__JUDGE__MIN_REQUESTS", "50"),
                ("DEPLOY_WATCHDOG__NOTIFY__ALLOW_SILENT", "true"),
                ("DEPLOY_WATCHDOG__LEADER_ELECTION__IDENTITY", "1234"),
                ("DEPLOY_WATCHDOG__SERVER__LISTEN", "127.0.0.1:0"),
                (
                    "DEPLOY_WATCHDOG__PROVIDERS__PROMETHEUS__URL",
                    "http://prom:9090",
                ),
                ("DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY", "not an override"),
                ("OTHER", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(c.watch.window, Duration::from_secs(1800));
        assert_eq!(c.watch.namespaces, ["prod", "payments"]);
        assert_eq!(c.judge.error_rate_threshold, 0.02);
        assert_eq!(c.judge.min_requests, 50);
        assert!(c.notify.allow_silent);
        assert_eq!(c.leader_election.identity, "1234");
        assert_eq!(c.server.listen.port(), 0);
        let p = c.providers.prometheus.expect("named by the environment");
        assert_eq!(p.url.as_str(), "http://prom:9090");
    }

    #[test]
    fn an_override_may_repair_the_file_and_a_bad_one_is_named() {
        let repaired = load(
            "judge: {error_rate_threshold: 5}\n",
            &[("DEPLOY_WATCHDOG__JUDGE__ERROR_RATE_THRESHOLD", "0.05")],
        )
        .expect("the environment wins");
        assert_eq!(repaired.judge.error_rate_threshold, 0.05);
        for (key, value, field) in [
            (
                "DEPLOY_WATCHDOG__WATCH__ROLLOUT_TIMEOUT",
                "500000000000y",
                "watch.rollout_timeout",
            ),
            (
                "DEPLOY_WATCHDOG__JUDGE__MIN_REQUESTS",
                "lots",
                "judge.min_requests",
            ),
            ("DEPLOY_WATCHDOG__WATCH__WINDW", "5m", "watch"),
            ("DEPLOY_WATCHDOG__MODE__X", "1", "mode"),
        ] {
            let err = load("", &[(key, value)]).expect_err(key).to_string();
            assert!(
                err.contains(field),
                "{key}={value}: {err:?} should name {field}"
            );
        }
    }
}
