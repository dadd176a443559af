//! Per-Deployment overrides through `deploy-watchdog.io/` annotations.
//!
//! Anyone who can annotate a Deployment can set these, so every value is checked, URLs must
//! name an allowed host (never a metadata service or an arbitrary address), and a bad value
//! makes that Deployment fall back to the daemon's config as a whole — with a Warning Event
//! naming the annotation — while every other Deployment is untouched.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::cluster::record;
use crate::config::{AnnotationsConfig, Config, Mode, SmokeCheck, VersionSource, fill};

pub const PREFIX: &str = "deploy-watchdog.io/";

/// Our own bookkeeping annotations (every one the daemon writes on a Deployment), and the
/// opt-in key should it be set as an annotation too: not overrides.
const OWN: [&str; 6] = [
    crate::gitops::owner::PAUSED,
    record::STATE_ANNOTATION,
    record::STATE_DIGEST_ANNOTATION,
    record::VERDICT_ANNOTATION,
    record::PAGE_DELIVERED_ANNOTATION,
    "deploy-watchdog.io/enabled",
];

/// Every override and what it sets.
pub const KNOWN: [(&str, &str); 17] = [
    ("mode", "enforce or dry_run"),
    ("gitops", "pause, page_only or off"),
    ("health-url", "the health endpoint URL"),
    ("version-source", "prefer_image, label, image or annotation"),
    ("version-key", "the label or annotation holding the version"),
    (
        "version-container",
        "the container whose image is the version",
    ),
    ("error-rate-threshold", "a ratio, e.g. 0.02"),
    ("min-requests", "a whole number"),
    ("failures-before-rollback", "a whole number from 1"),
    ("window", "a duration, e.g. 30m"),
    ("interval", "a duration, e.g. 10s"),
    ("rollout-timeout", "a duration, e.g. 15m"),
    ("prometheus-requests-query", "a PromQL query"),
    ("prometheus-errors-query", "a PromQL query"),
    ("datadog-requests-query", "a Datadog metrics query"),
    ("datadog-errors-query", "a Datadog metrics query"),
    ("smoke", "a JSON list of smoke checks"),
];

/// One annotation that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct BadAnnotation {
    pub annotation: String,
    pub problem: String,
}

impl std::fmt::Display for BadAnnotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "annotation {}: {}", self.annotation, self.problem)
    }
}

