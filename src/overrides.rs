//! Per-Deployment overrides through `deploy-watchdog.io/` annotations.
//!
//! Anyone who can annotate a Deployment can set these, so every value is checked, URLs must
//! name an allowed host (never a metadata service or an arbitrary address), and a bad value
//! makes that Deployment fall back to the daemon's config as a whole — with a Warning Event
//! naming the annotation — while every other Deployment is untouched.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use crate::cluster::record;
use crate::config::{
    AnnotationsConfig, Config, Delay, Mode, Period, RolloutSpan, SmokeCheck, UrlTemplate,
    VersionSource, fill,
};

pub const PREFIX: &str = "deploy-watchdog.io/";

/// Our own bookkeeping annotations (every one the daemon writes on a Deployment), and the
/// opt-in key should it be set as an annotation too: not overrides.
const OWN: [&str; 7] = [
    crate::gitops::owner::PAUSED,
    record::STATE_ANNOTATION,
    record::STATE_DIGEST_ANNOTATION,
    record::VERDICT_ANNOTATION,
    record::PAGE_DELIVERED_ANNOTATION,
    crate::status::live::LIVE_ANNOTATION,
    "deploy-watchdog.io/enabled",
];

/// Every override and what it sets.
pub const KNOWN: [(&str, &str); 18] = [
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
    ("pod-grace", "a duration, e.g. 2m"),
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

/// What a Deployment's annotations ask for, each value parsed and checked on its own: `None`
/// keeps the daemon's setting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overrides {
    pub mode: Option<Mode>,
    pub gitops: Option<crate::gitops::GitopsMode>,
    pub health_url: Option<UrlTemplate>,
    pub version_source: Option<VersionSource>,
    pub version_key: Option<String>,
    pub version_container: Option<String>,
    pub error_rate_threshold: Option<f64>,
    pub min_requests: Option<u64>,
    pub failures_before_rollback: Option<NonZeroU32>,
    pub window: Option<RolloutSpan>,
    pub interval: Option<Period>,
    pub rollout_timeout: Option<RolloutSpan>,
    pub pod_grace: Option<Delay>,
    pub prometheus_requests_query: Option<String>,
    pub prometheus_errors_query: Option<String>,
    pub datadog_requests_query: Option<String>,
    pub datadog_errors_query: Option<String>,
    pub smoke: Option<Vec<SmokeCheck>>,
}

