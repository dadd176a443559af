//! What types cannot check: ranges, relations between fields, URL templates.

use std::time::Duration;

use super::providers::{grouped_ok, site_ok};
use super::{Config, ConfigError, VersionSource, fill};

impl Config {
    /// Checks what types cannot: ranges, relations between fields, URL templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| ConfigError::Invalid {
            field: field.into(),
            problem,
        };
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(bad(field, "must be longer than 0s".into()))
            } else {
                Ok(())
            }
        };
        positive("watch.window", self.watch.window)?;
        positive("watch.interval", self.watch.interval)?;
        positive("watch.rollout_timeout", self.watch.rollout_timeout)?;
        positive("watch.pending_timeout", self.watch.pending_timeout)?;
        positive("judge.sample_window", self.judge.sample_window)?;
        positive("health.timeout", self.health.timeout)?;
        if self.watch.interval > self.watch.window {
            return Err(bad(
                "watch.interval",
                format!(
                    "{} is longer than watch.window ({}): the window would see no sample",
                    humantime::format_duration(self.watch.interval),
                    humantime::format_duration(self.watch.window)
                ),
            ));
        }
        let t = self.judge.error_rate_threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(bad(
                "judge.error_rate_threshold",
                format!("{t} is not a ratio between 0 and 1 (0.01 is 1 %)"),
            ));
        }
        if !(self.judge.baseline.factor.is_finite() && self.judge.baseline.factor >= 1.0) {
            return Err(bad(
                "judge.baseline.factor",
                format!("{} must be 1.0 or more", self.judge.baseline.factor),
            ));
        }
        if self.judge.baseline.enabled {
            positive("judge.baseline.lookback", self.judge.baseline.lookback)?;
        }
        labels_selector_ok(&self.watch.selector).map_err(|p| bad("watch.selector", p))?;
        for (i, ns) in self.watch.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return Err(bad(
                    &format!("watch.namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        if self.cluster_name.trim().is_empty() {
            return Err(bad("cluster_name", "must not be empty".into()));
        }
        if self.health.enabled {
            url_template_ok(&self.health.url).map_err(|p| bad("health.url", p))?;
            status_ok(self.health.expect_status).map_err(|p| bad("health.expect_status", p))?;
            for (field, pointer) in [
                ("health.version_pointer", &self.health.version_pointer),
                ("health.checks_pointer", &self.health.checks_pointer),
            ] {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(bad(
                        field,
                        format!("{pointer:?} is not a JSON pointer (it starts with /)"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.smoke.iter().enumerate() {
            let field = |f: &str| format!("smoke[{i}].{f}");
            if s.name.trim().is_empty() {
                return Err(bad(&field("name"), "must not be empty".into()));
            }
            if !names.insert(&s.name) {
                return Err(bad(&field("name"), format!("{:?} is used twice", s.name)));
            }
            url_template_ok(&s.url).map_err(|p| bad(&field("url"), p))?;
            status_ok(s.expect_status).map_err(|p| bad(&field("expect_status"), p))?;
            if http::Method::from_bytes(s.method.as_bytes()).is_err() {
                return Err(bad(
                    &field("method"),
                    format!("{:?} is not an HTTP method", s.method),
                ));
            }
            positive(&field("timeout"), s.timeout)?;
        }
        if let Some(p) = &self.providers.prometheus {
            url_template_ok(&p.url).map_err(|e| bad("providers.prometheus.url", e))?;
            positive("providers.prometheus.timeout", p.timeout)?;
            positive("providers.prometheus.scrape_interval", p.scrape_interval)?;
            for (field, q) in [
                ("providers.prometheus.requests_query", &p.requests_query),
                ("providers.prometheus.errors_query", &p.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if p.grouped.enabled {
                grouped_ok(
                    "providers.prometheus.grouped",
                    [&p.grouped.requests_query, &p.grouped.errors_query],
                    &[
                        ("namespace_label", &p.grouped.namespace_label),
                        ("deployment_label", &p.grouped.deployment_label),
                    ],
                )?;
            }
        }
        if let Some(d) = &self.providers.datadog {
            site_ok(&d.site).map_err(|e| bad("providers.datadog.site", e))?;
            if let Some(url) = &d.url {
                url_template_ok(url).map_err(|e| bad("providers.datadog.url", e))?;
            }
            positive("providers.datadog.timeout", d.timeout)?;
            let segment = |s: &str| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && !s.ends_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            };
            if !segment(&d.operation) {
                return Err(bad(
                    "providers.datadog.operation",
                    format!(
                        "{:?} is not an APM operation name (e.g. http.request, web.request)",
                        d.operation
                    ),
                ));
            }
            if let Some(env) = &d.env
                && (env.trim().is_empty() || env.contains([',', '{', '}', ' ']))
            {
                return Err(bad(
                    "providers.datadog.env",
                    format!("{env:?} is not a Datadog tag value"),
                ));
            }
            let service = fill(&d.service, "namespace", "name", &[]);
            if service.trim().is_empty()
                || service.contains([',', '{', '}', ' ', '(', ')', '"', '!'])
            {
                return Err(bad(
                    "providers.datadog.service",
                    format!(
                        "{:?} does not make a Datadog tag value of a Deployment's {{name}} and {{namespace}}",
                        d.service
                    ),
                ));
            }
            for (field, q) in [
                ("providers.datadog.requests_query", &d.requests_query),
                ("providers.datadog.errors_query", &d.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if d.grouped.enabled {
                // An empty namespace tag tells the series apart by the name tag alone.
                grouped_ok(
                    "providers.datadog.grouped",
                    [&d.grouped.requests_query, &d.grouped.errors_query],
                    &[("name_tag", &d.grouped.name_tag)],
                )?;
            }
        }
        let le = &self.leader_election;
        if le.enabled {
            positive("leader_election.retry_period", le.retry_period)?;
            if le.renew_deadline >= le.lease_duration {
                return Err(bad(
                    "leader_election.renew_deadline",
                    "must be shorter than lease_duration: a leader must stop before another may start".into(),
                ));
            }
            if le.retry_period >= le.renew_deadline {
                return Err(bad(
                    "leader_election.retry_period",
                    "must be shorter than renew_deadline".into(),
                ));
            }
        }
        crate::peak::PeakHours::from_config(&self.peak_hours).map_err(|(f, p)| bad(&f, p))?;
        if self.version.key.trim().is_empty() && self.version.source != VersionSource::Image {
            return Err(bad("version.key", "must name a label or annotation".into()));
        }
        crate::notify::pagerduty::endpoint(&self.notify.pagerduty.url)
            .map_err(|p| bad("notify.pagerduty.url", p))?;
        Ok(())
    }
}

fn url_template_ok(template: &str) -> Result<(), String> {
    let sample = fill(template, "namespace", "name", &[]);
    let url = url::Url::parse(&sample).map_err(|e| format!("{template:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "{template:?}: scheme {other:?} is not http or https"
        )),
    }
}

fn status_ok(status: u16) -> Result<(), String> {
    if (100..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("{status} is not an HTTP status"))
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn labels_selector_ok(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("must not be empty: an empty selector would opt in every Deployment".into());
    }
    for term in selector.split(',') {
        let term = term.trim();
        let key = term.split(['=', '!', ' ']).next().unwrap_or_default();
        if key.is_empty() {
            return Err(format!("{term:?} is not a label selector term"));
        }
    }
    Ok(())
}