/// The config for one Deployment: `base` with its annotations applied, or every problem found.
pub fn effective(
    base: &Config,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Config, Vec<BadAnnotation>> {
    let mut c = base.clone();
    if !base.annotations.enabled {
        return Ok(c);
    }
    let mut bad = Vec::new();
    for (key, value) in annotations {
        let Some(short) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if OWN.contains(&key.as_str()) {
            continue;
        }
        let value = value.trim();
        if let Err(problem) = apply(&mut c, short, value, namespace, name) {
            bad.push(BadAnnotation {
                annotation: key.clone(),
                problem,
            });
        }
    }
    if bad.is_empty()
        && let Err(e) = c.validate()
    {
        bad.push(BadAnnotation {
            annotation: format!("{PREFIX}*"),
            problem: e.to_string(),
        });
    }
    if bad.is_empty() { Ok(c) } else { Err(bad) }
}

fn apply(
    c: &mut Config,
    key: &str,
    value: &str,
    namespace: &str,
    name: &str,
) -> Result<(), String> {
    let duration = |v: &str| -> Result<Duration, String> {
        humantime::parse_duration(v).map_err(|_| format!("{v:?} is not a duration like 30m"))
    };
    match key {
        "mode" => {
            c.mode = match value {
                "enforce" => Mode::Enforce,
                "dry_run" | "dry-run" | "dryrun" => Mode::DryRun,
                _ => return Err(format!("{value:?} is not enforce or dry_run")),
            }
        }
        "gitops" => c.gitops.mode = crate::gitops::GitopsMode::parse(value)?,
        "health-url" => {
            allowed_url(&c.annotations, value, namespace, name)?;
            c.health.url = value.to_string();
            c.health.enabled = true;
        }
        "version-source" => {
            c.version.source = match value {
                "prefer_image" | "prefer-image" => VersionSource::PreferImage,
                "label" => VersionSource::Label,
                "image" => VersionSource::Image,
                "annotation" => VersionSource::Annotation,
                _ => {
                    return Err(format!(
                        "{value:?} is not prefer_image, label, image or annotation"
                    ));
                }
            }
        }
        "version-key" => c.version.key = value.to_string(),
        "version-container" => c.version.container = value.to_string(),
        "error-rate-threshold" => {
            let t: f64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))?;
            if !(t > 0.0 && t < 1.0) {
                return Err(format!(
                    "{value} is not a ratio between 0 and 1 (0.01 is 1 %)"
                ));
            }
            c.judge.error_rate_threshold = t;
        }
        "min-requests" => {
            c.judge.min_requests = value
                .parse()
                .map_err(|_| format!("{value:?} is not a whole number"))?
        }
        "failures-before-rollback" => {
            c.judge.failures_before_rollback = value
                .parse::<NonZeroU32>()
                .map_err(|_| format!("{value:?} is not a whole number from 1"))?
        }
        "window" => c.watch.window = duration(value)?,
        "interval" => c.watch.interval = duration(value)?,
        "rollout-timeout" => c.watch.rollout_timeout = duration(value)?,
        "prometheus-requests-query" | "prometheus-errors-query" => {
            let Some(p) = c.providers.prometheus.as_mut() else {
                return Err("the Prometheus provider is not configured".into());
            };
            if value.is_empty() {
                return Err("must not be empty".into());
            }
            if key == "prometheus-requests-query" {
                p.requests_query = value.to_string();
            } else {
                p.errors_query = value.to_string();
            }
        }
        "datadog-requests-query" | "datadog-errors-query" => {
            let Some(d) = c.providers.datadog.as_mut() else {
                return Err("the Datadog provider is not configured".into());
            };
            if value.is_empty() {
                return Err("must not be empty".into());
            }
            if key == "datadog-requests-query" {
                d.requests_query = value.to_string();
            } else {
                d.errors_query = value.to_string();
            }
        }
        "smoke" => {
            let checks: Vec<SmokeCheck> = serde_json::from_str(value)
                .map_err(|e| format!("not a JSON list of smoke checks: {e}"))?;
            for check in &checks {
                allowed_url(&c.annotations, &check.url, namespace, name)
                    .map_err(|e| format!("smoke check {:?}: {e}", check.name))?;
            }
            c.smoke = checks;
        }
        _ => {
            let known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
            return Err(format!("unknown override (known: {})", known.join(", ")));
        }
    }
    Ok(())
}