/// The config for one Deployment: `base` with its annotations applied, or every problem found.
pub fn effective(
    base: &Config,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Config, Vec<BadAnnotation>> {
    if !base.annotations.enabled {
        return Ok(base.clone());
    }
    Overrides::read(&base.annotations, namespace, name, annotations)?.apply(base)
}

/// [`effective`], sharing `base` when the annotations change nothing: what a caller holding the
/// config of every opted-in Deployment at once keeps (most of them have no overrides).
pub fn effective_shared(
    base: &std::sync::Arc<Config>,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<std::sync::Arc<Config>, Vec<BadAnnotation>> {
    if !base.annotations.enabled {
        return Ok(base.clone());
    }
    let overrides = Overrides::read(&base.annotations, namespace, name, annotations)?;
    if overrides == Overrides::default() {
        return Ok(base.clone());
    }
    overrides.apply(base).map(std::sync::Arc::new)
}

impl Overrides {
    /// Reads every `deploy-watchdog.io/` override among `annotations`; each bad one is named.
    pub fn read(
        allowed: &AnnotationsConfig,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Overrides, Vec<BadAnnotation>> {
        let mut o = Overrides::default();
        let mut bad = Vec::new();
        for (key, value) in annotations {
            let Some(short) = key.strip_prefix(PREFIX) else {
                continue;
            };
            if OWN.contains(&key.as_str()) {
                continue;
            }
            if let Err(problem) = o.set(allowed, short, value.trim(), namespace, name) {
                bad.push(BadAnnotation {
                    annotation: key.clone(),
                    problem,
                });
            }
        }
        if bad.is_empty() { Ok(o) } else { Err(bad) }
    }

    /// Parses one override into its field.
    fn set(
        &mut self,
        allowed: &AnnotationsConfig,
        key: &str,
        value: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), String> {
        let text = |v: &str| -> Result<Option<String>, String> {
            if v.is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(Some(v.to_string()))
            }
        };
        match key {
            "mode" => {
                self.mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "dry_run" | "dry-run" | "dryrun" => Mode::DryRun,
                    _ => return Err(format!("{value:?} is not enforce or dry_run")),
                })
            }
            "gitops" => self.gitops = Some(crate::gitops::GitopsMode::parse(value)?),
            "health-url" => {
                allowed_url(allowed, value, namespace, name)?;
                self.health_url = Some(UrlTemplate::parse(value)?);
            }
            "version-source" => {
                self.version_source = Some(match value {
                    "prefer_image" | "prefer-image" => VersionSource::PreferImage,
                    "label" => VersionSource::Label,
                    "image" => VersionSource::Image,
                    "annotation" => VersionSource::Annotation,
                    _ => {
                        return Err(format!(
                            "{value:?} is not prefer_image, label, image or annotation"
                        ));
                    }
                })
            }
            "version-key" => self.version_key = text(value)?,
            // Empty: the container named like the Deployment, as in the config.
            "version-container" => {
                let label = value.len() <= 63
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !value.starts_with('-')
                    && !value.ends_with('-');
                if !label {
                    return Err(format!("{value:?} is not a container name"));
                }
                self.version_container = Some(value.to_string());
            }
            "error-rate-threshold" => {
                let t: f64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number"))?;
                if !(t > 0.0 && t < 1.0) {
                    return Err(format!(
                        "{value} is not a ratio between 0 and 1 (0.01 is 1 %)"
                    ));
                }
                self.error_rate_threshold = Some(t);
            }
            "min-requests" => {
                self.min_requests = Some(
                    value
                        .parse()
                        .map_err(|_| format!("{value:?} is not a whole number"))?,
                )
            }
            "failures-before-rollback" => {
                self.failures_before_rollback = Some(
                    value
                        .parse::<NonZeroU32>()
                        .map_err(|_| format!("{value:?} is not a whole number from 1"))?,
                )
            }
            // Each in its field's own type: an annotation may not ask for more than the config
            // file may.
            "window" => self.window = Some(RolloutSpan::parse(value)?),
            "interval" => self.interval = Some(Period::parse(value)?),
            "rollout-timeout" => self.rollout_timeout = Some(RolloutSpan::parse(value)?),
            "pod-grace" => self.pod_grace = Some(Delay::parse(value)?),
            "prometheus-requests-query" => self.prometheus_requests_query = text(value)?,
            "prometheus-errors-query" => self.prometheus_errors_query = text(value)?,
            "datadog-requests-query" => self.datadog_requests_query = text(value)?,
            "datadog-errors-query" => self.datadog_errors_query = text(value)?,
            "smoke" => {
                let checks: Vec<SmokeCheck> = serde_json::from_str(value)
                    .map_err(|e| format!("not a JSON list of smoke checks: {e}"))?;
                for check in &checks {
                    // The timeout is held to its bounds by its type, as the JSON is read.
                    allowed_url(allowed, &check.url, namespace, name)
                        .map_err(|e| format!("smoke check {:?}: {e}", check.name))?;
                }
                self.smoke = Some(checks);
            }
            _ => {
                let known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
                return Err(format!("unknown override (known: {})", known.join(", ")));
            }
        }
        Ok(())
    }

    /// `base` with these overrides, checked as a whole (an interval longer than the window is
    /// refused however it came about).
    pub fn apply(&self, base: &Config) -> Result<Config, Vec<BadAnnotation>> {
        let mut c = base.clone();
        let mut bad = Vec::new();
        let mut refuse = |key: &str, problem: &str| {
            bad.push(BadAnnotation {
                annotation: format!("{PREFIX}{key}"),
                problem: problem.into(),
            })
        };
        // A value given replaces the daemon's.
        fn given<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        given(&mut c.mode, &self.mode);
        given(&mut c.gitops.mode, &self.gitops);
        if let Some(url) = &self.health_url {
            c.health.url = url.clone();
            c.health.enabled = true;
        }
        given(&mut c.version.source, &self.version_source);
        given(&mut c.version.key, &self.version_key);
        given(&mut c.version.container, &self.version_container);
        given(
            &mut c.judge.error_rate_threshold,
            &self.error_rate_threshold,
        );
        given(&mut c.judge.min_requests, &self.min_requests);
        given(
            &mut c.judge.failures_before_rollback,
            &self.failures_before_rollback,
        );
        given(&mut c.watch.window, &self.window);
        given(&mut c.watch.interval, &self.interval);
        given(&mut c.watch.rollout_timeout, &self.rollout_timeout);
        given(&mut c.watch.pod_grace, &self.pod_grace);
        for (key, query, datadog, requests) in [
            (
                "prometheus-requests-query",
                &self.prometheus_requests_query,
                false,
                true,
            ),
            (
                "prometheus-errors-query",
                &self.prometheus_errors_query,
                false,
                false,
            ),
            (
                "datadog-requests-query",
                &self.datadog_requests_query,
                true,
                true,
            ),
            (
                "datadog-errors-query",
                &self.datadog_errors_query,
                true,
                false,
            ),
        ] {
            let Some(q) = query else { continue };
            let target = if datadog {
                c.providers.datadog.as_mut().map(|d| {
                    if requests {
                        &mut d.requests_query
                    } else {
                        &mut d.errors_query
                    }
                })
            } else {
                c.providers.prometheus.as_mut().map(|p| {
                    if requests {
                        &mut p.requests_query
                    } else {
                        &mut p.errors_query
                    }
                })
            };
            match target {
                Some(t) => *t = q.clone(),
                None if datadog => refuse(key, "the Datadog provider is not configured"),
                None => refuse(key, "the Prometheus provider is not configured"),
            }
        }
        given(&mut c.smoke, &self.smoke);
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
mod tests;
