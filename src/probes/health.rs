//! The runbook's `curl /health`: 200, the expected JSON, the version, every check `ok`.

use crate::config::HealthConfig;
use crate::judge::HealthSample;

/// Asks the health endpoint once.
pub async fn probe(client: &reqwest::Client, cfg: &HealthConfig, url: &str) -> HealthSample {
    let response = match client.get(url).timeout(cfg.timeout.get()).send().await {
        Ok(r) => r,
        Err(e) => return HealthSample::Failed(super::describe(&e)),
    };
    let status = response.status().as_u16();
    if status != cfg.expect_status {
        return HealthSample::Failed(format!("HTTP {status}, expected {}", cfg.expect_status));
    }
    let body = match tokio::time::timeout(
        cfg.timeout.get(),
        super::read_bounded(response, super::MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return HealthSample::Failed(e),
        Err(_) => return HealthSample::Failed("body not received in time".into()),
    };
    parse(cfg, &body)
}

/// Reads a health body: pure, so the fuzzers and tests can drive it.
pub fn parse(cfg: &HealthConfig, body: &[u8]) -> HealthSample {
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return HealthSample::Failed("body is not JSON".into()),
    };
    let version = if cfg.version_pointer.is_empty() {
        None
    } else {
        match json.pointer(&cfg.version_pointer) {
            Some(serde_json::Value::String(v)) => Some(v.clone()),
            Some(_) => {
                return HealthSample::Failed(format!("{} is not a string", cfg.version_pointer));
            }
            None => return HealthSample::Failed(format!("no version at {}", cfg.version_pointer)),
        }
    };
    let mut failing_checks = Vec::new();
    if !cfg.checks_pointer.is_empty() {
        match json.pointer(&cfg.checks_pointer) {
            Some(serde_json::Value::Object(checks)) => {
                for (name, value) in checks {
                    let shown = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if shown != cfg.ok_value {
                        failing_checks.push((name.clone(), shown));
                    }
                }
            }
            Some(_) => {
                return HealthSample::Failed(format!(
                    "{} is not a map of checks",
                    cfg.checks_pointer
                ));
            }
            None => return HealthSample::Failed(format!("no checks at {}", cfg.checks_pointer)),
        }
    }
    HealthSample::Answered {
        version,
        failing_checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runbook_body_is_read() {
        let cfg = HealthConfig::default();
        let body =
            br#"{"status":"healthy","version":"v1.2.3","checks":{"database":"ok","cache":"ok"}}"#;
        assert_eq!(
            parse(&cfg, body),
            HealthSample::Answered {
                version: Some("v1.2.3".into()),
                failing_checks: vec![]
            }
        );
        let body = br#"{"version":"v1.2.3","checks":{"database":"timeout","cache":"ok"}}"#;
        assert_eq!(
            parse(&cfg, body),
            HealthSample::Answered {
                version: Some("v1.2.3".into()),
                failing_checks: vec![("database".into(), "timeout".into())]
            }
        );
    }

    #[test]
    fn bodies_that_are_not_the_expected_json_fail() {
        let cfg = HealthConfig::default();
        for body in [
            &b"OK"[..],
            b"{}",
            br#"{"version":3,"checks":{}}"#,
            br#"{"version":"v1","checks":[]}"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse(&cfg, body), HealthSample::Failed(_)),
                "{body:?}"
            );
        }
    }
}