/// Refuses URLs whose host is not allowed: a Deployment's annotations must not make the
/// watchdog fetch `http://169.254.169.254/` or any other host.
pub fn allowed_url(
    cfg: &AnnotationsConfig,
    template: &str,
    namespace: &str,
    name: &str,
) -> Result<(), String> {
    let url = url::Url::parse(&fill(template, namespace, name, &[]))
        .map_err(|e| format!("{template:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL with credentials is not allowed".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the URL has no host".into()),
    };
    let listed = cfg
        .allowed_hosts
        .iter()
        .any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => pattern.eq_ignore_ascii_case(&host),
        });
    let service_name = matches!(url.host(), Some(url::Host::Domain(_)))
        && !host.contains('.')
        && !["localhost", "metadata"].contains(&host.as_str());
    if listed || service_name {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not allowed (allowed: a Service name, {}; see annotations.allowed_hosts)",
            cfg.allowed_hosts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PrometheusConfig;

    fn base() -> Config {
        let mut c = Config::default();
        c.providers.prometheus = Some(PrometheusConfig::default());
        c
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_to_one_deployment() {
        let a = annotations(&[
            ("mode", "dry_run"),
            ("error-rate-threshold", "0.05"),
            ("window", "30m"),
            ("min-requests", "100"),
            ("health-url", "http://{name}.{namespace}.svc:8080/healthz"),
            (
                "smoke",
                r#"[{"name":"status","url":"http://api.payments.svc/v1/status"}]"#,
            ),
        ]);
        let c = effective(&base(), "payments", "api", &a).expect("valid");
        assert_eq!(c.mode, Mode::DryRun);
        assert_eq!(c.judge.error_rate_threshold, 0.05);
        assert_eq!(c.watch.window, Duration::from_secs(1800));
        assert_eq!(c.judge.min_requests, 100);
        assert_eq!(c.smoke.len(), 1);
        assert_eq!(c.smoke[0].expect_status, 200);
    }

    #[test]
    fn datadog_queries_are_overridable_only_when_datadog_is_configured() {
        let a = annotations(&[(
            "datadog-errors-query",
            "sum:trace.web.request.errors{service:{name}}.as_count()",
        )]);
        let bad = effective(&base(), "ns", "app", &a).expect_err("no Datadog");
        assert!(
            bad[0]
                .problem
                .contains("Datadog provider is not configured")
        );
        let mut with = base();
        with.providers.datadog = Some(crate::config::DatadogConfig::default());
        let c = effective(&with, "ns", "app", &a).expect("valid");
        let d = c.providers.datadog.expect("configured");
        assert_eq!(
            d.errors_query,
            "sum:trace.web.request.errors{service:{name}}.as_count()"
        );
        assert_eq!(
            d.requests_query,
            crate::config::DatadogConfig::default().requests_query
        );
    }

    #[test]
    fn our_own_annotations_and_foreign_ones_are_not_overrides() {
        // As a Deployment reads after a paged rollback: its next rollout keeps its overrides.
        let mut a = annotations(&[
            ("state", "{}"),
            ("verdict", "rolled_back: crashloop"),
            ("page-delivered", "3"),
            ("error-rate-threshold", "0.05"),
        ]);
        a.insert("team".into(), "payments".into());
        let mut expected = base();
        expected.judge.error_rate_threshold = 0.05;
        assert_eq!(effective(&base(), "ns", "app", &a), Ok(expected));
    }

    #[test]
    fn every_bad_value_is_named() {
        let a = annotations(&[
            ("error-rate-threshold", "5%"),
            ("window", "forever"),
            ("mode", "yolo"),
            ("failures-before-rollback", "0"),
            ("treshold", "0.1"),
        ]);
        let bad = effective(&base(), "ns", "app", &a).expect_err("bad");
        let named: Vec<&str> = bad.iter().map(|b| b.annotation.as_str()).collect();
        assert_eq!(
            named,
            [
                "deploy-watchdog.io/error-rate-threshold",
                "deploy-watchdog.io/failures-before-rollback",
                "deploy-watchdog.io/mode",
                "deploy-watchdog.io/treshold",
                "deploy-watchdog.io/window",
            ]
        );
        assert!(bad[3].problem.contains("unknown override"));
    }

    #[test]
    fn urls_must_name_an_allowed_host() {
        let cfg = AnnotationsConfig::default();
        for ok in [
            "http://app.production.svc/health",
            "http://app.production.svc.cluster.local:8080/health",
            "http://{name}/health",
            "https://{name}.{namespace}.svc/health",
        ] {
            assert_eq!(allowed_url(&cfg, ok, "production", "app"), Ok(()), "{ok}");
        }
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://metadata/computeMetadata/v1/",
            "http://localhost:9464/metrics",
            "http://127.0.0.1/",
            "http://evil.example.com/health",
            "http://app.production.svc.evil.com/",
            "file:///etc/passwd",
            "http://user:pw@app.production.svc/",
        ] {
            assert!(
                allowed_url(&cfg, refused, "production", "app").is_err(),
                "{refused} should be refused"
            );
        }
        let listed = AnnotationsConfig {
            allowed_hosts: vec!["127.0.0.1".into()],
            ..cfg
        };
        assert_eq!(
            allowed_url(&listed, "http://127.0.0.1:8080/x", "ns", "n"),
            Ok(())
        );
    }

    #[test]
    fn a_refused_url_falls_back_to_the_defaults() {
        let a = annotations(&[("health-url", "http://169.254.169.254/latest/meta-data/iam")]);
        let bad = effective(&base(), "ns", "app", &a).expect_err("refused");
        assert_eq!(bad[0].annotation, "deploy-watchdog.io/health-url");
        assert!(bad[0].problem.contains("169.254.169.254"));
    }
}
